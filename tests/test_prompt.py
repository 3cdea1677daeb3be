"""The prompt: deterministic, compact, complete, anonymous by default; the content hash and cache key."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.analyst.prompt import (
    FEATURE_INFO,
    NAMED_PROMPT_VERSION,
    PROMPT_STYLES,
    PROMPT_VERSION,
    build_messages,
    cache_key,
    prompt_version,
    window_content_hash,
)
from model.candles import Candles
from model.features import FEATURES, WARMUP, compute_features
from model.market.synthetic import make_candles

WINDOW = 48


def _window(seed: int = 1, start: int = 200):
    candles = make_candles(400, seed=seed)
    feats = compute_features(candles)
    w = candles.slice(start, start + WINDOW)
    fw = {k: v[start : start + WINDOW] for k, v in feats.items()}
    return w, fw


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_messages_deterministic_and_compact(style: str) -> None:
    w, fw = _window()
    m1 = build_messages(w, fw, symbol="BTC-USDT", timeframe="1h", style=style)
    copied = {k: v.copy() for k, v in fw.items()}
    m2 = build_messages(w, copied, symbol="BTC-USDT", timeframe="1h", style=style)
    assert m1 == m2
    assert [m["role"] for m in m1] == ["system", "user"]
    total = sum(len(m["content"]) for m in m1)
    assert total < 4000, total
    user = m1[1]["content"]
    assert ("BTC-USDT" in user) == (style == "named") and "48 candles" in user
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
    k = cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION, "anonymous")
    assert len(k) == 64 and k == cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION, "anonymous")
    assert k != cache_key("abd", "qwen2.5-coder:7b", PROMPT_VERSION, "anonymous")
    assert k != cache_key("abc", "llama3:8b", PROMPT_VERSION, "anonymous")
    assert k != cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION + 1, "anonymous")
    # An analysis made under one style is never reused for the other, even at the same version.
    assert k != cache_key("abc", "qwen2.5-coder:7b", PROMPT_VERSION, "named")
    with pytest.raises(ValueError):
        cache_key("", "m", 1, "anonymous")
    with pytest.raises(ValueError, match="style"):
        cache_key("abc", "m", 1, "Named")


def test_the_styles_and_their_versions() -> None:
    """Anonymous is the default and the new version; named keeps the v3 text (for comparison)."""
    assert (prompt_version("anonymous"), prompt_version("named")) == (PROMPT_VERSION, NAMED_PROMPT_VERSION)
    assert PROMPT_VERSION == 4 and NAMED_PROMPT_VERSION == 3
    w, fw = _window()
    assert build_messages(w, fw, symbol="BTC-USDT", timeframe="1h") == build_messages(
        w, fw, symbol="BTC-USDT", timeframe="1h", style="anonymous"
    )
    named = build_messages(w, fw, symbol="BTC-USDT", timeframe="1h", style="named")[1]["content"]
    assert named.splitlines()[0] == "BTC-USDT 1h, 48 candles, 2024-01-09 08:00 .. 2024-01-11 07:00 UTC"
    with pytest.raises(ValueError, match="style"):
        build_messages(w, fw, symbol="BTC-USDT", timeframe="1h", style="plain")


def test_the_settings_know_the_same_styles() -> None:
    from worker.errors import BadInput
    from worker.settings import DEFAULT_PROMPT_STYLE, Settings
    from worker.settings import PROMPT_STYLES as SETTING_STYLES

    assert SETTING_STYLES == PROMPT_STYLES and DEFAULT_PROMPT_STYLE == "anonymous"
    assert Settings.from_env({}).prompt_style == "anonymous"
    assert Settings.from_env({"QTRAIN_PROMPT": " Named "}).prompt_style == "named"
    with pytest.raises(BadInput, match="QTRAIN_PROMPT"):
        Settings.from_env({"QTRAIN_PROMPT": "secret"})


def test_the_anonymous_prompt_is_the_same_at_any_price_level() -> None:
    """Every price number is relative to the window's first close: scaling the prices (by a power
    of two, exact in binary floating point) leaves the whole prompt unchanged."""
    candles = make_candles(400, seed=3, price=1234.5678)
    scaled = dataclasses.replace(
        candles, **{c: getattr(candles, c) * 1024.0 for c in ("open", "high", "low", "close")}
    )
    a = _anonymous(candles, 200, "ETH-USDT")
    b = _anonymous(scaled, 200, "ETH-USDT")
    assert a == b
    assert a[1]["content"].splitlines()[1].startswith("close index (first close = 100): last ")


def _anonymous(candles: Candles, start: int, symbol: str) -> list[dict[str, str]]:
    feats = compute_features(candles)
    w = candles.slice(start, start + WINDOW)
    fw = {k: v[start : start + WINDOW] for k, v in feats.items()}
    return build_messages(w, fw, symbol=symbol, timeframe="1h")


_SYMBOLS = ("BTC-USDT", "ETH-USDT", "BNB-USDT", "SOL-USDT", "XRP-EUR", "ADA-BTC", "DOGE-USDC", "LTC-ETH")
_NAMES = ("bitcoin", "ethereum", "binance", "solana", "ripple", "cardano", "dogecoin", "litecoin", "tether")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DATE_TIME = re.compile(
    r"\d{4}-\d{1,2}|\d{1,2}-\d{1,2}-\d{2,4}|\d{1,2}/\d{1,2}(?:/\d{2,4})?|\d{1,2}:\d{2}|\bUTC\b|\bGMT\b"
)
_PRICE_FORMATS = (".0f", ".1f", ".2f", ".3f", ".4f", ".6f", ".8f", ".4g", ".5g", ".6g", ".7g", ".8g", "r")


def _significant(token: str) -> int:
    digits = token.lstrip("-").replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." not in token else len(digits)


def _price_tokens(candles: Candles) -> set[str]:
    """Every open/high/low/close of ``candles`` as text at the usual precisions that identify a
    price: at least 5 significant digits, or a whole number of 4 digits or more (``9235``)."""
    out: set[str] = set()
    for col in ("open", "high", "low", "close"):
        for v in np.asarray(getattr(candles, col), dtype=np.float64).tolist():
            for f in _PRICE_FORMATS:
                text = repr(v) if f == "r" else format(v, f)
                whole = f == ".0f" and abs(v) >= 1000
                if _significant(text) >= 5 or whole:
                    out.add(text)
    return out


@settings(max_examples=120, deadline=None)
@given(
    symbol=st.sampled_from(_SYMBOLS),
    log10_price=st.floats(min_value=-2.0, max_value=np.log10(60_000.0), allow_nan=False),
    start_day=st.integers(min_value=0, max_value=(2030 - 2010) * 365),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    vol=st.sampled_from([0.002, 0.01, 0.03]),
    n=st.sampled_from([24, 48, 96]),
    timeframe=st.sampled_from(["1h", "4h", "1d"]),
)
def test_no_anonymous_prompt_names_the_asset_the_calendar_or_a_price(
    symbol: str, log10_price: float, start_day: int, seed: int, vol: float, n: int, timeframe: str
) -> None:
    """Over random windows of several symbols, price levels (0.01 .. 60,000) and start dates
    (2010 .. 2030): no symbol (base or quote, any case), no asset name, no 4-digit year, no date or
    time, no open/high/low/close of the window at any usual precision, in system + user messages."""
    step = {"1h": 3600, "4h": 14400, "1d": 86400}[timeframe]
    start = 1262304000 + start_day * 86400  # 2010-01-01 + days
    candles = make_candles(
        WARMUP + n,
        seed=seed,
        start=start,
        step=step,
        price=10.0**log10_price,
        vol=vol,
        symbol=symbol,
        timeframe=timeframe,
    )
    feats = compute_features(candles)
    w = candles.slice(WARMUP, WARMUP + n)
    fw = {k: v[WARMUP:] for k, v in feats.items()}
    messages = build_messages(w, fw, symbol=symbol, timeframe=timeframe)
    text = "\n".join(m["content"] for m in messages)
    base, quote = symbol.split("-")
    for word in (base, quote, base + quote, symbol, *_NAMES):
        assert not re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE), word
    assert not re.search(r"(?<![\d.])(19|20)\d\d(?![\d])", text), "a 4-digit year"
    assert not _DATE_TIME.search(text), _DATE_TIME.search(text)
    tokens = set(_NUMBER.findall(text))
    leaked = tokens & _price_tokens(w)
    assert not leaked, leaked
    # The instructions come first and are byte-identical whatever the window.
    assert messages[0] == build_messages(*_window()[0:2], symbol="BTC-USDT", timeframe="1h")[0]


def test_the_checks_of_the_property_test_catch_the_named_prompt() -> None:
    """The same checks flag the named prompt (symbol, year, date, prices): they can fail."""
    candles = make_candles(WARMUP + WINDOW, seed=9, price=9234.5678, start=1584000000)  # 2020-03-12
    feats = compute_features(candles)
    w = candles.slice(WARMUP, WARMUP + WINDOW)
    named = build_messages(
        w, {k: v[WARMUP:] for k, v in feats.items()}, symbol="BTC-USDT", timeframe="1h", style="named"
    )
    text = "\n".join(m["content"] for m in named)
    assert re.search(r"\bbtc\b", text, re.IGNORECASE)
    assert re.search(r"(?<![\d.])(19|20)\d\d(?![\d])", text) and _DATE_TIME.search(text)
    assert set(_NUMBER.findall(text)) & _price_tokens(w)


def test_the_instructions_come_first_and_ask_for_the_answer_budget() -> None:
    """The system message (fixed, so servers reuse its cached prefix) states the bounds the schema sets."""
    from model.analyst.answer import ANSWER_SCHEMA, ASKED_RATIONALE_CHARS, ASKED_RULES, ASKED_SUMMARY_CHARS

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
