"""``FastTradingModel``: the weighted ensemble of component scores that decides HOLD / BUY / SELL.

Each component gives a score in [-1, 1]. With ``A`` the components that have data (not None, not
NaN) and ``w`` their weights::

    score      = sum_A(w * s) / sum_A(w)            (weights renormalised over what is there)
    confidence = |sum_A(w * s)| / sum_A(w * |s|)     (agreement: 1 when all point the same way,
                                                      0 when they cancel; 0 if all scores are 0)

BUY if ``score >= buy_threshold`` and ``confidence >= min_confidence``, SELL if ``score <=
sell_threshold`` and ``confidence >= min_confidence``, else HOLD. Both numbers are ratios of
weighted sums, so scaling all weights by a constant changes no decision (both are rounded to
``DECIMALS`` places first, so float rounding of the weights cannot flip a decision at a threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import BUY, HOLD, SELL

COMPONENTS: tuple[str, ...] = ("technical", "orderbook", "flow", "qlearning", "llm")
#: The ensemble's thresholds: BUY above, SELL below (score), and the confidence a trade needs.
DEFAULT_BUY_THRESHOLD = 0.2
DEFAULT_SELL_THRESHOLD = -0.2
DEFAULT_MIN_CONFIDENCE = 0.3
DECIMALS = 12
"""Score and confidence are rounded to this many decimals before the thresholds are applied."""
DEFAULT_WEIGHTS: dict[str, float] = {
    "technical": 0.35,
    "orderbook": 0.30,
    "flow": 0.25,
    "qlearning": 0.10,
    "llm": 0.0,
}


@dataclass(frozen=True)
class Decision:
    """One ensemble decision and how it was reached (which components counted, with what weight)."""

    action: int
    confidence: float
    score: float
    components: dict[str, float] = field(default_factory=dict)
    weights_used: dict[str, float] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Decisions:
    """Row-wise decisions of ``decide_many``: int64 actions, float64 confidence and score (NaN: no data)."""

    action: NDArray[np.int64]
    confidence: NDArray[np.float64]
    score: NDArray[np.float64]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


class FastTradingModel:
    """Weighted ensemble of technical, order-book, flow, Q-learning and LLM scores (see module doc)."""

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        buy_threshold: float = DEFAULT_BUY_THRESHOLD,
        sell_threshold: float = DEFAULT_SELL_THRESHOLD,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> None:
        given = DEFAULT_WEIGHTS if weights is None else weights
        unknown = sorted(set(given) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"weights has unknown components {unknown}: use {list(COMPONENTS)}")
        w = {name: 0.0 for name in COMPONENTS}  # components not named get weight 0
        for name, value in given.items():
            v = _number(f"weights[{name!r}]", value)
            if v < 0:
                raise ValueError(f"weights[{name!r}] is negative ({v}): weights must be >= 0")
            w[name] = v
        if sum(w.values()) <= 0:
            raise ValueError("weights are all zero: give at least one component a positive weight")
        self.weights: dict[str, float] = w
        self.buy_threshold = _number("buy_threshold", buy_threshold)
        self.sell_threshold = _number("sell_threshold", sell_threshold)
        self.min_confidence = _number("min_confidence", min_confidence)
        if not self.sell_threshold < self.buy_threshold:
            raise ValueError(
                f"sell_threshold ({self.sell_threshold}) must be below buy_threshold ({self.buy_threshold})"
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    def _combine(self, scores: dict[str, NDArray[np.float64]], n: int) -> Decisions:
        num = np.zeros(n)
        den = np.zeros(n)
        agree = np.zeros(n)
        for name, raw in scores.items():
            ok = ~np.isnan(raw)
            # scores below the rounding resolution count as 0: w * 5e-324 underflows differently
            # for different weight scales and would make the agreement ratio scale-dependent
            s = np.where(np.abs(raw) < 10.0**-DECIMALS, 0.0, raw)
            w = self.weights[name]
            num += np.where(ok, w * np.where(ok, s, 0.0), 0.0)
            den += np.where(ok, w, 0.0)
            agree += np.where(ok, w * np.abs(np.where(ok, s, 0.0)), 0.0)
        has = den > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(has, num / np.where(has, den, 1.0), np.nan)
            # Agreement below the rounding resolution of the weights is none: a vote of 5e-324 * s
            # underflows differently at different weight scales (hypothesis found 0 vs 1).
            voted = agree > 10.0**-DECIMALS * den
            conf = np.where(voted, np.abs(num) / np.where(voted, agree, 1.0), 0.0)
        # Round away the last bits of float noise, so 0.35 * 0.2 / 0.35 is exactly 0.2 at a threshold
        # and scaling the weights cannot flip a decision; then a unanimous vote is exactly 1.
        score = np.asarray(np.round(score, DECIMALS), dtype=np.float64)
        conf = np.minimum(np.round(conf, DECIMALS), 1.0)
        sure = has & (conf >= self.min_confidence)
        action = np.full(n, HOLD, dtype=np.int64)
        action[sure & (score >= self.buy_threshold)] = BUY
        action[sure & (score <= self.sell_threshold)] = SELL
        return Decisions(action=action, confidence=conf, score=score)

    def decide(
        self,
        *,
        technical: float | None = None,
        orderbook: float | None = None,
        flow: float | None = None,
        qlearning: float | None = None,
        llm: float | None = None,
    ) -> Decision:
        """Decide from one set of component scores; None or NaN leaves a component out (renormalised)."""
        given = {
            "technical": technical,
            "orderbook": orderbook,
            "flow": flow,
            "qlearning": qlearning,
            "llm": llm,
        }
        present: dict[str, float] = {}
        for name, value in given.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(f"{name} score must be a number in [-1, 1] or None, got {value!r}")
            v = float(value)
            if math.isnan(v):
                continue
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} score must be in [-1, 1] (or None for no data), got {value!r}")
            present[name] = v
        missing = tuple(name for name in COMPONENTS if name not in present)
        total = sum(self.weights[name] for name in present)
        if total <= 0:
            raise ValueError(
                f"no component with a positive weight has data (given: {sorted(present) or 'none'}): "
                "pass at least one of " + ", ".join(n for n in COMPONENTS if self.weights[n] > 0)
            )
        d = self._combine({k: np.array([v]) for k, v in present.items()}, 1)
        weights_used = {name: self.weights[name] / total for name in present}
        dropped = [name for name in missing if self.weights[name] > 0]
        if dropped:
            note = f"no data for {', '.join(dropped)}: weights renormalised over {', '.join(present)}"
        else:
            note = "all weighted components present"
        return Decision(
            action=int(d.action[0]),
            confidence=float(d.confidence[0]),
            score=float(d.score[0]),
            components=present,
            weights_used=weights_used,
            missing=missing,
            note=note,
        )

    def decide_many(
        self,
        *,
        technical: NDArray[np.floating[Any]] | None = None,
        orderbook: NDArray[np.floating[Any]] | None = None,
        flow: NDArray[np.floating[Any]] | None = None,
        qlearning: NDArray[np.floating[Any]] | None = None,
        llm: NDArray[np.floating[Any]] | None = None,
    ) -> Decisions:
        """Row-wise ``decide`` over arrays (for backtests); NaN = no data at that row.

        Rows where no weighted component has data get HOLD, score NaN and confidence 0.
        """
        given = {
            "technical": technical,
            "orderbook": orderbook,
            "flow": flow,
            "qlearning": qlearning,
            "llm": llm,
        }
        scores: dict[str, NDArray[np.float64]] = {}
        n = -1
        for name, value in given.items():
            if value is None:
                continue
            s = np.asarray(value, dtype=np.float64)
            if s.ndim != 1 or (n >= 0 and s.shape[0] != n):
                raise ValueError(
                    f"{name} must be 1-D with {n if n >= 0 else 'the same'} rows, got shape {s.shape}"
                )
            n = s.shape[0]
            bad = ~np.isnan(s) & ~((s >= -1.0) & (s <= 1.0))
            if bad.any():
                raise ValueError(f"{name} has scores outside [-1, 1] (first at row {int(np.argmax(bad))})")
            scores[name] = s
        if not any(self.weights[name] > 0 for name in scores):
            raise ValueError(
                f"no component with a positive weight was given (given: {sorted(scores) or 'none'}): pass "
                "at least one of " + ", ".join(n for n in COMPONENTS if self.weights[n] > 0)
            )
        return self._combine(scores, n)
