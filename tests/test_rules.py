"""The rule language: strict JSON parsing, validation, vectorised firing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model import BUY, HOLD, SELL
from model.analyst.rules import OPS, Condition, Rule, fired, rule_from_json, rule_to_json
from model.features import FEATURES


def _rule_json(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "conditions": [{"feature": "rsi", "op": "<", "value": 30.0}],
        "action": "BUY",
        "confidence": 0.7,
        "rationale": "oversold",
    }
    base.update(over)
    return base


def test_round_trip() -> None:
    obj = _rule_json(
        conditions=[
            {"feature": "rsi", "op": "<", "value": 30.0},
            {"feature": "ema_gap", "op": ">=", "value": -1.5},
        ]
    )
    rule = rule_from_json(obj)
    assert rule.action == BUY and rule.confidence == 0.7
    assert rule.conditions[1] == Condition("ema_gap", ">=", -1.5)
    assert rule_to_json(rule) == obj
    assert rule_from_json(rule_to_json(rule)) == rule


@pytest.mark.parametrize(
    "obj",
    [
        _rule_json(conditions=[]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<", "value": 1.0}] * 4),
        _rule_json(conditions=[{"feature": "stoch", "op": "<", "value": 1.0}]),
        _rule_json(conditions=[{"feature": "__import__('os')", "op": "<", "value": 1.0}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "==", "value": 1.0}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<", "value": "30"}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<", "value": True}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<", "value": float("nan")}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<"}]),
        _rule_json(conditions=[{"feature": "rsi", "op": "<", "value": 1.0, "x": 1}]),
        _rule_json(conditions="rsi < 30"),
        _rule_json(action="buy"),
        _rule_json(action=1),
        _rule_json(confidence=1.5),
        _rule_json(confidence=-0.1),
        _rule_json(confidence="0.5"),
        _rule_json(rationale=3),
        _rule_json(extra=1),
        [],
        "rule",
    ],
)
def test_rule_from_json_is_strict(obj: object) -> None:
    with pytest.raises(ValueError):
        rule_from_json(obj)


def test_dataclass_validation() -> None:
    with pytest.raises(ValueError, match="feature"):
        Condition("nope", "<", 1.0)
    with pytest.raises(ValueError, match="op"):
        Condition("rsi", "!=", 1.0)
    with pytest.raises(ValueError, match="value"):
        Condition("rsi", "<", float("inf"))
    c = Condition("rsi", "<", 1.0)
    with pytest.raises(ValueError, match="action"):
        Rule((c,), 3, 0.5)
    with pytest.raises(ValueError, match="conditions"):
        Rule((c, c, c, c), HOLD, 0.5)
    with pytest.raises(ValueError, match="confidence"):
        Rule((c,), SELL, 2.0)


def test_fired_small_example_and_nan() -> None:
    rsi = np.array([np.nan, 20.0, 40.0, 25.0, 80.0])
    gap = np.array([1.0, 1.0, 1.0, -1.0, np.nan])
    feats = {"rsi": rsi, "ema_gap": gap}
    rules = [
        Rule((Condition("rsi", "<", 30.0),), BUY, 0.5),
        Rule((Condition("rsi", "<", 30.0), Condition("ema_gap", ">", 0.0)), BUY, 0.5),
        Rule((Condition("rsi", ">=", 80.0),), SELL, 0.5),
    ]
    out = fired(rules, feats)
    assert out.dtype == bool and out.shape == (3, 5)
    assert out.tolist() == [
        [False, True, False, True, False],
        [False, True, False, False, False],
        [False, False, False, False, True],
    ]


def test_fired_errors_and_empty() -> None:
    r = Rule((Condition("rsi", "<", 30.0),), BUY, 0.5)
    with pytest.raises(ValueError, match="rsi"):
        fired([r], {"ema_gap": np.zeros(3)})
    with pytest.raises(ValueError, match="length"):
        fired([r], {"rsi": np.zeros(3), "ema_gap": np.zeros(4)})
    assert fired([], {"rsi": np.zeros(7)}).shape == (0, 7)


_values = st.floats(-200, 200, allow_nan=False) | st.just(float("nan"))
_cond = st.builds(
    Condition,
    st.sampled_from(FEATURES[:4]),
    st.sampled_from(list(OPS)),
    st.floats(-100, 100, allow_nan=False),
)
_rule = st.builds(
    Rule,
    st.lists(_cond, min_size=1, max_size=3).map(tuple),
    st.sampled_from([HOLD, BUY, SELL]),
    st.floats(0, 1),
)


@settings(max_examples=60, deadline=None)
@given(
    rules=st.lists(_rule, max_size=5),
    data=hnp.arrays(np.float64, st.tuples(st.just(4), st.integers(0, 30)), elements=_values),
)
def test_fired_matches_scalar_loop(rules: list[Rule], data: np.ndarray) -> None:
    feats = {name: data[i] for i, name in enumerate(FEATURES[:4])}
    out = fired(rules, feats)
    ops = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    for i, rule in enumerate(rules):
        for t in range(data.shape[1]):
            want = all(
                not np.isnan(feats[c.feature][t]) and ops[c.op](feats[c.feature][t], c.value)
                for c in rule.conditions
            )
            assert out[i, t] == want
