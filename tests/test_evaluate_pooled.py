"""``qtrain evaluate --recipe pooled`` on real PostgreSQL: one call trains the pooled recipe across
the symbols given on each fold date, the JSON and the notes say what was pooled, two runs give the
same bytes, and the pooled tables are the ones ``model.pooled_folds`` trains from the same data."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from model.backtest import run_backtest
from model.features import compute_features
from model.metrics import json_safe
from model.policies import qtable_policy
from model.pooled_folds import pooled_fold_tables
from model.scoreboard import heuristic_analyses
from model.states import StateSpace
from model.synthetic import DEFAULT_START
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
    args = ("--symbols", ",".join(SYMBOLS), *FAST, "--recipe", "pooled", "--json")
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert again.output == first.output
    out = json.loads(first.output)
    pool = out["params"]["pooled"]["pooled"]
    assert pool["symbols"] == sorted(SYMBOLS) and pool["symbols_per_date"] == [3, 3]
    assert pool["params"]["symbol_strength"] == 100.0 and pool["fold_dates"] == len(out["folds"]) // 3
    assert any("recipe pooled pooled 3 symbols" in n for n in out["notes"])
    for f in out["folds"]:
        assert {"qtable", "qtable:pooled", "qtable:pooled:unshaped"} <= set(f["policies"])
        assert {"qtable:pooled:shuffled", "qtable:pooled:constant", "qtable:shuffled"} <= set(f["policies"])
    assert out["summary"]["qtable:pooled"]["folds"] == len(out["folds"])
    assert "qtable:pooled" in out["ablation"]
    assert list(out["ablation"]["qtable:pooled"]["controls"]) == ["constant", "shuffled"]  # sorted keys
    assert out["ablation"]["qtable:pooled"]["controls"]["shuffled"]["folds"] == len(out["folds"])


def test_pooled_tables_are_those_of_the_fold_date_across_all_symbols(db) -> None:
    """The scoreboard's pooled policy on one fold is the greedy policy of ``pooled_fold_tables``
    over the three symbols' folds of that date (its trade count matches), not a per-symbol pool."""
    req = EvaluateRequest(symbols=tuple(SYMBOLS), train_days=20, test_days=10, random_seeds=5,
                          since=DEFAULT_START + 21 * 86_400, recipes=("sweep", "pooled"))  # fmt: skip
    plans = plan(db, req)
    k = 1
    parts = {
        p.symbol: (p.candles, p.folds[k], heuristic_analyses(p.candles, since_ts=p.folds[k].train_since,
                                                             until_ts=p.folds[k].test_since))
        for p in plans
    }  # fmt: skip
    tables = pooled_fold_tables(parts)
    alone = pooled_fold_tables({"BTC-USDT": parts["BTC-USDT"]})
    res = run("--symbols", ",".join(SYMBOLS), *FAST, "--recipe", "pooled", "--json")
    assert res.exit_code == 0, res.output
    folds = [f for f in json.loads(res.output)["folds"] if f["symbol"] == "BTC-USDT"]
    candles, fold, _ = parts["BTC-USDT"]
    m = StateSpace.default().encode(compute_features(candles.slice(fold.train_lo, fold.test_hi)))
    pos = qtable_policy(tables["BTC-USDT"].q, m[fold.test_lo - fold.train_lo :])
    want = json_safe(run_backtest(candles.slice(fold.test_lo, fold.test_hi), pos, fee=0.001).metrics)
    assert folds[k]["policies"]["qtable:pooled"] == want
    assert tables["BTC-USDT"].q.tobytes() != alone["BTC-USDT"].q.tobytes()  # the pool mattered
