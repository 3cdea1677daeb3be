"""Promotion gate: a version is promoted only when it beats buy-and-hold and the promoted one."""

from __future__ import annotations

import hashlib
import math

import pytest

from tests.evaluation_support import (
    MOMENTUM_SPACE,
    heuristic_batch,
    heuristic_version,
    insert_candles_of,
    insert_version,
    momentum_table,
    settings_for,
    zigzag_candles,
)
from tests.pipeline_support import query, seed_candles
from worker.errors import BadInput
from worker.pipeline import promotion, reduce
from worker.pipeline.completion import complete_symbol
from worker.store.versions import model_path, version_model_path

SYMBOL = "ZIG-USDT"
N = 600


@pytest.fixture
def zig(database_url, tmp_path):
    c = zigzag_candles(N, symbol=SYMBOL)
    insert_candles_of(database_url, c)
    span = {"train_since": int(c.ts[0]), "train_until": int(c.ts[400]), "holdout_until": int(c.ts[-1]) + 3600}
    return settings_for(database_url, tmp_path), span


def _add(settings, kind, span):
    return insert_version(settings.database_url, SYMBOL, momentum_table(kind), MOMENTUM_SPACE, **span)


def _promoted(url):
    return [
        r[0] for r in query(url, "SELECT version FROM agent_state WHERE symbol = %s AND promoted", (SYMBOL,))
    ]


def test_gate_promotes_better_and_refuses_worse(zig):
    settings, span = zig
    cfg = promotion.PromotionConfig()
    flat = _add(settings, "flat", span)
    res = promotion.evaluate_and_promote(settings, SYMBOL, flat, config=cfg)
    assert res["buy_and_hold"] < 0  # the zigzag drifts down: never buying beats holding
    assert res["promoted"] and res["incumbent"] is None and res["value"] == 0.0
    assert _promoted(settings.database_url) == [flat]

    bad = _add(settings, "contrarian", span)
    res = promotion.evaluate_and_promote(settings, SYMBOL, bad, config=cfg)
    assert not res["promoted"] and res["value"] < res["buy_and_hold"]
    assert "does not beat" in res["reason"]
    assert _promoted(settings.database_url) == [flat]

    good = _add(settings, "momentum", span)
    res = promotion.evaluate_and_promote(settings, SYMBOL, good, config=cfg)
    assert res["promoted"] and res["incumbent"] == flat and res["value"] > 1.0
    assert _promoted(settings.database_url) == [good]
    blob = bytes(
        query(settings.database_url, "SELECT npz FROM agent_state WHERE version = %s", (good,))[0][0]
    )
    assert model_path(settings.models_dir, SYMBOL).read_bytes() == blob
    rows = query(
        settings.database_url, "SELECT version, policy FROM backtests WHERE kind = 'holdout' ORDER BY id"
    )
    assert (good, "incumbent_qtable") in rows and (flat, "random_median") in rows and len(rows) == 3 + 4 + 4
    log = query(
        settings.database_url, "SELECT version, previous_version, by, kind FROM promotions ORDER BY id"
    )
    assert log == [(flat, None, "gate", "gate"), (good, flat, "gate", "gate")]


def test_margin_and_lower_is_better_metric(zig):
    settings, span = zig
    good = _add(settings, "momentum", span)
    res = promotion.evaluate_and_promote(settings, SYMBOL, good, config=promotion.PromotionConfig(margin=1e6))
    assert not res["promoted"]
    flat = _add(settings, "flat", span)
    dd = promotion.PromotionConfig(metric="max_drawdown_pct")
    res = promotion.evaluate_and_promote(settings, SYMBOL, flat, config=dd)
    assert res["promoted"] and res["value"] == 0.0  # no position, no drawdown: lower wins
    res = promotion.evaluate_and_promote(settings, SYMBOL, good, config=dd)
    assert not res["promoted"] and res["incumbent"] == flat


def test_config_from_env():
    assert promotion.PromotionConfig.from_env({}) == promotion.PromotionConfig("sharpe", 0.0)
    cfg = promotion.PromotionConfig.from_env(
        {"QTRAIN_PROMOTION_METRIC": "sortino", "QTRAIN_PROMOTION_MARGIN": "0.5"}
    )
    assert cfg.beats(2.0, 1.4) and not cfg.beats(1.9, 1.4) and not cfg.beats(math.nan, 0.0)
    for env in ({"QTRAIN_PROMOTION_METRIC": "luck"}, {"QTRAIN_PROMOTION_MARGIN": "x"},
                {"QTRAIN_PROMOTION_MARGIN": "-1"}):  # fmt: skip
        with pytest.raises(BadInput):
            promotion.PromotionConfig.from_env(env)


def test_reducer_runs_the_gate_and_writes_files(database_url, tmp_path):
    seed_candles(database_url, n=360, symbols={"BTC-USDT": (11, 30_000.0)})
    settings = settings_for(database_url, tmp_path)
    summary = heuristic_version(settings, "BTC-USDT")
    gate = summary["promotion"]
    assert gate["version"] == 1 and gate["metric"] == "sharpe" and "error" not in gate
    sharpe = {p: m["sharpe"] for p, m in query(database_url, "SELECT policy, metrics FROM backtests")}
    assert set(sharpe) == {"qtable", "buy_and_hold", "random_median"}
    q = sharpe["qtable"]
    assert gate["promoted"] == (q > sharpe["buy_and_hold"] and q > sharpe["random_median"])
    assert gate["margins"]["buy_and_hold"] == pytest.approx(sharpe["qtable"] - sharpe["buy_and_hold"])
    assert gate["margins"]["random_median"] == pytest.approx(sharpe["qtable"] - sharpe["random_median"])
    assert summary["batch_done"]
    blob = bytes(query(database_url, "SELECT npz FROM agent_state")[0][0])
    assert version_model_path(str(tmp_path), "BTC-USDT", 1).read_bytes() == blob
    # promoted or not, the trader's file holds the only version there is (flagged in the sidecar)
    assert model_path(str(tmp_path), "BTC-USDT").read_bytes() == blob
    assert hashlib.sha256(blob).hexdigest() == summary["sha256"]
    kinds = query(database_url, "SELECT DISTINCT kind FROM backtests")
    assert kinds == [("holdout",)]


def test_a_failing_gate_keeps_the_version(database_url, tmp_path, monkeypatch):
    seed_candles(database_url, n=360, symbols={"BTC-USDT": (11, 30_000.0)})
    settings = settings_for(database_url, tmp_path)

    def boom(*a, **k):
        raise RuntimeError("gate exploded")

    monkeypatch.setattr(promotion, "evaluate_and_promote", boom)
    summary = heuristic_version(settings, "BTC-USDT")
    assert summary["created"] and summary["promotion"]["error"] == "RuntimeError: gate exploded"
    assert query(database_url, "SELECT version, promoted FROM agent_state") == [(1, False)]
    assert query(database_url, "SELECT kind FROM promotions") == [("gate_failed",)]
    assert model_path(str(tmp_path), "BTC-USDT").exists()
    assert summary["batch_done"]  # a recorded gate failure does not leave the batch running


def test_only_one_promoted_version_per_symbol(zig):
    settings, span = zig
    a, b = _add(settings, "flat", span), _add(settings, "momentum", span)
    promotion.set_promoted(settings, SYMBOL, a, by="alice")
    import psycopg2

    with pytest.raises(psycopg2.errors.UniqueViolation):
        query(settings.database_url, "UPDATE agent_state SET promoted = true WHERE version = %s", (b,))


def test_a_second_reduce_run_finishes_a_gate_that_a_crash_skipped(database_url, tmp_path):
    seed_candles(database_url, n=360, symbols={"BTC-USDT": (11, 30_000.0)})
    settings = settings_for(database_url, tmp_path)
    batch_id = heuristic_batch(settings, "BTC-USDT")
    first = reduce.reduce_symbol(settings, batch_id, "BTC-USDT")  # the worker dies right after this
    assert first.created and not first.gated
    assert query(database_url, "SELECT count(*) FROM backtests")[0][0] == 0
    assert query(database_url, "SELECT state FROM batches") == [("running",)]  # not done before its gate
    again = complete_symbol(settings, batch_id, "BTC-USDT")
    assert not again["created"] and again["promotion"]["version"] == 1 and again["batch_done"]
    assert query(database_url, "SELECT DISTINCT kind FROM backtests") == [("holdout",)]
    third = complete_symbol(settings, batch_id, "BTC-USDT")
    assert "promotion" not in third  # gate done once: nothing more to do
    assert query(database_url, "SELECT count(*) FROM agent_state")[0][0] == 1


@pytest.mark.parametrize(
    ("value", "bh", "rnd", "inc", "promoted", "needle"),
    [
        (1.0, 0.5, 1.2, None, False, "random-policy median"),  # beats holding, not luck
        (1.0, 1.5, 0.2, None, False, "buy-and-hold"),
        (1.0, 0.5, 0.2, 1.1, False, "promoted version 3"),
        (1.0, 0.5, 0.2, 0.9, True, "beats"),
        (math.nan, 0.5, 0.2, None, False, "does not beat"),
    ],
)
def test_gate_decision_needs_buy_and_hold_the_random_median_and_the_incumbent(
    value, bh, rnd, inc, promoted, needle
):
    runs = {"qtable": {"sharpe": value}, "buy_and_hold": {"sharpe": bh}, "random_median": {"sharpe": rnd}}
    if inc is not None:
        runs["incumbent_qtable"] = {"sharpe": inc}
    out = promotion._decide(promotion.PromotionConfig(), runs, 3 if inc is not None else None)
    assert out["promoted"] is promoted and needle in out["reason"]
    if not math.isnan(value):
        assert out["margins"]["buy_and_hold"] == pytest.approx(value - bh)
        assert out["margins"]["random_median"] == pytest.approx(value - rnd)
    else:
        assert out["margins"]["buy_and_hold"] is None
