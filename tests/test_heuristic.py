"""The heuristic analyst: deterministic, valid rules, sensible regimes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model import BUY, HOLD, SELL
from model.analyst.answer import MAX_RULES, REGIMES, Analysis, parse_answer
from model.analyst.heuristic import heuristic_analysis
from model.analyst.rules import fired, rule_from_json, rule_to_json
from model.features import FEATURES, compute_features
from model.market.synthetic import make_candles


def _check_valid(a: Analysis) -> None:
    assert a.regime in REGIMES and a.action in (HOLD, BUY, SELL)
    assert 0 <= a.confidence <= 1 and len(a.rules) <= MAX_RULES
    for r in a.rules:
        assert rule_from_json(json.loads(json.dumps(rule_to_json(r)))) == r
    # What the heuristic writes parses back without a single repair.
    again = parse_answer(json.dumps({k: v for k, v in a.to_json().items() if k != "repairs"}))
    assert again.repairs == {} and again.rules == a.rules


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_real_features_deterministic_and_valid(seed: int) -> None:
    candles = make_candles(600, seed=seed)
    feats = compute_features(candles)
    for start in range(60, 560, 97):
        fw = {k: v[start : start + 48] for k, v in feats.items()}
        a = heuristic_analysis(fw)
        assert a == heuristic_analysis({k: v.copy() for k, v in fw.items()})
        _check_valid(a)
        assert len(a.rules) >= 6
        # Thresholds come from the window: the RSI rules fire somewhere in most windows.
        assert fired(a.rules, fw).shape == (len(a.rules), 48)


def test_regimes_follow_the_trend() -> None:
    n = 48
    base = {name: np.zeros(n) for name in FEATURES}
    base["volatility"][:] = 0.5
    base["bb_width"][:] = 2.0
    base["rsi"][:] = 55.0
    bull = {**base, "ema_gap": np.full(n, 2.0), "sma_cross": np.full(n, 1.0)}
    bear = {**base, "ema_gap": np.full(n, -2.0), "sma_cross": np.full(n, -1.0)}
    wild = {**base, "volatility": np.full(n, 3.0)}
    assert heuristic_analysis(bull).regime == "bull" and heuristic_analysis(bull).action == BUY
    assert heuristic_analysis(bear).regime == "bear" and heuristic_analysis(bear).action == SELL
    assert heuristic_analysis(wild).regime == "volatile" and heuristic_analysis(wild).action == HOLD
    assert heuristic_analysis(base).regime == "range" and heuristic_analysis(base).action == HOLD
    oversold = {**base, "rsi": np.full(n, 20.0)}
    assert heuristic_analysis(oversold).action == BUY


def test_all_nan_and_missing_features() -> None:
    a = heuristic_analysis({name: np.full(10, np.nan) for name in FEATURES})
    assert a.rules == () and a.action == HOLD and a.regime == "range"
    assert heuristic_analysis({}).rules == ()
    with pytest.raises(ValueError, match="length"):
        heuristic_analysis({"rsi": np.zeros(3), "ema_gap": np.zeros(4)})


_col = hnp.arrays(
    np.float64,
    16,
    elements=st.floats(-1e4, 1e4, allow_nan=False) | st.just(float("nan")),
)


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries({name: _col for name in FEATURES}))
def test_any_features_give_valid_rules(fw: dict[str, np.ndarray]) -> None:
    a = heuristic_analysis(fw)
    _check_valid(a)
    assert a == heuristic_analysis(fw)
