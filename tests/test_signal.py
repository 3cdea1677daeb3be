"""``qtrain signal`` against the loopback fake exchange: every component present (through one 429
and one timeout), each one missing in turn, offline, no promoted version."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.trading.ensemble import COMPONENTS
from producer.cli import cli
from tests.evaluation_support import heuristic_version, insert_version
from tests.fake_exchange import FakeKucoin, serve
from tests.sql import execute
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.pipeline import promotion
from worker.settings import Settings

STEP = 3600
N = 320
T0 = (int(time.time()) // STEP - N) * STEP  # the newest candle closes within the hour: a live market
ALL_WEIGHTS = "technical=0.35,orderbook=0.30,flow=0.25,qlearning=0.10,llm=0.10"


@pytest.fixture
def exchange() -> Iterator[FakeKucoin]:
    fake = FakeKucoin(closed_only=True, stall_s=2.5)
    fake.add_series("BTC-USDT", start=T0, count=N, seed=4)
    fake.now = float(T0 + N * STEP)  # every candle closed (the wall clock is within the next hour)
    with serve(fake):
        yield fake


def _settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, models_dir=str(tmp_path / "models"))


def _store(url: str, fake: FakeKucoin, *, keep: int | None = None) -> None:
    until = None if keep is None else T0 + keep * STEP
    fetch_symbol(make_exchange("kucoin", api_url=fake.url), url, "BTC-USDT", "1h", since=T0, until=until)


def _signal(url: str, fake: FakeKucoin, monkeypatch: pytest.MonkeyPatch, *extra: str, code: int = 0) -> Any:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("QTRAIN_EXCHANGE_API_URL", fake.url)
    monkeypatch.setenv("QTRAIN_MARKET_TIMEOUT_S", "1")
    r = CliRunner().invoke(cli, ["signal", "--symbols", "BTC-USDT", "--json", *extra])
    assert r.exit_code == code, (r.output, r.exception)
    return json.loads(r.stdout)[0] if code == 0 else r


@pytest.fixture
def trained(database_url: str, exchange: FakeKucoin, tmp_path: Path) -> int:
    """A version made by the real path (heuristic analyses with rules, reducer), promoted."""
    settings = _settings(database_url, tmp_path)
    _store(database_url, exchange, keep=N - 24)  # the newest day arrives with the signal's fetch
    summary = heuristic_version(settings, "BTC-USDT", epochs=1)
    version = int(summary["version"])
    promotion.set_promoted(settings, "BTC-USDT", version, by="test")
    return version


def test_every_component_present_through_a_429_and_a_timeout(
    database_url: str, exchange: FakeKucoin, trained: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange.market_429 = 1  # the order-book request is refused once
    exchange.market_stall = 0
    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS)
    assert out["retries"] == 1
    assert out["version"] == trained and out["missing"] == []
    assert all(out["components"][c]["score"] is not None for c in COMPONENTS), out["components"]
    assert sum(out["components"][c]["weight"] for c in COMPONENTS) == pytest.approx(1.0)
    assert out["candle_ts"] == T0 + (N - 1) * STEP  # the fetch brought the newest closed candle
    assert out["n_rules"] > 0 and out["book_levels"] == 20 and out["n_trades"] == 50
    assert out["action"] in ("HOLD", "BUY", "SELL") and 0.0 <= out["confidence"] <= 1.0
    assert "flow from trades" in out["notes"]
    # the same decision through a timeout of the next market request (1 s limit, 2.5 s stall)
    exchange.market_stall = 1
    again = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS)
    assert again["retries"] == 1 and again["missing"] == []
    assert again["components"]["orderbook"]["score"] == out["components"]["orderbook"]["score"]
    assert (again["action"], again["score"]) == (out["action"], out["score"])


def test_missing_order_book_and_trades_are_left_out_and_said(
    database_url: str, exchange: FakeKucoin, trained: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange.book = "empty"
    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS)
    assert out["missing"] == ["orderbook"] and out["components"]["orderbook"]["weight"] == 0.0
    assert any("orderbook: empty order book" in n for n in out["notes"])
    assert sum(out["components"][c]["weight"] for c in COMPONENTS) == pytest.approx(1.0)

    exchange.book, exchange.trades = "normal", "error"
    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS)
    assert out["missing"] == [] and "flow from clv_proxy" in out["notes"]  # the candles' flow instead
    assert any(n.startswith("flow: trades") for n in out["notes"])

    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS, "--offline")
    assert out["missing"] == ["orderbook"] and out["offline"] is True
    assert any(n.startswith("offline:") for n in out["notes"])


def _hand_made(url: str, space: StateSpace, tmp_path: Path) -> int:
    learner = FastQLearning(space.n_states, seed=0)
    learner.q[...] = np.random.default_rng(0).normal(size=learner.q.shape)
    learner.visits[...] = 1
    v = insert_version(
        url,
        "BTC-USDT",
        learner,
        space,
        train_since=T0,
        train_until=T0 + 10 * STEP,
        holdout_until=T0 + 20 * STEP,
    )
    promotion.set_promoted(_settings(url, tmp_path), "BTC-USDT", v, by="test")
    return v


def test_llm_qlearning_and_technical_missing(
    database_url: str, exchange: FakeKucoin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A version without analyses (no rules): the LLM component is left out and the note says why.
    _store(database_url, exchange, keep=22)
    _hand_made(database_url, StateSpace(("ret_24",), (np.array([0.0]),)), tmp_path)
    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS, "--offline")
    # 22 candles: RSI and Bollinger exist (technical), a 24-candle return does not (no market state)
    assert set(out["missing"]) == {"orderbook", "qlearning", "llm"}
    assert (
        out["components"]["technical"]["score"] is not None and out["components"]["flow"]["score"] is not None
    )
    assert any("no analysed windows" in n for n in out["notes"])

    # 10 candles: no indicator yet (technical missing); flow alone decides
    execute(database_url, f"DELETE FROM btc.candles WHERE ts >= to_timestamp({int(T0 + 10 * STEP)})")
    out = _signal(database_url, exchange, monkeypatch, "--weights", ALL_WEIGHTS, "--offline")
    assert set(out["missing"]) == {"technical", "orderbook", "qlearning", "llm"}
    assert out["components"]["flow"]["weight"] == pytest.approx(1.0)


def test_no_promoted_version_is_one_line_exit_2(
    database_url: str, exchange: FakeKucoin, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store(database_url, exchange)
    r = _signal(database_url, exchange, monkeypatch, code=2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no promoted Q-table version" in lines[0], r.stderr
    r = _signal(database_url, exchange, monkeypatch, "--weights", "gamma=1", code=2)
    assert "QTRAIN_WEIGHTS / --weights" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreachable_exchange_uses_stored_candles_and_says_so(
    database_url: str, exchange: FakeKucoin, trained: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QTRAIN_EXCHANGE_API_URL", "http://127.0.0.1:9")  # nothing listens
    r = CliRunner().invoke(cli, ["signal", "--symbols", "BTC-USDT", "--json", "--weights", ALL_WEIGHTS])
    assert r.exit_code == 0, (r.output, r.exception)
    out = json.loads(r.stdout)[0]
    assert out["missing"] == ["orderbook"] and out["candle_ts"] == T0 + (N - 25) * STEP  # the stored newest
    assert any(n.startswith("candle fetch failed") for n in out["notes"])
    assert "exchange unreachable: no order book or trades" in out["notes"]
