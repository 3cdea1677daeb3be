"""``qtrain check-lookahead``: clean on stored candles with a real version; a leaky series is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import worker.evaluation.lookahead as lookahead
from model.features import FEATURES
from producer.cli import cli
from tests.evaluation_support import heuristic_version, settings_for
from tests.pipeline_support import seed_candles

SYMBOL = "BTC-USDT"


@pytest.fixture
def env(database_url, tmp_path, monkeypatch):
    seed_candles(database_url, n=360, symbols={SYMBOL: (11, 30_000.0)})
    heuristic_version(settings_for(database_url, tmp_path), SYMBOL)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    return database_url


def test_clean_on_stored_candles(env):
    res = CliRunner().invoke(cli, ["check-lookahead", "--symbol", SYMBOL, "--cuts", "12", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["ok"] and out["issues"] == [] and len(out["cuts"]) == 12 and out["n_candles"] == 360
    decisions = {"qtable_position", "ensemble_position", "ensemble_action_flat", "ensemble_action_long"}
    expected = {f"feature:{f}" for f in FEATURES} | {"market_state"} | decisions
    assert expected <= set(out["checked"])
    table = CliRunner().invoke(cli, ["check-lookahead", "--symbol", SYMBOL])
    assert table.exit_code == 0 and "qtable_position" in table.output and "LEAK" not in table.output


def test_leaky_series_is_caught(env, monkeypatch):
    real = lookahead.SERIES

    def leaky(candles, learner, space):
        out = real(candles, learner, space)
        peek = np.zeros(len(candles), dtype=np.int8)
        peek[:-1] = candles.close[1:] > candles.close[:-1]  # tomorrow's move, today
        out["peeking_signal"] = peek
        return out

    monkeypatch.setattr(lookahead, "SERIES", leaky)
    res = CliRunner().invoke(cli, ["check-lookahead", "--symbol", SYMBOL, "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert not out["ok"] and [i["name"] for i in out["issues"]] == ["peeking_signal"]
    first = out["issues"][0]
    assert first["first_bad_index"] == first["first_cut"] - 1
    assert "peeking_signal" in res.stderr and f"index {first['first_bad_index']}" in res.stderr


def test_no_candles_and_unknown_version(env):
    res = CliRunner().invoke(cli, ["check-lookahead", "--symbol", "DOGE-USDT"])
    assert res.exit_code == 2 and "candles import" in res.output
    res = CliRunner().invoke(cli, ["check-lookahead", "--symbol", SYMBOL, "--version", "5"])
    assert res.exit_code == 2 and "qtrain models list" in res.output
