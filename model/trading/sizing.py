"""Volatility position sizing (issue 28, item 4): a smaller long position when recent volatility is
high, within the same HOLD/BUY/SELL decisions and long-only spot.

At each decision candle t (its close) the target size is ``clip(sig_ref / sig_t, floor, 1)``:
``sig_t`` the std of the last ``lookback`` log returns up to close t, ``sig_ref`` the median of
``sig`` over the table's TRAINING candles (known when the table is trained, so nothing of a test
range sets it). An entry buys the target size; while long, the held fraction is reset to the
target only when they differ by more than ``band`` (against churn from small changes); an exit
sells all. The parameters are those the rule of ``bench/vol_sizing.py`` fixed before its run.

Measured there (one simulator for every policy, fee 0.1% a side on every traded notional,
rebalances included): it won by its rule on both sets. It is NOT yet in the backtest, the paper
trader or ``signal`` (they trade 0/1 positions): wiring it there, with their parity test, is the
next step. Pure numpy; ``held_fractions`` is a loop because the band makes it path-dependent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class VolSizing:
    """The sizing's parameters: volatility ``lookback`` (candles), the smallest size ``floor`` and
    the rebalance ``band`` (fraction of equity)."""

    lookback: int = 168
    floor: float = 0.25
    band: float = 0.2

    def __post_init__(self) -> None:
        if self.lookback < 2:
            raise ValueError(f"lookback must be >= 2, got {self.lookback}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {self.floor}")
        if not 0.0 <= self.band < 1.0:
            raise ValueError(f"band must be in [0, 1), got {self.band}")


def trailing_sigma(close: NDArray[np.float64], lookback: int) -> NDArray[np.float64]:
    """Std (ddof 1) of the last ``lookback`` log returns up to each candle's close; NaN before
    there are that many. Reads nothing after the candle it is computed for."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(len(c), np.nan)
    if len(c) > lookback:
        r = np.diff(np.log(c))
        out[lookback:] = np.lib.stride_tricks.sliding_window_view(r, lookback).std(axis=1, ddof=1)
    return out


def target_sizes(sigma: NDArray[np.float64], sig_ref: float, sizing: VolSizing) -> NDArray[np.float64]:
    """Target size at each decision candle: ``clip(sig_ref / sigma, floor, 1)``; 1 where the
    volatility is unknown (warm-up) or ``sig_ref`` is not a positive number."""
    if not (np.isfinite(sig_ref) and sig_ref > 0):
        return np.ones(len(sigma))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.clip(sig_ref / np.asarray(sigma, dtype=np.float64), sizing.floor, 1.0)
    return np.where(np.isfinite(s), s, 1.0)


def held_fractions(
    positions: NDArray[np.integer], targets: NDArray[np.float64], sizing: VolSizing
) -> NDArray[np.float64]:
    """The fraction of equity held after each decision: 0 when flat; on entry the target; while
    long, the target again only when it has left the ``band`` around the fraction held."""
    pos = np.asarray(positions)
    tgt = np.asarray(targets, dtype=np.float64)
    if pos.shape != tgt.shape:
        raise ValueError(f"positions {pos.shape} and targets {tgt.shape} must have one shape")
    out = np.zeros(len(pos))
    w = 0.0
    for t in range(len(pos)):
        if pos[t] == 0:
            w = 0.0
        elif w == 0.0 or abs(tgt[t] - w) > sizing.band:
            w = float(tgt[t])
        out[t] = w
    return out
