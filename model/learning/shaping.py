"""Reward shaping from the LLM's analyses: how rules and calls nudge the Q-learning reward.

The reducer adds ``shaping[t, a]`` to the reward of taking action ``a`` at candle ``t``::

    shaping[t, a] = kappa * sigma_t * ( R[t, a] + W[t, a] )

    R[t, a] = sum over rules r of covering analyses, fired at t, with action a, of conf_r
              divided by max(1, number of rules fired at t)
    W[t, a] = mean over analyses covering t whose overall action is a, of their confidence,
              times the share of covering analyses that chose a

``sigma_t`` is the window's 1-candle return volatility (a fraction, NaN -> its median), so the bonus
is on the scale of the market returns it competes with; ``kappa`` (default 0.5) sets how far the
LLM may pull the learner away from realised, fee-net returns. A rule "covers" the candles of the
window it was written for (where the model saw the data). HOLD suggestions shape HOLD as well.
The sums run over analyses in window order, so the result does not depend on task completion order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.analyst.rules import Rule, fired

DEFAULT_KAPPA = 0.5


@dataclass(frozen=True)
class WindowAnalysis:
    """One analysed window for shaping: the candle index range it covers and the analysis parts."""

    start: int  # first candle index (inclusive) in the training series
    stop: int  # last candle index (exclusive)
    action: int
    confidence: float
    rules: tuple[Rule, ...]


def shaping_matrix(
    features: dict[str, np.ndarray],
    sigma: np.ndarray,
    windows: Sequence[WindowAnalysis],
    *,
    kappa: float = DEFAULT_KAPPA,
) -> np.ndarray:
    """The ``[T, 3]`` additive reward bonus defined in the module docstring."""
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    n = len(sigma)
    rule_votes = np.zeros((n, 3))
    rules_fired = np.zeros(n)
    call_conf = np.zeros((n, 3))
    call_count = np.zeros((n, 3))
    covering = np.zeros(n)
    for w in windows:
        lo, hi = max(w.start, 0), min(w.stop, n)
        if hi <= lo:
            continue
        covering[lo:hi] += 1
        call_conf[lo:hi, w.action] += w.confidence
        call_count[lo:hi, w.action] += 1
        if w.rules:
            part = {k: v[lo:hi] for k, v in features.items()}
            mask = fired(list(w.rules), part)  # [n_rules, hi-lo]
            conf = np.array([r.confidence for r in w.rules])
            acts = np.array([r.action for r in w.rules])
            rules_fired[lo:hi] += mask.sum(axis=0)
            for a in range(3):
                sel = acts == a
                if sel.any():
                    rule_votes[lo:hi, a] += (mask[sel] * conf[sel, None]).sum(axis=0)
    r = rule_votes / np.maximum(1.0, rules_fired)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(call_count > 0, call_conf / np.maximum(call_count, 1), 0.0)
        share = np.where(covering[:, None] > 0, call_count / np.maximum(covering, 1)[:, None], 0.0)
    s = np.where(np.isfinite(sigma), sigma, np.nan)
    fill = np.nanmedian(s) if np.isfinite(s).any() else 0.0
    s = np.where(np.isfinite(s), s, fill)
    out: np.ndarray = kappa * s[:, None] * (r + mean_conf * share)
    return out
