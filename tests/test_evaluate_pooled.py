"""``qtrain evaluate`` with the pooled recipe (the default) on real PostgreSQL: one call trains it
across the symbols given on each fold date, the JSON and the notes say what was pooled, two runs
give the same bytes, and the pooled tables are the ones ``model.evaluation.pooled_folds`` trains from the same
data. A call of one symbol pools with the other stored symbols (their training ranges only);
``--pool none`` trains it alone; a bad ``--pool`` is one line and exit 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from model.evaluation.backtest import run_backtest
from model.evaluation.metrics import json_safe
from model.evaluation.policies import qtable_policy
from model.evaluation.pooled_folds import pooled_fold_tables
from model.evaluation.scoreboard import heuristic_analyses
from model.features import compute_features
from model.learning.states import StateSpace
from model.market.synthetic import DEFAULT_START
from producer.cli import cli
from tests.pipeline_support import seed_candles
from worker.evaluation.scoreboard import EvaluateRequest, plan

FIRST_TEST = datetime.fromtimestamp(DEFAULT_START + 21 * 86400, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
FAST = ("--train-days", "20", "--test-days", "10", "--random-seeds", "5", "--since", FIRST_TEST)
SYMBOLS = {"BTC-USDT": (11, 30_000.0), "ETH-USDT": (12, 2_000.0), "DASH-USDT": (13, 150.0)}


@pytest.fixture
def db(database_url, monkeypatch):
    seed_candles(database_url, n=24 * 75, symbols=SYMBOLS)
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def run(*args: str):
    return CliRunner().invoke(cli, ["evaluate", *args])


def test_pooled_recipe_in_one_call_says_what_it_pooled_and_is_byte_identical(db) -> None:
    args = ("--symbols", ",".join(SYMBOLS), *FAST, "--recipe", "sweep", "--json")
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert again.output == first.output
    out = json.loads(first.output)
    pool = out["params"]["pooled"]["pooled"]
    assert pool["symbols"] == sorted(SYMBOLS) and pool["symbols_per_date"] == [3, 3] and pool["stored"] == []
    assert pool["params"]["symbol_strength"] == 100.0 and pool["fold_dates"] == len(out["folds"]) // 3
    assert any("recipe pooled pooled 3 symbols" in n for n in out["notes"])
    for f in out["folds"]:
        assert {"qtable", "qtable:unshaped", "qtable:sweep", "qtable:sweep:unshaped"} <= set(f["policies"])
        assert {"qtable:shuffled", "qtable:constant", "qtable:sweep:shuffled"} <= set(f["policies"])
    assert out["summary"]["qtable"]["folds"] == len(out["folds"]) and out["params"]["recipes"][0] == "pooled"
    assert {"qtable", "qtable:sweep"} <= set(out["ablation"])
    assert list(out["ablation"]["qtable"]["controls"]) == ["constant", "shuffled"]  # sorted keys
    assert out["ablation"]["qtable"]["controls"]["shuffled"]["folds"] == len(out["folds"])


def test_pooled_tables_are_those_of_the_fold_date_across_all_symbols(db) -> None:
    """The scoreboard's pooled policy on one fold is the greedy policy of ``pooled_fold_tables``
    over the three symbols' folds of that date (its trade count matches), not a per-symbol pool."""
    req = EvaluateRequest(
        symbols=tuple(SYMBOLS),
        train_days=20,
        test_days=10,
        random_seeds=5,
        since=DEFAULT_START + 21 * 86_400,
        recipes=("sweep", "pooled"),
    )
    plans = plan(db, req)
    k = 1
    parts = {
        p.symbol: (
            p.candles,
            p.folds[k],
            heuristic_analyses(p.candles, since_ts=p.folds[k].train_since, until_ts=p.folds[k].test_since),
        )
        for p in plans
    }
    tables = pooled_fold_tables(parts)
    alone = pooled_fold_tables({"BTC-USDT": parts["BTC-USDT"]})
    res = run("--symbols", ",".join(SYMBOLS), *FAST, "--json")
    assert res.exit_code == 0, res.output
    folds = [f for f in json.loads(res.output)["folds"] if f["symbol"] == "BTC-USDT"]
    candles, fold, _ = parts["BTC-USDT"]
    m = StateSpace.default().encode(compute_features(candles.slice(fold.train_lo, fold.test_hi)))
    pos = qtable_policy(tables["BTC-USDT"].q, m[fold.test_lo - fold.train_lo :])
    want = json_safe(run_backtest(candles.slice(fold.test_lo, fold.test_hi), pos, fee=0.001).metrics)
    assert folds[k]["policies"]["qtable"] == want
    assert tables["BTC-USDT"].q.tobytes() != alone["BTC-USDT"].q.tobytes()  # the pool mattered


def _btc_policy(parts: dict, k: int) -> dict:
    """The JSON metrics of BTC-USDT's greedy policy on fold ``k`` from the tables pooled over ``parts``."""
    candles, fold, _ = parts["BTC-USDT"]
    table = pooled_fold_tables(parts)["BTC-USDT"]
    m = StateSpace.default().encode(compute_features(candles.slice(fold.train_lo, fold.test_hi)))
    pos = qtable_policy(table.q, m[fold.test_lo - fold.train_lo :])
    return json_safe(run_backtest(candles.slice(fold.test_lo, fold.test_hi), pos, fee=0.001).metrics)


def test_one_symbol_pools_with_the_stored_others_or_alone_with_pool_none(db) -> None:
    """BTC-USDT alone in the call: its table pools ETH's and DASH's stored candles of the fold's
    training range (unshaped, not scored); ``--pool none``: BTC alone; ``--pool ETH-USDT``: ETH only."""
    req = EvaluateRequest(
        symbols=tuple(SYMBOLS), train_days=20, test_days=10, random_seeds=5, since=DEFAULT_START + 21 * 86_400
    )
    plans = {p.symbol: p for p in plan(db, req)}
    k = 1
    btc = plans["BTC-USDT"]
    f = btc.folds[k]
    shaped = heuristic_analyses(btc.candles, since_ts=f.train_since, until_ts=f.test_since)
    part = {"BTC-USDT": (btc.candles, f, shaped)}
    peers = {s: (plans[s].candles, plans[s].folds[k], ()) for s in ("ETH-USDT", "DASH-USDT")}

    out = {}
    for name, extra in {"stored": (), "none": ("--pool", "none"), "eth": ("--pool", "eth-usdt")}.items():
        res = run("--symbols", "BTC-USDT", *FAST, "--json", *extra)
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.output)
    pool = out["stored"]["params"]["pooled"]["pooled"]
    assert pool["symbols"] == sorted(SYMBOLS) and pool["stored"] == ["DASH-USDT", "ETH-USDT"]
    assert pool["symbols_per_date"] == [3, 3] and not pool["alone"]
    assert any("BTC-USDT with 2 stored symbol(s) (DASH-USDT, ETH-USDT" in n for n in out["stored"]["notes"])
    assert {f["symbol"] for f in out["stored"]["folds"]} == {"BTC-USDT"}  # peers are never scored
    assert out["none"]["params"]["pooled"]["pooled"]["alone"] is True
    assert out["eth"]["params"]["pooled"]["pooled"]["stored"] == ["ETH-USDT"]

    assert out["stored"]["folds"][k]["policies"]["qtable"] == _btc_policy(part | peers, k)
    assert out["none"]["folds"][k]["policies"]["qtable"] == _btc_policy(part, k)
    assert out["eth"]["folds"][k]["policies"]["qtable"] == _btc_policy(
        part | {"ETH-USDT": peers["ETH-USDT"]}, k
    )
    alone = pooled_fold_tables(part)["BTC-USDT"].q
    assert pooled_fold_tables(part | peers)["BTC-USDT"].q.tobytes() != alone.tobytes()  # the peers counted


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("XRP-USDT", "--pool XRP-USDT: no 1h candles stored"),
        ("b@d", "--pool 'b@d': invalid symbol"),
        (",", "--pool is empty"),
    ],
)
def test_a_bad_pool_is_one_line_and_exit_2(db, value: str, says: str) -> None:
    res = run("--symbols", "BTC-USDT", *FAST, "--pool", value)
    assert res.exit_code == 2 and says in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
