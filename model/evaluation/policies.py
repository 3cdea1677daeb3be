"""Target-position generators for ``run_backtest``: position 0 (flat) or 1 (long) DECIDED at each
candle's close. All are causal (the value at t uses data up to t only) and vectorised.

Position dynamics are a scan over maps {0,1} -> {0,1}: each step is "set 1", "set 0", "keep" or
"flip". ``compose_position_maps`` evaluates it without a Python loop: the last "set" before t fixes
the position, and the parity of "flip"s since then inverts it.
"""

from __future__ import annotations

import numpy as np

from model import BUY, HOLD, SELL


def compose_position_maps(if_flat: np.ndarray, if_long: np.ndarray, *, initial: int = 0) -> np.ndarray:
    """Positions after each step, step t mapping 0 -> ``if_flat[t]`` and 1 -> ``if_long[t]``."""
    f0 = np.asarray(if_flat).astype(bool)
    f1 = np.asarray(if_long).astype(bool)
    if f0.shape != f1.shape or f0.ndim != 1:
        raise ValueError("if_flat and if_long must be 1-d arrays of the same length")
    if initial not in (0, 1):
        raise ValueError(f"initial must be 0 or 1, got {initial}")
    n = len(f0)
    is_set = f0 == f1
    flip = f0 & ~f1
    idx = np.arange(n)
    last_set = np.maximum.accumulate(np.where(is_set, idx, -1)) if n else idx
    flips = np.cumsum(flip)
    base = np.where(last_set >= 0, f0[np.maximum(last_set, 0)], bool(initial))
    flips_before_set = np.where(last_set >= 0, flips[np.maximum(last_set, 0)], 0)
    out: np.ndarray = (base ^ ((flips - flips_before_set) % 2 == 1)).astype(np.int8)
    return out


def positions_from_actions(actions: np.ndarray, *, initial: int = 0) -> np.ndarray:
    """Positions after actions: BUY -> long, SELL -> flat, HOLD keeps (a forward fill)."""
    a = np.asarray(actions)
    if a.ndim != 1:
        raise ValueError(f"actions must be 1-d, got shape {a.shape}")
    if not np.all((a == HOLD) | (a == BUY) | (a == SELL)):
        raise ValueError("actions must hold only HOLD (0), BUY (1) and SELL (2)")
    if_flat = a == BUY
    if_long = a != SELL
    return compose_position_maps(if_flat, if_long, initial=initial)


def buy_and_hold(n: int) -> np.ndarray:
    """Long from the first candle on (bought at the open of candle 1)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.ones(n, dtype=np.int8)


def random_policy(n: int, *, seed: int, p_trade: float = 0.05) -> np.ndarray:
    """Seeded baseline: at each candle BUY or SELL with probability ``p_trade`` (half each), else HOLD.

    Prefix-stable: the first k positions do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= p_trade <= 1.0:
        raise ValueError(f"p_trade must be in [0, 1], got {p_trade}")
    u = np.random.default_rng(seed).random(n)
    actions = np.where(u < p_trade / 2, BUY, np.where(u < p_trade, SELL, HOLD))
    return positions_from_actions(actions)


def sma(values: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average over ``window`` values, NaN in the first ``window - 1``; exact per window."""
    x = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = np.full(len(x), np.nan)
    if len(x) >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(x, window).mean(axis=1)
    return out


def crossover_actions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BUY where ``a`` crosses above ``b`` at t, SELL where below, else HOLD (backtesting.py crossover)."""
    actions = np.full(len(a), HOLD, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        up = (a[:-1] < b[:-1]) & (a[1:] > b[1:])
        down = (a[:-1] > b[:-1]) & (a[1:] < b[1:])
    actions[1:][up] = BUY
    actions[1:][down] = SELL
    return actions


def sma_crossover(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """Long after SMA(fast) crosses above SMA(slow), flat after it crosses below (event-based)."""
    if not 1 <= fast < slow:
        raise ValueError(f"need 1 <= fast < slow, got fast={fast} slow={slow}")
    return positions_from_actions(crossover_actions(sma(close, fast), sma(close, slow)))


def qtable_policy(q: np.ndarray, market_states: np.ndarray, *, initial: int = 0) -> np.ndarray:
    """Greedy Q-table positions: state s = m*2 + position, HOLD/BUY/SELL; market state -1 -> HOLD.

    Ties go to the lowest action index (HOLD first), as ``np.argmax``.
    """
    q = np.asarray(q, dtype=np.float64)
    m = np.asarray(market_states)
    if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] % 2:
        raise ValueError(f"q must have shape (2 * n_market, 3), got {q.shape}")
    n_market = q.shape[0] // 2
    if m.ndim != 1 or np.any((m < -1) | (m >= n_market)):
        raise ValueError(f"market_states must be 1-d ints in [-1, {n_market})")
    best = np.argmax(q, axis=1)
    ms = np.maximum(m, 0)
    a_flat = np.where(m < 0, HOLD, best[ms * 2])
    a_long = np.where(m < 0, HOLD, best[ms * 2 + 1])
    return compose_position_maps(a_flat == BUY, a_long != SELL, initial=initial)


def ensemble_policy(actions: np.ndarray, *, initial: int = 0) -> np.ndarray:
    """Positions from the ensemble's decided actions (``FastTradingModel`` output per candle)."""
    return positions_from_actions(actions, initial=initial)


def rules_actions(
    fired: np.ndarray, rule_actions: np.ndarray, rule_conf: np.ndarray, *, threshold: float = 0.0
) -> np.ndarray:
    """Net confidence vote of the fired rules: BUY above ``threshold``, SELL below ``-threshold``."""
    f = np.asarray(fired, dtype=bool)
    acts = np.asarray(rule_actions)
    conf = np.asarray(rule_conf, dtype=np.float64)
    if f.ndim != 2 or acts.shape != (f.shape[0],) or conf.shape != (f.shape[0],):
        raise ValueError("fired must be [n_rules, T] with rule_actions and rule_conf of length n_rules")
    sign = np.where(acts == BUY, 1.0, np.where(acts == SELL, -1.0, 0.0))
    vote = (sign * conf) @ f if f.shape[0] else np.zeros(f.shape[1])
    return np.where(vote > threshold, BUY, np.where(vote < -threshold, SELL, HOLD)).astype(np.int8)


def rules_policy(
    fired: np.ndarray, rule_actions: np.ndarray, rule_conf: np.ndarray, *, threshold: float = 0.0
) -> np.ndarray:
    """Positions of the heuristic analyst: its rules' net vote per candle, then the action scan."""
    return positions_from_actions(rules_actions(fired, rule_actions, rule_conf, threshold=threshold))
