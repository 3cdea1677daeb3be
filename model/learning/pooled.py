"""Pooled counterfactual sweeps: one value iteration per symbol whose empirical market model is
shrunk toward the market model pooled over ALL symbols of a batch, instead of toward no edge only.

Why: the market states are scale-free indicators (RSI, %B, MACD and EMA gaps in % of price,
volume z-score), so a state means roughly the same on every pair, while one symbol's half-year
gives a few candles per state (about 4,400 candles over 960 states). Pooling S symbols gives each
state S times the data; a symbol's own data count only where they are plentiful.

Model (notation of ``model.learning.sweep``; ``s`` a symbol, ``sig_s`` the std of its training returns,
``k`` the prior strength, ``j`` the symbol strength, ``c_s`` the symbol's training turnover cost)::

    Q_s(m, p, a) = U_s(m, p') + S_s(m, a) - c_s * |p' - p|
    U_s(m, p')   = (A_s(m, p') + j * P_s(m, p')) / (n_s(m) + j)                  own data + pooled
    P_s(m, p')   = (sum_{t in m, all symbols} [p' * sig_s * r_t / sig_sym(t) + g * V_s(m_{t+1}, p')]
                    + k * U0_s(p')) / (N(m) + k)                                 pooled, then no edge
    U0_s(p')     = sum_{t, all symbols} g * V_s(m_{t+1}, p') / N                 (no drift term)

Returns are pooled in units of each symbol's own volatility (a z-score, rescaled to ``s``'s units),
so a volatile pair does not dominate the pooled mean; the analysts' shaping (already on the
volatility scale) is pooled the same way. The pooled model is evaluated with the symbol's OWN
values ``V_s`` (its cost differs), so each symbol gets its own table in the stored per-symbol
format. ``j = 0`` is each symbol alone (the pooled model only fills its unseen states); ``j = inf``
is the pooled model alone ("pooled without its per-symbol part": with equal costs every symbol
gets the same table).

Turnover cost, volatility-calibrated: ``c_s = max(turnover_cost, cost_per_sigma * sig_s)``. The
false edges a state shows on noise scale with the pair's volatility, so a fixed cost that keeps
BTC's table quiet lets a pair twice as volatile churn; ``cost_per_sigma`` keeps the bar in units of
the noise and ``turnover_cost`` (above the real 0.1% fee on purpose) keeps it above the fee. This
was chosen over a minimum hold or hysteresis in the policy because the cost lives in the learning:
the stored table is still read by the trader and the ensemble as an ordinary argmax, unchanged.

Nothing here reads time: the caller hands in each symbol's training arrays only (see
``model.learning.training.train_pooled``), so the no-leakage property is that of its inputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from model.learning.states import N_POSITIONS
from model.learning.sweep import N_ACTIONS, SweepStats


@dataclass(frozen=True)
class PooledRecipe:
    """Pooled sweeps (this module): each symbol's value iteration shrunk toward the model pooled
    over the batch's symbols with ``symbol_strength`` pseudo-candles (``None``, JSON-safe for the
    stored metadata, or ``math.inf``: the pooled model alone), the pooled model toward no edge
    with ``prior_strength``; turnover cost ``max(turnover_cost, cost_per_sigma * sigma)`` per
    symbol. Deterministic: no seed, no epochs. With one symbol it is a sweep whose prior is that
    symbol's own state means. Parameters chosen by the RULE of bench/pooled_research.py;
    ``gamma``, ``prior_strength`` and ``kappa`` are the ``sweep`` recipe's."""

    name: ClassVar[str] = "pooled"
    gamma: float = 0.9
    turnover_cost: float = 0.003
    cost_per_sigma: float = 0.35
    prior_strength: float = 5.0
    symbol_strength: float | None = 100.0
    kappa: float = 0.1


@dataclass(frozen=True)
class _Series:
    ms: NDArray[np.int64]  # market state of each valid step
    nxt: NDArray[np.int64]  # market state of the next step, -1 when terminal
    r: NDArray[np.float64]  # its return
    sh: NDArray[np.float64]  # its shaping [n, 3]
    n: int  # steps given (valid or not)
    sigma: float


def _series(m: Any, r: Any, sh: Any, n_market: int) -> _Series:
    m = np.asarray(m, dtype=np.int64)
    r = np.asarray(r, dtype=np.float64)
    sh = np.asarray(sh, dtype=np.float64)
    n = m.shape[0]
    if m.ndim != 1 or r.shape != (n,) or sh.shape != (n, N_ACTIONS):
        raise ValueError(
            f"need market_states (T,), returns (T,), shaping (T, 3); got {m.shape} {r.shape} {sh.shape}"
        )
    if n and (m.min() < -1 or m.max() >= n_market):
        raise ValueError(f"market_states must be in [-1, {n_market}), got [{m.min()}, {m.max()}]")
    valid = (m >= 0) & np.isfinite(r)
    idx = np.flatnonzero(valid)
    nxt = np.full(idx.shape, -1, dtype=np.int64)
    has = idx + 1 < n
    nxt[has] = np.where(valid[idx[has] + 1], m[idx[has] + 1], -1)
    rv = r[idx]
    sigma = float(np.std(rv)) if rv.size > 1 else 0.0
    return _Series(m[idx], nxt, rv, sh[idx], n, sigma)


def symbol_cost(sigma: float, *, turnover_cost: float, cost_per_sigma: float) -> float:
    """The training turnover cost of a symbol whose training returns have std ``sigma``."""
    return max(float(turnover_cost), float(cost_per_sigma) * float(sigma))


def _sums(ms: NDArray[np.int64], w: NDArray[np.float64], n_market: int) -> NDArray[np.float64]:
    return np.bincount(ms, weights=w, minlength=n_market).astype(np.float64)


def _transitions(
    ms: NDArray[np.int64], nxt: NDArray[np.int64], n_market: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Distinct live (m, m') pairs and their counts: the continuation sums in one bincount."""
    live = nxt >= 0
    key = ms[live] * n_market + nxt[live]
    uniq, counts = np.unique(key, return_counts=True)
    return uniq // n_market, uniq % n_market, counts.astype(np.float64)


def pooled_value_iteration(
    market_states: Sequence[NDArray[np.integer[Any]]],
    returns: Sequence[NDArray[np.floating[Any]]],
    shaping: Sequence[NDArray[np.floating[Any]]],
    *,
    n_market: int,
    gamma: float,
    turnover_cost: float,
    cost_per_sigma: float,
    prior_strength: float,
    symbol_strength: float,
    tol: float = 1e-10,
    max_sweeps: int = 20_000,
) -> list[tuple[NDArray[np.float64], NDArray[np.int64], SweepStats]]:
    """Per symbol (the order given): ``q[n_market * 2, 3]``, ``visits`` (the symbol's OWN training
    candles behind each entry) and stats of the model in the module docstring. Inputs as in
    ``model.learning.sweep.value_iteration``, one array per symbol."""
    if not (len(market_states) == len(returns) == len(shaping)) or not market_states:
        raise ValueError("need one market_states, returns and shaping array per symbol, at least one symbol")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for value iteration to converge, got {gamma}")
    for name, v in (
        ("turnover_cost", turnover_cost),
        ("cost_per_sigma", cost_per_sigma),
        ("prior_strength", prior_strength),
        ("symbol_strength", symbol_strength),
    ):
        if not v >= 0 or (math.isinf(v) and name != "symbol_strength"):
            raise ValueError(f"{name} must be finite and >= 0 (symbol_strength may be inf), got {v}")
    series = [_series(m, r, s, n_market) for m, r, s in zip(market_states, returns, shaping, strict=True)]
    # the pooled model in units of each symbol's volatility (z), rescaled per symbol below
    scale = [1.0 / s.sigma if s.sigma > 0 else 0.0 for s in series]
    ms_all = np.concatenate([s.ms for s in series])
    nxt_all = np.concatenate([s.nxt for s in series])
    z_all = np.concatenate([s.r * f for s, f in zip(series, scale, strict=True)])
    shz_all = np.concatenate([s.sh * f for s, f in zip(series, scale, strict=True)])
    big_n = np.bincount(ms_all, minlength=n_market).astype(np.float64)
    rz_pool = _sums(ms_all, z_all, n_market)
    shz_pool = np.stack([_sums(ms_all, shz_all[:, a], n_market) for a in range(N_ACTIONS)], 1)
    pool_tr = _transitions(ms_all, nxt_all, n_market)
    n_pool_steps = max(int(ms_all.size), 1)
    k, j = float(prior_strength), float(symbol_strength)
    pool_den = big_n + k
    pool_safe = np.where(pool_den > 0, pool_den, 1.0)
    out = []
    for s in series:
        t0 = time.perf_counter()
        c = symbol_cost(s.sigma, turnover_cost=turnover_cost, cost_per_sigma=cost_per_sigma)
        n_own = np.bincount(s.ms, minlength=n_market).astype(np.float64)
        own_tr = _transitions(s.ms, s.nxt, n_market)
        own_r = _sums(s.ms, s.r, n_market)
        own_sh = np.stack([_sums(s.ms, s.sh[:, a], n_market) for a in range(N_ACTIONS)], 1)
        pool_r = rz_pool * s.sigma  # pooled immediate reward of the long position, in s's units
        pool_sh = shz_pool * s.sigma / pool_safe[:, None]  # pooled shaping, shrunk toward 0 by k
        if math.isinf(j):
            w_own, w_pool = np.zeros(n_market), np.ones(n_market)
        else:
            den = n_own + j
            w_own = np.where(den > 0, 1.0 / np.where(den > 0, den, 1.0), 0.0)
            w_pool = np.where(den > 0, j * w_own, 1.0)
        s_bar = own_sh * w_own[:, None] + pool_sh * w_pool[:, None]
        q = np.zeros((n_market, N_POSITIONS, N_ACTIONS))
        sweeps, delta = 0, np.inf
        while sweeps < max_sweeps and delta > tol:
            v = gamma * q.max(axis=2)  # [m, p]
            pm, pn, pc = pool_tr
            csum_pool = np.stack([_sums(pm, pc * v[pn, p], n_market) for p in (0, 1)], 1)
            u0 = csum_pool.sum(axis=0) / n_pool_steps  # [p'] no-edge continuation
            pooled = (csum_pool + k * u0[None, :]) / pool_safe[:, None]
            pooled[:, 1] += pool_r / pool_safe
            pooled[pool_den <= 0] = u0
            om, on, oc = own_tr
            csum_own = np.stack([_sums(om, oc * v[on, p], n_market) for p in (0, 1)], 1)
            csum_own[:, 1] += own_r
            u = csum_own * w_own[:, None] + pooled * w_pool[:, None]
            new = np.empty_like(q)
            new[:, 0, 0] = u[:, 0] + s_bar[:, 0]
            new[:, 0, 1] = u[:, 1] + s_bar[:, 1] - c
            new[:, 0, 2] = u[:, 0] + s_bar[:, 2]
            new[:, 1, 0] = u[:, 1] + s_bar[:, 0]
            new[:, 1, 1] = u[:, 1] + s_bar[:, 1]
            new[:, 1, 2] = u[:, 0] + s_bar[:, 2] - c
            delta = float(np.max(np.abs(new - q)))
            q = new
            sweeps += 1
        visits = np.repeat(n_own.astype(np.int64), N_POSITIONS * N_ACTIONS).reshape(
            n_market * N_POSITIONS, N_ACTIONS
        )
        stats = SweepStats(
            sweeps=sweeps,
            converged=bool(delta <= tol),
            max_delta=delta,
            steps=int(s.ms.size),
            skipped=int(s.n - s.ms.size),
            states_seen=int((n_own > 0).sum()),
            warm_start_used=False,
            seconds=time.perf_counter() - t0,
        )
        out.append((q.reshape(n_market * N_POSITIONS, N_ACTIONS), visits, stats))
    return out
