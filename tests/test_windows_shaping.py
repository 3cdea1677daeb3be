"""Window planning (gaps stay gaps) and the reward shaping the reducer adds from LLM analyses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.analyst.rules import Condition, Rule
from model.learning.shaping import WindowAnalysis, shaping_matrix
from model.market.windows import next_is_contiguous, plan_windows


def _loop_plan(ts: np.ndarray, size: int, stride: int, step: int) -> tuple[list[int], int]:
    starts, skipped = [], 0
    for i in range(0, len(ts) - size + 1, stride):
        if all(ts[j + 1] - ts[j] == step for j in range(i, i + size - 1)):
            starts.append(i)
        else:
            skipped += 1
    return starts, skipped


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 3), min_size=2, max_size=120),
    size=st.integers(2, 12),
    stride=st.integers(1, 6),
)
def test_plan_matches_a_plain_loop_and_never_crosses_a_gap(gaps: list[int], size: int, stride: int) -> None:
    ts = np.concatenate(([0], np.cumsum(np.array(gaps) * 3600))).astype(np.int64)
    plan = plan_windows(ts, size=size, stride=stride, step=3600)
    starts, skipped = _loop_plan(ts, size, stride, 3600)
    assert plan.starts.tolist() == starts and plan.skipped == skipped
    for s in plan.starts:
        assert (np.diff(ts[s : s + size]) == 3600).all()


def test_plan_rejects_bad_arguments() -> None:
    ts = np.arange(10, dtype=np.int64) * 60
    with pytest.raises(ValueError, match="size"):
        plan_windows(ts, size=1, stride=1, step=60)
    with pytest.raises(ValueError, match="stride"):
        plan_windows(ts, size=3, stride=0, step=60)
    assert plan_windows(ts[:2], size=3, stride=1, step=60).starts.size == 0


def test_next_is_contiguous_marks_gaps_and_the_end() -> None:
    ts = np.array([0, 60, 120, 300, 360], dtype=np.int64)
    assert next_is_contiguous(ts, step=60).tolist() == [True, True, False, True, False]


def _features(n: int) -> dict[str, np.ndarray]:
    rsi = np.linspace(10, 90, n)
    return {"rsi": rsi, "ema_gap": np.zeros(n)}


def test_no_analysis_means_no_shaping() -> None:
    out = shaping_matrix(_features(20), np.full(20, 0.01), [])
    assert out.shape == (20, 3) and not out.any()


def test_a_buy_rule_shapes_only_buy_where_it_fires() -> None:
    n = 20
    feats = _features(n)
    rule = Rule((Condition("rsi", "<", 30.0),), BUY, 0.8, "oversold")
    w = WindowAnalysis(0, n, HOLD, 0.0, (rule,))
    out = shaping_matrix(feats, np.full(n, 0.01), [w], kappa=0.5)
    fires = feats["rsi"] < 30
    assert np.allclose(out[fires, BUY], 0.5 * 0.01 * 0.8)
    assert not out[~fires, BUY].any() and not out[:, SELL].any()
    # the window's overall call (HOLD, confidence 0) adds nothing
    assert not out[:, HOLD].any()


def test_window_calls_shape_only_their_own_candles_and_scale_with_kappa() -> None:
    n = 30
    sigma = np.full(n, 0.02)
    windows = [WindowAnalysis(0, 10, SELL, 0.6, ()), WindowAnalysis(5, 15, BUY, 1.0, ())]
    a = shaping_matrix(_features(n), sigma, windows, kappa=0.5)
    b = shaping_matrix(_features(n), sigma, windows, kappa=1.0)
    assert np.allclose(2 * a, b)
    assert not a[15:].any()
    assert np.isclose(a[2, SELL], 0.5 * 0.02 * 0.6)  # covered by the SELL window only
    assert np.isclose(a[7, SELL], 0.5 * 0.02 * 0.6 * 0.5)  # half of the covering calls
    assert np.isclose(a[7, BUY], 0.5 * 0.02 * 1.0 * 0.5)


def test_shaping_does_not_depend_on_the_order_of_windows() -> None:
    rng = np.random.default_rng(0)
    n = 200
    feats = {"rsi": rng.uniform(0, 100, n), "ema_gap": rng.normal(0, 2, n)}
    rules = (
        Rule((Condition("rsi", ">", 70.0),), SELL, 0.7, ""),
        Rule((Condition("ema_gap", ">", 0.0), Condition("rsi", "<", 60.0)), BUY, 0.5, ""),
    )
    ws = [WindowAnalysis(int(s), int(s) + 48, int(rng.integers(0, 3)), 0.5, rules) for s in range(0, 150, 24)]
    sigma = rng.uniform(0.005, 0.02, n)
    ref = shaping_matrix(feats, sigma, ws)
    assert np.allclose(ref, shaping_matrix(feats, sigma, ws[::-1]), rtol=1e-12, atol=0)


def test_negative_kappa_is_refused() -> None:
    with pytest.raises(ValueError, match="kappa"):
        shaping_matrix(_features(3), np.zeros(3), [], kappa=-1)
