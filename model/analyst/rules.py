"""The rule language the analysts (LLM or heuristic) write: data, never code.

A ``Rule`` is 1..3 ANDed ``Condition``s ``feature op value`` over the indicator features of
``model.features`` plus an action and a confidence. Rules are parsed from JSON strictly (no eval)
and evaluated vectorised over a whole feature series.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model import ACTIONS
from model.features import FEATURES

#: Comparison operators of the rule language, by their JSON spelling.
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
MAX_CONDITIONS = 3
MAX_RATIONALE_CHARS = 500


@dataclass(frozen=True)
class Condition:
    """``feature op value``, e.g. ``rsi < 30``."""

    feature: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"condition feature {self.feature!r} is not one of {', '.join(FEATURES)}")
        if self.op not in OPS:
            raise ValueError(f"condition op {self.op!r} is not one of {', '.join(OPS)}")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ValueError(f"condition value must be a number, got {self.value!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"condition value must be finite, got {self.value!r}")


@dataclass(frozen=True)
class Rule:
    """Conditions ANDed together; when all hold, the rule proposes ``action`` with ``confidence``."""

    conditions: tuple[Condition, ...]
    action: int
    confidence: float
    rationale: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.conditions, tuple) or not 1 <= len(self.conditions) <= MAX_CONDITIONS:
            raise ValueError(f"rule conditions must be a tuple of 1..{MAX_CONDITIONS} conditions")
        if not all(isinstance(c, Condition) for c in self.conditions):
            raise ValueError("rule conditions must all be Condition instances")
        if isinstance(self.action, bool) or self.action not in range(len(ACTIONS)):
            raise ValueError(f"rule action must be one of 0..{len(ACTIONS) - 1}, got {self.action!r}")
        conf = self.confidence
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= conf <= 1.0:
            raise ValueError(f"rule confidence must be a number in 0..1, got {conf!r}")
        if not isinstance(self.rationale, str):
            raise ValueError("rule rationale must be a string")


def _number(obj: Any, what: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise ValueError(f"{what} must be a number, got {obj!r}")
    return float(obj)


def rule_from_json(obj: Any) -> Rule:
    """Parse the JSON form of a rule strictly (any defect -> ValueError naming it).

    The lenient path for model output is ``model.analyst.answer.parse_answer``, which repairs first.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"rule must be a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - {"conditions", "action", "confidence", "rationale"}
    if unknown:
        raise ValueError(f"rule has unknown keys: {', '.join(sorted(unknown))}")
    conds = obj.get("conditions")
    if not isinstance(conds, list) or not 1 <= len(conds) <= MAX_CONDITIONS:
        raise ValueError(f"rule conditions must be a list of 1..{MAX_CONDITIONS} objects")
    parsed: list[Condition] = []
    for c in conds:
        if not isinstance(c, Mapping) or set(c) != {"feature", "op", "value"}:
            raise ValueError(f"condition must be an object with keys feature, op, value: {c!r}")
        if not isinstance(c["feature"], str) or not isinstance(c["op"], str):
            raise ValueError(f"condition feature and op must be strings: {c!r}")
        parsed.append(Condition(c["feature"], c["op"], _number(c["value"], "condition value")))
    action = obj.get("action")
    if action not in ACTIONS:
        raise ValueError(f"rule action must be one of {', '.join(ACTIONS)}, got {action!r}")
    confidence = _number(obj.get("confidence"), "rule confidence")
    rationale = obj.get("rationale", "")
    if not isinstance(rationale, str):
        raise ValueError("rule rationale must be a string")
    return Rule(tuple(parsed), ACTIONS.index(action), confidence, rationale)


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The JSON form of ``rule`` (round-trips through ``rule_from_json``)."""
    return {
        "conditions": [{"feature": c.feature, "op": c.op, "value": c.value} for c in rule.conditions],
        "action": ACTIONS[rule.action],
        "confidence": rule.confidence,
        "rationale": rule.rationale,
    }


def fired(rules: Sequence[Rule], features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Boolean ``[n_rules, T]``: where every condition of each rule holds (NaN -> not fired)."""
    needed = {c.feature for r in rules for c in r.conditions}
    missing = needed - set(features)
    if missing:
        raise ValueError(f"features has no column {', '.join(sorted(missing))}")
    lengths = {len(np.asarray(v)) for v in features.values()} or {0}
    if len(lengths) != 1:
        raise ValueError(f"features must all have the same length, got lengths {sorted(lengths)}")
    t = lengths.pop()
    out = np.ones((len(rules), t), dtype=bool)
    for i, rule in enumerate(rules):
        for c in rule.conditions:
            col = np.asarray(features[c.feature], dtype=np.float64)
            # NaN compares False under every operator, so a warm-up NaN never fires a rule.
            out[i] &= OPS[c.op](col, c.value)
    return out
