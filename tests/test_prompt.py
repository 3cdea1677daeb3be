"""The prompt: deterministic, compact, complete; the content hash and cache key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.features import FEATURES, compute_features
from model.prompt import (
    FEATURE_INFO,
    PROMPT_VERSION,
    build_messages,
    cache_key,
    window_content_hash,
)
from model.synthetic import make_candles

WINDOW = 48


def _window(seed: int = 1, start: int = 200):
    candles = make_candles(400, seed=seed)
    feats = compute_features(candles)
    w = candles.slice(start, start + WINDOW)
    fw = {k: v[start : start + WINDOW] for k, v in feats.items()}
    return w, fw


def test_messages_deterministic_and_compact() -> None:
    w, fw = _window()
    m1 = build_messages(w, fw, symbol="BTC-USDT", timeframe="1h")
    m2 = build_messages(w, {k: v.copy() for k, v in fw.items()}, symbol="BTC-USDT", timeframe="1h")
    assert m1 == m2
    assert [m["role"] for m in m1] == ["system", "user"]
    total = sum(len(m["content"]) for m in m1)
    assert total < 4000, total
    user = m1[1]["content"]
    assert "BTC-USDT" in user and "48 candles" in user
    # A summary, not a dump: far fewer lines than candles, every feature once.
    assert len(user.splitlines()) < 20
    for name in FEATURES:
        assert f"- {name}:" in user
        assert f"- {name}:" in m1[0]["content"]


def test_messages_change_with_the_data() -> None:
    w, fw = _window()
    w2, fw2 = _window(start=201)
    a = build_messages(w, fw, symbol="BTC-USDT", timeframe="1h")
    b = build_messages(w2, fw2, symbol="BTC-USDT", timeframe="1h")
    assert a[0] == b[0] and a[1] != b[1]


def test_nan_features_render_as_na() -> None:
    w, fw = _window(start=0)  # warm-up: ema_gap is NaN for the first 49 candles
    user = build_messages(w, fw, symbol="ETH-USDT", timeframe="1h")[1]["content"]
    assert "- ema_gap: na" in user
    assert "nan" not in user.lower().replace("na\n", "")


def test_feature_info_covers_features() -> None:
    assert set(FEATURE_INFO) == set(FEATURES)


def test_bad_arguments() -> None:
    w, fw = _window()
    with pytest.raises(ValueError, match="rsi"):
        build_messages(w, {**fw, "rsi": fw["rsi"][:-1]}, symbol="BTC-USDT", timeframe="1h")
    with pytest.raises(ValueError, match="candles_window"):
        build_messages(w.slice(0, 1), {}, symbol="BTC-USDT", timeframe="1h")
    with pytest.raises(ValueError, match="symbol"):
        build_messages(w, fw, symbol="", timeframe="1h")


def test_content_hash() -> None:
    w, _ = _window()
    h = window_content_hash(w, symbol="BTC-USDT", timeframe="1h")
    assert len(h) == 64 and h == window_content_hash(w, symbol="BTC-USDT", timeframe="1h")
    # Same numbers in a different array type/layout hash the same.
    as_lists = dataclasses.replace(w, close=np.array(w.close.tolist()), ts=w.ts.astype(np.int32))
    assert window_content_hash(as_lists, symbol="BTC-USDT", timeframe="1h") == h
    assert window_content_hash(w, symbol="ETH-USDT", timeframe="1h") != h
    assert window_content_hash(w, symbol="BTC-USDT", timeframe="4h") != h
    for col in ("open", "high", "low", "close", "volume"):
        arr = getattr(w, col).copy()
        arr[17] = np.nextafter(arr[17], np.inf)  # one ulp
        changed = dataclasses.replace(w, **{col: arr})
        assert window_content_hash(changed, symbol="BTC-USDT", timeframe="1h") != h, col
    ts = w.ts.copy()
    ts[0] -= 1
    assert window_content_hash(dataclasses.replace(w, ts=ts), symbol="BTC-USDT", timeframe="1h") != h


def test_cache_key() -> None:
    k = cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION)
    assert len(k) == 64 and k == cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION)
    assert k != cache_key("abd", "qwen2.5-coder:7b", PROMPT_VERSION)
    assert k != cache_key("abc", "llama3:8b", PROMPT_VERSION)
    assert k != cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION + 1)
    with pytest.raises(ValueError):
        cache_key("", "m", 1)


def test_the_instructions_come_first_and_ask_for_the_answer_budget() -> None:
    """The system message (fixed, so servers reuse its cached prefix) states the bounds the schema sets."""
    from model.answer import ANSWER_SCHEMA, ASKED_RATIONALE_CHARS, ASKED_RULES, ASKED_SUMMARY_CHARS

    w, fw = _window()
    w2, fw2 = _window(seed=5, start=300)
    a = build_messages(w, fw, symbol="BTC-USDT", timeframe="1h")
    b = build_messages(w2, fw2, symbol="ETH-USDT", timeframe="4h")
    assert a[0] == b[0] and a[0]["role"] == "system" and "BTC-USDT" not in a[0]["content"]
    system = a[0]["content"]
    assert f"at most {ASKED_RULES} trading rules" in system
    assert (
        f"at most {ASKED_RATIONALE_CHARS} characters" in system and f"at most {ASKED_SUMMARY_CHARS}" in system
    )
    rules = ANSWER_SCHEMA["properties"]["rules"]
    assert rules["maxItems"] == ASKED_RULES
    assert rules["items"]["properties"]["rationale"]["maxLength"] == ASKED_RATIONALE_CHARS
    assert ANSWER_SCHEMA["properties"]["summary"]["maxLength"] == ASKED_SUMMARY_CHARS
