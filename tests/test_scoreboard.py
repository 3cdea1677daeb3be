"""The scoreboard core: heuristic analyses as the worker makes them, no leakage from a fold's test
range into its tables, every policy's metrics JSON-safe and deterministic, summary counts."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY
from model.analyst.heuristic import heuristic_analysis
from model.candles import Candles
from model.evaluation.controls import CONTROLS, fold_control
from model.evaluation.folds import rolling_folds
from model.evaluation.scoreboard import (
    ablation,
    ablation_note,
    control_name,
    evaluate_fold,
    fold_record,
    fold_tables,
    heuristic_analyses,
    policy_name,
    summarise,
    unshaped_name,
)
from model.features import WARMUP, compute_features
from model.learning.training import DEFAULT_RECIPE, AnalysedWindow
from model.market.synthetic import make_candles

CANDLES = make_candles(2400, seed=21)
FOLDS = rolling_folds(CANDLES.ts, train_days=40, test_days=20, since=int(CANDLES.ts[0]) + 40 * 86_400)


def cut(c: Candles, lo: int, hi: int) -> Candles:
    return c.slice(lo, hi)


def analyses_for(c: Candles, fold) -> list[AnalysedWindow]:
    return heuristic_analyses(c, since_ts=fold.train_since, until_ts=fold.train_until)


def test_folds_fixture_is_usable():
    assert len(FOLDS) >= 3 and all(f.n_test >= 100 for f in FOLDS)


def test_heuristic_analyses_are_the_workers():
    """Each window: features of WARMUP candles of history plus the window, analysed on the window's
    rows (``worker.pipeline.analyze``); windows every ``stride`` from the range's first candle, ending before
    ``until_ts``; a shared cache changes nothing."""
    fold = FOLDS[1]
    got = heuristic_analyses(
        CANDLES, since_ts=fold.train_since, until_ts=fold.train_until, window=48, stride=24
    )
    assert len(got) == (fold.n_train - 48) // 24 + 1
    for w in got[:: max(1, len(got) // 5)]:
        s = int(np.searchsorted(CANDLES.ts, w.start_ts))
        ctx = CANDLES.slice(max(0, s - WARMUP), s + 48)
        feats = compute_features(ctx)
        a = heuristic_analysis({k: v[s - max(0, s - WARMUP) :] for k, v in feats.items()})
        assert (w.action, w.confidence, w.rules) == (a.action, a.confidence, a.rules)
        assert w.end_ts == int(CANDLES.ts[s + 47]) and w.end_ts < fold.train_until
    cache: dict = {}
    first = heuristic_analyses(CANDLES, since_ts=fold.train_since, until_ts=fold.train_until, cache=cache)
    again = heuristic_analyses(CANDLES, since_ts=fold.train_since, until_ts=fold.train_until, cache=cache)
    assert first == again == got and len(cache) == len(got)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_no_leakage_truncating_the_future_leaves_the_tables_byte_identical(k):
    """A fold's tables are the same with or without its test range and everything after it, and
    analyses of windows that end inside the test range are ignored."""
    fold = FOLDS[k]
    recipes = ("sweep", "qlearning")
    past = analyses_for(CANDLES, fold)
    future = [
        AnalysedWindow(int(CANDLES.ts[i]), int(CANDLES.ts[i + 47]), BUY, 0.9, ())
        for i in range(fold.test_lo - 24, fold.test_hi - 48, 24)
    ]
    full = fold_tables(CANDLES, fold, past + future, recipes=recipes, seed=3)
    truncated = fold_tables(cut(CANDLES, 0, fold.test_lo), fold, past, recipes=recipes, seed=3)
    for r in recipes:
        assert full[r].q.tobytes() == truncated[r].q.tobytes()
        assert full[r].visits.tobytes() == truncated[r].visits.tobytes()


def test_fold_metrics_ignore_data_outside_the_fold():
    """Candles after the test range, or before the training part, do not change any policy's metrics."""
    fold = FOLDS[1]
    an = analyses_for(CANDLES, fold)
    base = evaluate_fold(CANDLES, fold, an, random_seeds=5)
    shorter = evaluate_fold(cut(CANDLES, 0, fold.test_hi), fold, an, random_seeds=5)
    lo = fold.train_lo
    shifted = dataclasses.replace(
        fold, train_lo=0, train_hi=fold.train_hi - lo, test_lo=fold.test_lo - lo, test_hi=fold.test_hi - lo
    )
    later_start = evaluate_fold(cut(CANDLES, lo, len(CANDLES)), shifted, an, random_seeds=5)
    dump = json.dumps(base, sort_keys=True, allow_nan=False)
    assert dump == json.dumps(shorter, sort_keys=True) == json.dumps(later_start, sort_keys=True)


def test_every_policy_is_scored_json_safe_and_deterministic():
    fold = FOLDS[2]
    an = analyses_for(CANDLES, fold)
    out = evaluate_fold(CANDLES, fold, an, recipes=(DEFAULT_RECIPE, "qlearning"), random_seeds=7)
    again = evaluate_fold(CANDLES, fold, an, recipes=(DEFAULT_RECIPE, "qlearning"), random_seeds=7)
    assert json.dumps(out, allow_nan=False) == json.dumps(again, allow_nan=False)
    twins = {"qtable:unshaped", "qtable:qlearning:unshaped"}
    assert set(out) == {"qtable", "qtable:qlearning", "rules", "buy_and_hold", "flat", "random"} | twins
    assert policy_name(DEFAULT_RECIPE) == "qtable" and policy_name("qlearning") == "qtable:qlearning"
    assert out["flat"]["sharpe"] == 0.0 and out["flat"]["n_trades"] == 0
    assert out["buy_and_hold"]["exposure_pct"] > 99.0
    assert out["random"]["sharpe_p90"] >= out["random"]["sharpe"]
    rec = fold_record("BTC-USDT", fold, out)
    assert rec["test_since"].endswith("Z") and rec["policies"] == out


def test_random_is_the_median_over_seeds():
    fold = FOLDS[0]
    one = [evaluate_fold(CANDLES, fold, [], random_seeds=1, seed=s)["random"]["sharpe"] for s in range(5)]
    five = evaluate_fold(CANDLES, fold, [], random_seeds=5, seed=0)["random"]["sharpe"]
    assert five == pytest.approx(float(np.median(one)))


sharpe = st.one_of(st.none(), st.floats(-5, 5, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(sharpe, sharpe, sharpe, st.integers(0, 200)), min_size=1, max_size=12))
def test_summary_counts(rows):
    folds = [
        {
            "policies": {
                "qtable": {"sharpe": q, "n_trades": n},
                "random": {"sharpe": r, "n_trades": 27},
                "buy_and_hold": {"sharpe": b, "n_trades": 0},
            }
        }
        for q, r, b, n in rows
    ]
    s = summarise(folds)["qtable"]
    assert s["folds"] == len(rows)
    assert s["beats_random_median"] == sum(q is not None and r is not None and q > r for q, r, _, _ in rows)
    assert s["beats_buy_and_hold"] == sum(q is not None and b is not None and q > b for q, _, b, _ in rows)
    assert s["trades_per_fold"] == pytest.approx(np.mean([n for *_, n in rows]))
    qs = [q for q, *_ in rows if q is not None]
    assert s["median_sharpe"] == (pytest.approx(float(np.median(qs))) if qs else None)
    assert set(s) == {
        "median_sharpe",
        "beats_random_median",
        "beats_buy_and_hold",
        "folds",
        "trades_per_fold",
    }
    json.dumps(summarise(folds), allow_nan=False)
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())


def test_the_unshaped_row_is_the_same_recipe_without_analyses():
    fold = FOLDS[1]
    an = analyses_for(CANDLES, fold)
    assert an
    recipes = (DEFAULT_RECIPE, "qlearning")
    out = evaluate_fold(CANDLES, fold, an, recipes=recipes, random_seeds=3)
    bare = evaluate_fold(CANDLES, fold, [], recipes=recipes, random_seeds=3)
    for r in recipes:
        assert out[unshaped_name(r)] == bare[policy_name(r)] == bare[unshaped_name(r)]
    assert unshaped_name(DEFAULT_RECIPE) == "qtable:unshaped"
    assert unshaped_name("qlearning") == "qtable:qlearning:unshaped"
    shaped = fold_tables(CANDLES, fold, an)[DEFAULT_RECIPE].q
    assert not np.array_equal(shaped, fold_tables(CANDLES, fold, [])[DEFAULT_RECIPE].q)  # the analyses count


pair = st.tuples(sharpe, sharpe)


@settings(max_examples=60, deadline=None)
@given(st.lists(pair, min_size=0, max_size=12))
def test_ablation_counts_the_folds_where_the_analyses_helped(rows):
    folds = [{"policies": {"qtable": {"sharpe": a}, "qtable:unshaped": {"sharpe": b}}} for a, b in rows]
    got = ablation(folds)["qtable"]
    both = [(a, b) for a, b in rows if a is not None and b is not None]
    assert got["folds"] == len(both) and got["unshaped"] == "qtable:unshaped"
    assert got["helped"] == sum(a > b for a, b in both) and got["hurt"] == sum(a < b for a, b in both)
    assert got["helped"] + got["hurt"] + got["tied"] == len(both)
    if both:
        assert got["median_sharpe_margin"] == pytest.approx(float(np.median([a - b for a, b in both])))
    else:
        assert got["median_sharpe_margin"] is None
    json.dumps(got, allow_nan=False)
    (line,) = ablation_note({"qtable": got}, "heuristic")
    assert line.startswith(f"heuristic analyses helped qtable in {got['helped']} of {got['folds']} folds")


# --------------------------------------------------------------------------- negative controls (issue 27)


def test_the_control_rows_are_the_recipe_trained_on_each_control():
    """``qtable:shuffled`` / ``qtable:constant``: the same recipe trained on
    ``model.evaluation.controls`` of the fold's analyses; deterministic; without analyses they are
    the unshaped table."""
    fold = FOLDS[1]
    an = analyses_for(CANDLES, fold)
    recipes = (DEFAULT_RECIPE, "qlearning")
    out = evaluate_fold(CANDLES, fold, an, recipes=recipes, random_seeds=3, controls=CONTROLS, seed=5)
    again = evaluate_fold(CANDLES, fold, an, recipes=recipes, random_seeds=3, controls=CONTROLS, seed=5)
    assert json.dumps(out, allow_nan=False) == json.dumps(again, allow_nan=False)
    names = {control_name(r, c) for r in recipes for c in CONTROLS}
    assert names == {f"qtable:{c}" for c in CONTROLS} | {f"qtable:qlearning:{c}" for c in CONTROLS}
    assert names <= set(out)
    for c in CONTROLS:
        ctl = fold_control(c, an, fold, seed=5)
        assert ctl and ctl != [w for w in an if w.end_ts < fold.test_since]  # the analyses changed
        ref = fold_tables(CANDLES, fold, ctl, seed=5)[DEFAULT_RECIPE].q
        assert not np.array_equal(ref, fold_tables(CANDLES, fold, an, seed=5)[DEFAULT_RECIPE].q)
        alone = evaluate_fold(CANDLES, fold, ctl, recipes=(DEFAULT_RECIPE,), random_seeds=3, seed=5)
        assert out[control_name(DEFAULT_RECIPE, c)] == alone["qtable"]
    bare = evaluate_fold(CANDLES, fold, [], recipes=recipes, random_seeds=3, controls=CONTROLS)
    assert all(bare[control_name(r, c)] == bare[unshaped_name(r)] for r in recipes for c in CONTROLS)
    no_controls = evaluate_fold(CANDLES, fold, an, recipes=recipes, random_seeds=3, seed=5)
    assert not names & set(no_controls)  # off unless asked: older callers' outputs unchanged
    with pytest.raises(ValueError, match="unknown control"):
        evaluate_fold(CANDLES, fold, an, random_seeds=3, controls=("reversed",))


def test_a_pooled_recipe_needs_its_control_tables():
    fold = FOLDS[1]
    an = analyses_for(CANDLES, fold)
    tables = fold_tables(CANDLES, fold, an)[DEFAULT_RECIPE]
    with pytest.raises(ValueError, match="trained_controls"):
        evaluate_fold(
            CANDLES,
            fold,
            an,
            recipes=("pooled",),
            random_seeds=3,
            controls=CONTROLS,
            trained={"pooled": (tables, tables)},
        )
    assert control_name("pooled", "shuffled") == "qtable:shuffled"  # the default recipe's is bare
    assert control_name("sweep", "shuffled") == "qtable:sweep:shuffled"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(sharpe, sharpe, sharpe, sharpe), min_size=0, max_size=12))
def test_ablation_counts_the_folds_against_each_control(rows):
    folds = [
        {
            "policies": {
                "qtable": {"sharpe": a},
                "qtable:unshaped": {"sharpe": b},
                "qtable:shuffled": {"sharpe": s},
                "qtable:constant": {"sharpe": k},
            }
        }
        for a, b, s, k in rows
    ]
    got = ablation(folds)["qtable"]
    if not rows:
        assert "controls" not in got
        return
    assert list(got["controls"]) == list(CONTROLS)
    for i, c in enumerate(CONTROLS):
        v = got["controls"][c]
        both = [(r[0], r[2 + i]) for r in rows if r[0] is not None and r[2 + i] is not None]
        assert v["policy"] == f"qtable:{c}" and v["folds"] == len(both)
        assert v["helped"] == sum(a > b for a, b in both) and v["hurt"] == sum(a < b for a, b in both)
        assert v["helped"] + v["hurt"] + v["tied"] == len(both)
        median = v["median_sharpe_margin"]
        assert median == (pytest.approx(float(np.median([a - b for a, b in both]))) if both else None)
    json.dumps(got, allow_nan=False)
    lines = ablation_note({"qtable": got}, "heuristic")
    assert len(lines) == 3
    assert lines[1].startswith("heuristic analyses' content beat qtable:shuffled (shuffled control) in")
    assert ablation([{"policies": {"qtable": {"sharpe": 1.0}}}])["qtable"].keys() == {
        "unshaped",
        "helped",
        "hurt",
        "tied",
        "folds",
        "median_sharpe_margin",
    }


def test_pooled_controls_apply_each_symbols_control_before_pooling():
    from model.evaluation.pooled_folds import pooled_controls_by_date, pooled_fold_tables

    other = make_candles(2400, seed=22, symbol="ETH-USDT")
    series = {"BTC-USDT": (CANDLES, FOLDS), "ETH-USDT": (other, FOLDS)}

    def analyses(symbol, fold):
        return analyses_for(series[symbol][0], fold)

    got = pooled_controls_by_date(series, analyses, recipes=("sweep", "pooled"), controls=CONTROLS, seed=3)
    fold = FOLDS[1]
    for c in CONTROLS:
        own = {s: fold_control(c, analyses(s, fold), fold, seed=3) for s in series}
        parts = {s: (cs, fold, own[s]) for s, (cs, _) in series.items()}
        ref = pooled_fold_tables(parts)
        for s in series:
            assert got[fold.test_since][s]["pooled"][c].q.tobytes() == ref[s].q.tobytes()
    shaped = pooled_fold_tables({s: (cs, fold, analyses(s, fold)) for s, (cs, _) in series.items()})
    assert not np.array_equal(shaped["BTC-USDT"].q, got[fold.test_since]["BTC-USDT"]["pooled"]["shuffled"].q)
    assert pooled_controls_by_date(series, analyses, recipes=("sweep",), controls=CONTROLS, seed=3) == {}
