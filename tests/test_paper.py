"""Paper trading (issue 11): fill arithmetic, the tick's idempotence and catch-up, hot reload of a
promotion, and the parity of ``paper replay`` with ``backtest --json --trades`` on the shared BTC
candles (trade for trade)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from model.candles import Candles
from model.evaluation.backtest import run_backtest
from model.evaluation.policies import positions_from_actions
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.trading.live import Book, fill_at_open, next_position
from producer.backtest_cmd import policy_fills
from producer.cli import cli
from tests.conftest import shared_csv
from tests.evaluation_support import insert_version
from tests.fake_exchange import FakeKucoin, serve
from tests.sql import query
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.pipeline import promotion
from worker.settings import Settings
from worker.trading import paper
from worker.trading.agent import AgentSettings

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
STEP = 3600


# ----------------------------------------------------------------------------- pure fills


@settings(max_examples=60, deadline=None)
@given(
    actions=st.lists(st.sampled_from([0, 1, 2]), min_size=2, max_size=80),
    fee=st.sampled_from([0.0, 0.001, 0.0075]),
    seed=st.integers(0, 1000),
)
def test_fills_equal_the_backtest_engine(actions: list[int], fee: float, seed: int) -> None:
    """Stepping fills candle by candle gives the trades and final equity of ``run_backtest``."""
    n = len(actions)
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0, 0.001, n))
    c = Candles(
        T0 + STEP * np.arange(n),
        open_,
        np.maximum(open_, close) * 1.01,
        np.minimum(open_, close) * 0.99,
        close,
        np.ones(n),
    )
    pos = positions_from_actions(np.array(actions))
    book, fills, equity = Book(cash=10_000.0), [], 10_000.0
    for t in range(n):
        book, fill = fill_at_open(book, ts=int(c.ts[t]), price=float(c.open[t]), fee=fee)
        if fill:
            fills.append(fill.to_json())
        book = Book(book.cash, book.qty, book.held, next_position(book.held, actions[t]))
        assert book.target == pos[t]
        equity = book.equity(float(c.close[t]))
    bt = run_backtest(c, pos, fee=fee)
    expected = policy_fills(bt, fee=fee)
    assert [(f["side"], f["ts"], f["price"]) for f in fills] == [
        (f["side"], f["ts"], f["price"]) for f in expected
    ]
    for got, want in zip(fills, expected, strict=True):
        assert got["qty"] == pytest.approx(want["qty"], rel=1e-9)
        assert got["fee"] == pytest.approx(want["fee"], rel=1e-9, abs=1e-12)
    assert equity == pytest.approx(float(bt.equity[-1]), rel=1e-9)


# ----------------------------------------------------------------------------- parity on BTC


def _random_version(url: str, symbol: str, *, seed: int, since: int, until: int) -> int:
    space = StateSpace.default()
    learner = FastQLearning(space.n_states, seed=0)
    learner.q[...] = np.random.default_rng(seed).normal(0.0, 1.0, learner.q.shape)
    learner.visits[...] = 1
    return insert_version(
        url, symbol, learner, space, train_since=since - 90 * 86400, train_until=since, holdout_until=until
    )


def _cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("DATABASE_URL", url)
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout) if "--json" in args else r.stdout


def test_replay_trades_equal_backtest_ensemble_trades(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = shared_csv("Binance_BTCUSDT_1h.csv")
    _cli(database_url, monkeypatch, "candles", "import", str(csv), "--symbol", "BTC-USDT")
    since, until = "2021-03-01", "2021-06-01"
    from producer.options import parse_date

    s, u = parse_date(since, flag="s"), parse_date(until, flag="u")
    assert s is not None and u is not None
    version = _random_version(database_url, "BTC-USDT", seed=3, since=s, until=u)
    bt = _cli(
        database_url,
        monkeypatch,
        "backtest",
        "--symbol",
        "BTC-USDT",
        "--version",
        str(version),
        "--since",
        since,
        "--until",
        until,
        "--json",
        "--trades",
    )
    rp = _cli(
        database_url,
        monkeypatch,
        "paper",
        "replay",
        "--symbol",
        "BTC-USDT",
        "--version",
        str(version),
        "--since",
        since,
        "--until",
        until,
        "--json",
    )
    want, got = bt["trades"]["ensemble"], rp["trades"]
    assert len(want) >= 10, "the parity check needs trades to compare"
    assert rp["n_decisions"] == bt["n_candles"]
    assert [(f["side"], f["ts"], f["price"]) for f in got] == [(f["side"], f["ts"], f["price"]) for f in want]
    for g, w in zip(got, want, strict=True):
        assert g["qty"] == pytest.approx(w["qty"], rel=1e-9)
        assert g["fee"] == pytest.approx(w["fee"], rel=1e-9)
    final = 10_000.0 * (1 + bt["policies"]["ensemble"]["total_return_pct"] / 100.0)
    assert rp["equity_final"] == pytest.approx(final, rel=1e-9)


# ----------------------------------------------------------------------------- the tick, in-process


def _promote(settings_: Settings, symbol: str, version: int) -> None:
    promotion.set_promoted(settings_, symbol, version, by="test")


def _zig_exchange(fake: FakeKucoin, n: int) -> np.ndarray:
    return fake.add_series("BTC-USDT", start=T0, count=n, seed=5)


def _decisions(url: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT extract(epoch FROM ts)::bigint, version, action, target, equity, source FROM paper_decisions"
        " ORDER BY ts",
    )


def _fills(url: str) -> list[tuple[Any, ...]]:
    return query(
        url, "SELECT extract(epoch FROM ts)::bigint, side, price, qty, fee FROM paper_fills ORDER BY ts"
    )


@pytest.fixture
def versions_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return Settings(database_url=database_url, models_dir=str(tmp_path / "models"))


def test_tick_catches_up_in_order_is_idempotent_and_hot_reloads(versions_env: Settings) -> None:
    url = versions_env.database_url
    fake = FakeKucoin(closed_only=True)
    ts = _zig_exchange(fake, 200)
    v1 = _random_version(url, "BTC-USDT", seed=1, since=int(ts[100]), until=int(ts[-1]))
    v2 = _random_version(url, "BTC-USDT", seed=2, since=int(ts[100]), until=int(ts[-1]))
    _promote(versions_env, "BTC-USDT", v1)
    with serve(fake):
        fake.now = float(ts[120])  # candles 0..119 closed
        fetch_symbol(make_exchange("kucoin", api_url=fake.url), url, "BTC-USDT", "1h", since=T0)
        agent = AgentSettings(api_url=fake.url)
        res = paper.create_account(
            versions_env,
            agent,
            name="acct",
            symbols=("BTC-USDT",),
            capital=1000.0,
            fee=0.001,
            timeframe="1h",
            exchange="kucoin",
        )
        assert res.first_candle["BTC-USDT"] == int(ts[120])
        assert paper.tick(versions_env, fetch=False)["acct"][0].decided == []
        live_settings = Settings(database_url=url, agent_env={"QTRAIN_EXCHANGE_API_URL": fake.url})

        fake.now = float(ts[127])  # 7 new closed candles: 120..126
        out = paper.tick(live_settings)["acct"][0].to_json()
        assert [d["ts"] for d in out["decided"]] == [int(t) for t in ts[120:127]]
        # only the newest candle of a tick has live data; the others were caught up, in order
        assert [d["source"] for d in out["decided"]] == ["catch-up"] * 6 + ["live"]

        # a tick delivered twice at once: each candle decided once
        fake.now = float(ts[131])
        threads = [threading.Thread(target=paper.tick, args=(live_settings,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rows = _decisions(url)
        assert [r[0] for r in rows] == [int(t) for t in ts[120:131]]
        assert {r[1] for r in rows} == {v1}
        assert paper.tick(live_settings)["acct"][0].decided == []  # nothing new: nothing written

        # a promotion during the run: the next decision uses the new version and says so
        _promote(versions_env, "BTC-USDT", v2)
        fake.now = float(ts[132])
        paper.tick(live_settings)
        rows = _decisions(url)
        assert rows[-1][0] == int(ts[131]) and rows[-1][1] == v2
        assert [r[1] for r in rows[:-1]] == [v1] * 11

    st_ = paper.status(versions_env, "acct")[0].to_json()["positions"][0]
    assert st_["n_decisions"] == 12 and st_["last_candle"] == int(ts[131])
    assert st_["last_decision"]["version"] == v2
    fills = _fills(url)
    assert st_["n_fills"] == len(fills)
    assert all(int(f[0]) in {int(t) for t in ts[121:132]} for f in fills)  # at the opens after decisions


# ----------------------------------------------------------------------------- the CLI


def _run(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("DATABASE_URL", url)
    return CliRunner().invoke(cli, list(args))


def _one_line_exit_2(r: Any, needle: str) -> None:
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_paper_cli_start_status_gap_report_stop(
    versions_env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from model.market.synthetic import make_candles
    from tests.evaluation_support import insert_candles_of

    url = versions_env.database_url
    c = make_candles(160, seed=9, start=T0)
    insert_candles_of(url, c.slice(0, 100))
    start = ["paper", "start", "--symbols", "BTC-USDT", "--capital", "5000", "--name", "cli", "--no-fetch"]
    _one_line_exit_2(_run(url, monkeypatch, *start), "no promoted Q-table version")
    v = _random_version(url, "BTC-USDT", seed=4, since=T0, until=T0 + 100 * STEP)
    _promote(versions_env, "BTC-USDT", v)
    _one_line_exit_2(_run(url, monkeypatch, *start, "--capital", "-1"), "--capital")
    _one_line_exit_2(_run(url, monkeypatch, *start, "--weights", "llm=x"), "QTRAIN_WEIGHTS / --weights")
    _one_line_exit_2(_run(url, monkeypatch, *start[:-1], "--timeframe", "4h", "--no-fetch"), "--timeframe 1h")
    r = _run(url, monkeypatch, *start, "--json", "--buy-threshold", "0.1")
    assert r.exit_code == 0, (r.output, r.exception)
    made = json.loads(r.stdout)
    assert made["first_candle"] == {"BTC-USDT": int(c.ts[100])} and made["config"]["buy_threshold"] == 0.1
    _one_line_exit_2(_run(url, monkeypatch, *start), "exists")

    # 40 more candles with one missing in the middle: decided in order, the gap said, not skipped
    more = c.slice(100, 140)
    insert_candles_of(url, more.slice(0, 20))
    insert_candles_of(url, more.slice(21, 40))
    out = paper.tick(versions_env, fetch=False)["cli"][0].to_json()
    assert [d["ts"] for d in out["decided"]] == [int(t) for t in np.delete(more.ts, 20)]
    notes = query(url, "SELECT notes FROM paper_decisions WHERE ts = to_timestamp(%s)", (int(more.ts[21]),))
    assert any(n.startswith("gap: 1 candles missing") for n in notes[0][0])

    r = _run(url, monkeypatch, "paper", "status", "cli", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    st_ = json.loads(r.stdout)
    pos = st_["positions"][0]
    assert pos["n_decisions"] == 39 and pos["last_candle"] == int(more.ts[-1])
    bh = 5000.0 / (1.001 * float(c.open[101])) * float(c.close[139])
    assert pos["buy_and_hold_equity"] == pytest.approx(bh)
    assert st_["equity"] == pytest.approx(pos["cash"] + pos["qty"] * float(c.close[139]))

    html_path = tmp_path / "paper.html"
    r = _run(url, monkeypatch, "paper", "report", "cli", "--out", str(html_path))
    assert r.exit_code == 0, (r.output, r.exception)
    page = html_path.read_text()
    assert 'data-root-id="' in page and "Decisions (last 39)" in page and f"v{v}" in page

    assert _run(url, monkeypatch, "paper", "stop", "cli").exit_code == 0
    insert_candles_of(url, c.slice(140, 150))
    assert paper.tick(versions_env, fetch=False) == {}  # a stopped account is not ticked
    _one_line_exit_2(_run(url, monkeypatch, "paper", "stop", "nope"), "no paper account 'nope'")
    replay = ["paper", "replay", "--symbol", "BTC-USDT", "--since", "2024-01-03", "--until", "2024-01-02"]
    _one_line_exit_2(_run(url, monkeypatch, *replay), "--since 2024-01-03 is after --until 2024-01-02")


def test_paper_beat_entry_from_env(caplog: pytest.LogCaptureFixture) -> None:
    from worker.runtime.paper_task import ENTRY_NAME, paper_beat_schedule

    entry = paper_beat_schedule({})[ENTRY_NAME]
    assert entry["task"] == "qtrain.paper_tick" and entry["schedule"].total_seconds() == 60
    assert entry["options"]["queue"] == "reduce"
    assert paper_beat_schedule({"QTRAIN_PAPER_EVERY_S": "5"})[ENTRY_NAME]["schedule"].total_seconds() == 5
    assert paper_beat_schedule({"QTRAIN_PAPER_EVERY_S": "0"}) == {}
    caplog.clear()
    assert paper_beat_schedule({"QTRAIN_PAPER_EVERY_S": "soon"}) == {}
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "paper trading ticks are OFF" in errors[0]
    assert "QTRAIN_PAPER_EVERY_S" in errors[0]
