"""``qtrain llm check``: the pure metrics, the check over a mocked OpenAI-compatible server, the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.analyst.llm_check import (
    NO_ANSWER,
    chance_agreement,
    direction_hit,
    guess_rate,
    mirror_candles,
    mirror_flip,
    mode_share,
    regime_agreement,
    verdict,
)
from model.market.synthetic import make_candles
from worker.clients.openai import OpenAIClient
from worker.evaluation.llm_check import CheckRequest, pick_windows, run_check
from worker.settings import Settings
from worker.store import db
from worker.store.candles import insert_candles

# -- pure metrics ---------------------------------------------------------------------------------


def test_mode_share_counts_answered_windows_only() -> None:
    assert mode_share([BUY, BUY, BUY, BUY]).to_json() == {"value": 1.0, "n": 4}
    assert mode_share([BUY, SELL, HOLD, BUY, NO_ANSWER]).to_json() == {"value": 0.5, "n": 4}
    assert mode_share([NO_ANSWER]).value is None
    with pytest.raises(ValueError, match="actions"):
        mode_share([3])


def test_regime_agreement_ignores_range_answers_and_flat_windows() -> None:
    r = regime_agreement(["bull", "bear", "range", "bull", "bear"], [0.02, 0.01, 0.05, -0.01, 0.0])
    # bull/+ right, bear/+ wrong, bull/- wrong; the range answer and the flat window are not counted
    assert (r.value, r.n) == (pytest.approx(1 / 3), 3)
    assert regime_agreement(["range"], [0.1]).value is None


def test_mirror_flip_and_direction_hit() -> None:
    assert mirror_flip([BUY, SELL, BUY, HOLD], [SELL, BUY, BUY, SELL]).to_json() == {"value": 0.667, "n": 3}
    assert mirror_flip([BUY, BUY], [BUY, BUY]).value == 0.0  # a constant answer never flips
    assert mirror_flip([BUY], [NO_ANSWER]).n == 0
    hit = direction_hit([BUY, SELL, HOLD, BUY, NO_ANSWER], [0.01, 0.02, 0.03, -0.01, 0.01])
    assert (hit.value, hit.n) == (pytest.approx(1 / 3), 3)


def test_guess_rate_is_case_blind_and_skips_missing_guesses() -> None:
    r = guess_rate(["btc", "ETH", None, "BTC"], ["BTC", "BTC", "BTC", "BTC"])
    assert (r.value, r.n) == (pytest.approx(2 / 3), 3)


def test_chance_is_what_the_same_guesses_score_ignoring_the_window() -> None:
    truths = ["BTC", "BTC", "ETH", "ETH"]
    assert chance_agreement(["BTC"] * 4, truths) == 0.5  # a prior, not memory
    assert chance_agreement(["BTC", "BTC", "ETH", "ETH"], truths) == 0.5  # right every time, chance 0.5
    assert chance_agreement(["eth", None, None, None], truths) == 0.0  # one guess, for a BTC window
    assert chance_agreement([None] * 4, truths) is None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), price=st.floats(0.01, 60_000.0), at=st.integers(0, 99))
def test_a_mirrored_window_has_every_return_negated(seed: int, price: float, at: int) -> None:
    c = make_candles(100, seed=seed, price=price)
    pivot = float(c.close[at])
    m = mirror_candles(c, pivot)
    assert np.allclose(np.diff(np.log(m.close)), -np.diff(np.log(c.close)))
    assert m.close[at] == pytest.approx(pivot)
    assert np.all(m.high >= np.maximum(m.open, m.close) * (1 - 1e-12))
    assert np.all(m.low <= np.minimum(m.open, m.close) * (1 + 1e-12))
    back = mirror_candles(m, pivot)
    assert np.allclose(back.close, c.close) and np.allclose(back.high, c.high)
    with pytest.raises(ValueError, match="pivot"):
        mirror_candles(c, 0.0)


def _report(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "validity": {"answers": 10, "parsed": 10, "repaired": 0, "failed": 0, "reasons": {}},
        "tokens": {"prompt_median": 900.0, "answer_median": 120.0, "seconds_median": 9.0},
        "sensitivity": {
            "mode_share": {"value": 0.5, "n": 10},
            "mode_action": "BUY",
            "regime_agreement": {"value": 0.7, "n": 8},
            "mirror_flip": {"value": 0.6, "n": 9},
        },
        "memory": {
            "asset": {"value": 0.1, "n": 10, "chance": 0.125},
            "year": {"value": 0.1, "n": 10, "chance": 0.125},
            "next24_named": {"value": 0.5, "n": 8},
            "next24_anonymous": {"value": 0.5, "n": 8},
            "names_gap": 0.0,
        },
    }
    for path, value in over.items():
        key, sub = path.split("__")
        r[key][sub] = value
    return r


def test_the_verdict_names_the_most_serious_finding() -> None:
    assert verdict(_report()).startswith("usable: 10 of 10 answers valid, they depend on the window")
    assert "9.0 s a window" in verdict(_report())
    failing = verdict(_report(validity__failed=4, validity__reasons={"AnswerCut": 4}))
    assert failing.startswith("not usable: 4 of 10 answers failed (mostly AnswerCut)")
    constant = verdict(
        _report(
            sensitivity__mode_share={"value": 1.0, "n": 10}, sensitivity__mirror_flip={"value": 0.0, "n": 10}
        )
    )
    assert constant.startswith("answers ignore the window (100% BUY, a mirrored window flips 0%)")
    remembers = verdict(_report(memory__year={"value": 0.6, "n": 10, "chance": 0.125}, memory__names_gap=0.3))
    assert "names the year from an anonymous window (60% vs chance 12%)" in remembers
    assert "never train with QTRAIN_PROMPT=named" in remembers


# -- the check against a mocked server -------------------------------------------------------------

_RETURN = re.compile(r"return (-?\d+(?:\.\d+)?)%")


def _reader(body: dict[str, Any]) -> dict[str, Any]:
    """A model that reads the window: BUY/bull on a rising window, SELL/bear on a falling one."""
    user = body["messages"][-1]["content"]
    if "Guess which asset" in body["messages"][0]["content"]:
        return {"asset": "BTC", "year": 2019}
    up = float(_RETURN.search(user).group(1)) > 0  # type: ignore[union-attr]
    return {
        "regime": "bull" if up else "bear",
        "action": "BUY" if up else "SELL",
        "confidence": 0.6,
        "rules": [],
        "summary": "reads the window",
    }


def _constant(body: dict[str, Any]) -> dict[str, Any]:
    return {"regime": "bull", "action": "BUY", "confidence": 0.2, "rules": [], "summary": "always"}


def _client(answer: Callable[[dict[str, Any]], Any], seen: list[dict[str, Any]]) -> OpenAIClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        body = json.loads(request.content)
        seen.append(body)
        text = answer(body)
        content = text if isinstance(text, str) else json.dumps(text)
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 800, "completion_tokens": 60},
            },
        )

    transport = httpx.MockTransport(handler)
    return OpenAIClient(
        ("http://llm/v1",), "m", client=httpx.Client(transport=transport), max_retries=0, sleep=lambda _: None
    )


@pytest.fixture
def stored(database_url: str) -> str:
    """BTC-USDT and ETH-USDT, 600 synthetic hourly candles each, at their own price levels."""
    with db.transaction(database_url) as cur:
        for symbol, price, seed in (("BTC-USDT", 9000.0, 1), ("ETH-USDT", 250.0, 2)):
            c = make_candles(600, seed=seed, price=price, symbol=symbol)
            insert_candles(cur, symbol, "1h", c.ts, c.open, c.high, c.low, c.close, c.volume)
    return database_url


def test_windows_are_spread_over_each_symbols_range_and_skip_gaps(stored: str) -> None:
    from model.features import WARMUP

    with db.transaction(stored) as cur:  # a gap of 10 hours in the middle of BTC-USDT
        gap = make_candles(600, seed=1).ts[[300, 310]].tolist()
        cur.execute(
            "DELETE FROM btc.candles WHERE symbol = 'BTC-USDT'"
            " AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)",
            gap,
        )
    picked = pick_windows(Settings(database_url=stored), CheckRequest(windows=5))
    assert [p.symbol for p in picked] == ["BTC-USDT"] * 3 + ["ETH-USDT"] * 2
    starts = [int(p.ctx.ts[0]) for p in picked[:3]]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert starts[-1] - starts[0] > 300 * 3600  # spread: first and last far apart
    for p in picked:
        assert len(p.ctx) == WARMUP + 48 + 24 and set(np.diff(p.ctx.ts).tolist()) == {3600}


def test_a_model_that_reads_the_window(stored: str) -> None:
    seen: list[dict[str, Any]] = []
    r = run_check(Settings(database_url=stored), CheckRequest(windows=6), _client(_reader, seen))
    assert len(seen) == 6 * 4  # analysis, mirrored, other style, memory question
    assert r["validity"] == {"answers": 6, "parsed": 6, "repaired": 0, "failed": 0, "reasons": {}}
    assert r["tokens"]["prompt_median"] == 800 and r["tokens"]["answer_median"] == 60
    assert r["sensitivity"]["regime_agreement"]["value"] == 1.0
    assert r["sensitivity"]["mirror_flip"] == {"value": 1.0, "n": 6}
    # Always "BTC" is right for the 3 BTC windows of 6: as often as a guess that ignores the window.
    assert r["memory"]["asset"] == {"value": 0.5, "n": 6, "chance": 0.5, "options": 8, "most_guessed": "BTC"}
    assert r["memory"]["names_gap"] == 0.0  # it reads the numbers, not the names
    assert r["prompt"] == "anonymous" and not any("BTC-USDT" in b["messages"][1]["content"] for b in seen[:2])
    # the named call of each BTC window:
    assert sum("BTC-USDT" in b["messages"][1]["content"] for b in seen) == 3
    assert r["verdict"].startswith("usable: 6 of 6")


def test_a_constant_model_and_a_broken_one(stored: str) -> None:
    s = Settings(database_url=stored)
    r = run_check(s, CheckRequest(windows=4), _client(_constant, []))
    assert r["sensitivity"]["mode_share"] == {"value": 1.0, "n": 4}
    assert r["sensitivity"]["mode_action"] == "BUY"
    assert r["sensitivity"]["mirror_flip"]["value"] == 0.0
    assert r["verdict"].startswith("answers ignore the window (100% BUY")
    broken = run_check(s, CheckRequest(windows=2), _client(lambda b: "no idea", []))
    assert broken["validity"]["failed"] == 2 and broken["validity"]["reasons"] == {"unreadable answer": 2}
    assert broken["tokens"]["seconds_median"] is not None and broken["verdict"].startswith("not usable")


def test_reason_first_sends_the_reasoned_schema_and_asks_for_it(stored: str) -> None:
    from model.analyst.answer import REASONED_SCHEMA

    seen: list[dict[str, Any]] = []

    def reasoned(body: dict[str, Any]) -> dict[str, Any]:
        return {"reasoning": "it fell", **_reader(body)}

    req = CheckRequest(windows=2, reason_first=True)
    r = run_check(Settings(database_url=stored), req, _client(reasoned, seen))
    analysis_calls = [b for b in seen if "Guess which asset" not in b["messages"][0]["content"]]
    assert len(analysis_calls) == 6
    for body in analysis_calls:
        assert '"reasoning"' in body["messages"][0]["content"]
        assert body["response_format"]["json_schema"]["schema"] == REASONED_SCHEMA
    assert r["reason_first"] is True and r["validity"]["parsed"] == 2  # the reasoning is no repair


def test_bad_requests_are_one_line(database_url: str, stored: str) -> None:
    from worker.errors import BadInput

    with pytest.raises(BadInput, match="--windows"):
        pick_windows(Settings(database_url=stored), CheckRequest(windows=0))
    with pytest.raises(BadInput, match="no 4h candles stored"):
        pick_windows(Settings(database_url=stored), CheckRequest(timeframe="4h"))


# -- the command ------------------------------------------------------------------------------------


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "QTRAIN_LLM_API": "openai", "QTRAIN_LLM_MODEL": "qwen2.5-coder:7b", **extra}


def test_the_command_prints_its_json_keys(stored: str) -> None:
    from producer.cli import cli
    from tests.fake_ollama import FakeOllama

    with FakeOllama(flavor="llama-cpp-python") as fake:
        res = CliRunner().invoke(
            cli,
            ["llm", "check", "--windows", "2", "--symbols", "ETH-USDT", "--reason-first", "--json"],
            env=_env(stored, OPENAI_BASE_URL=fake.openai_url),
        )
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert {"validity", "tokens", "sensitivity", "memory", "verdict"} <= set(r)
    assert r["symbols"] == ["ETH-USDT"] and r["windows"] == 2 and r["validity"]["answers"] == 2
    assert r["reason_first"] is True and r["prompt"] == "anonymous"
    assert set(r["sensitivity"]) == {"mode_share", "mode_action", "regime_agreement", "mirror_flip"}
    assert {"asset", "year", "next24_named", "next24_anonymous", "names_gap"} <= set(r["memory"])
    assert isinstance(r["verdict"], str) and r["verdict"]


@pytest.mark.parametrize("case", ["no candles", "no server"])
def test_the_command_fails_in_one_line(database_url: str, stored: str, case: str) -> None:
    from producer.cli import cli

    url = database_url if case == "no candles" else stored
    args = ["llm", "check", "--symbols", "SOL-USDT"] if case == "no candles" else ["llm", "check"]
    env = _env(url, OPENAI_BASE_URL="http://127.0.0.1:9/v1", OLLAMA_TIMEOUT="2")
    res = CliRunner().invoke(cli, args, env=env)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qtrain: error: "), res.output
    assert ("SOL-USDT" in lines[0]) if case == "no candles" else ("127.0.0.1:9" in lines[0])
