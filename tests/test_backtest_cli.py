"""``qtrain backtest``: the comparison table, --json, --report, recording, one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from model.evaluation.metrics import ANNUALISED, METRIC_NAMES
from model.evaluation.policy_set import POLICIES
from producer.cli import cli
from tests.evaluation_support import heuristic_version, settings_for
from tests.pipeline_support import query, seed_candles

SYMBOL = "BTC-USDT"


@pytest.fixture
def env(database_url, tmp_path, monkeypatch):
    seed_candles(database_url, n=420, symbols={SYMBOL: (11, 30_000.0)})
    heuristic_version(settings_for(database_url, tmp_path / "models"), SYMBOL)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QTRAIN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "220")
    return database_url


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_json_has_every_policy_and_metric_and_is_recorded(env):
    res = run("backtest", "--symbol", "btc/usdt", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["version"] == 1 and out["range"] == "holdout" and out["fee"] == 0.001
    assert set(out["policies"]) == set(POLICIES)
    for name, metrics in out["policies"].items():
        assert set(metrics) == set(METRIC_NAMES) | ({"sharpe_p90"} if name == "random" else set())
    # issue 29: the random column is the gate's median of 50 seeded random policies, the same numbers
    (gate_random,) = query(
        env, "SELECT metrics FROM backtests WHERE kind = 'holdout' AND policy = 'random_median'"
    )[0]
    assert out["random_seeds"] == 50 and any("median of 50 seeded random policies" in n for n in out["notes"])
    for m in ("total_return_pct", "max_drawdown_pct", "n_trades", "exposure_pct"):
        assert out["policies"]["random"][m] == pytest.approx(gate_random[m]), m
    # a 3.5-day tail: no annualised figure for any policy, and a note says why
    assert all(p[m] is None for p in out["policies"].values() for m in ANNUALISED)
    assert any("3.5 days: annualised figures" in n for n in out["notes"])
    assert out["promoted"] is False and out["notes"][0].startswith("version: v1, the latest (no version")
    bh = out["policies"]["buy_and_hold"]
    assert bh["total_return_pct"] == pytest.approx(bh["buy_and_hold_return_pct"], abs=0.5)
    assert bh["n_trades"] == 0 and out["policies"]["qtable"]["buy_and_hold_return_pct"] is not None
    assert any("orderbook left out" in n for n in out["notes"])
    (meta,) = query(env, "SELECT metadata FROM agent_state")[0]
    assert out["since"] == meta["train_until"] and out["until"] == meta["holdout_until"]
    rows = query(env, "SELECT policy, version, kind FROM backtests WHERE kind = 'manual' ORDER BY id")
    assert rows == [(p, 1, "manual") for p in out["policies"]]
    assert sorted(out["backtest_ids"]) == [
        r[0] for r in query(env, "SELECT id FROM backtests WHERE kind='manual' ORDER BY id")
    ]


def test_table_output_and_costs_change_results(env):
    res = run("backtest", "--symbol", SYMBOL)
    assert res.exit_code == 0, res.output
    for word in ("qtable", "ensemble", "buy_and_hold", "sharpe", "max_drawdown_pct", "held-out tail"):
        assert word in res.output
    cheap = json.loads(run("backtest", "--symbol", SYMBOL, "--json", "--fee", "0").output)
    dear = json.loads(
        run("backtest", "--symbol", SYMBOL, "--json", "--fee", "0.01", "--slippage-bps", "20").output
    )
    p = "random"
    assert cheap["policies"][p]["n_trades"] == dear["policies"][p]["n_trades"] > 0
    assert cheap["policies"][p]["total_return_pct"] > dear["policies"][p]["total_return_pct"]


def test_report_file_is_written(env, tmp_path):
    out = tmp_path / "bt.html"
    res = run("backtest", "--symbol", SYMBOL, "--report", str(out))
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('data-root-id="') == 1  # the Bokeh charts
    assert "<script src" not in html and "<link" not in html  # BokehJS inline: one file, offline
    assert "heuristic_rules" in html and "orderbook left out" in html


def test_explicit_range_warns_in_sample(env):
    (meta,) = query(env, "SELECT metadata FROM agent_state")[0]
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(meta["train_since"] + 100 * 3600, tz=UTC).isoformat()
    res = run("backtest", "--symbol", SYMBOL, "--since", since, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["range"] == "flags" and any("in-sample" in n for n in out["notes"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--symbol", SYMBOL, "--version", "9"], "qtrain models list"),
        (["--symbol", "DOGE-USDT"], "qtrain models list"),
        (["--symbol", SYMBOL, "--since", "2001-01-01", "--until", "2001-02-01"], "candles import"),
        (["--symbol", SYMBOL, "--fee", "0.5"], "--fee"),
        (["--symbol", SYMBOL, "--since", "yesterday-ish"], "--since"),
        (["--symbol", SYMBOL, "--walk-forward", "--folds", "0"], "--folds"),
        (["--symbol", SYMBOL, "--walk-forward", "--folds", "400"], "--folds"),
        (["--symbol", SYMBOL, "--report", "/nonexistent-dir/x.html"], "--report"),
    ],
)
def test_bad_input_is_one_line_exit_2(env, args, needle):
    res = run("backtest", *args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qtrain: error:") and needle in lines[0]
