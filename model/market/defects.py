"""Defects of real candle series that importers and fetchers flag but keep (pure numpy).

A bad tick (e.g. an hourly high 4x the price) is kept, since deleting data would invent a gap,
and flagged ``OUTLIER_FLAG`` so a reader of ``btc.candles`` sees it: a candle whose range
``(high - low) / close`` exceeds ``OUTLIER_RANGE_FACTOR`` times the median range of its
``OUTLIER_NEIGHBOURS`` neighbours on each side.
"""

from __future__ import annotations

import numpy as np

OUTLIER_FLAG = "outlier_range"
OUTLIER_RANGE_FACTOR = 20.0
OUTLIER_NEIGHBOURS = 12


def outliers(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    factor: float = OUTLIER_RANGE_FACTOR,
    neighbours: int = OUTLIER_NEIGHBOURS,
) -> np.ndarray:
    """Bool mask of candles whose relative range exceeds ``factor`` x the median of their neighbours'.

    Needs at least ``neighbours`` neighbours in the window; a flat neighbourhood (median 0)
    never flags.
    """
    n = len(close)
    out = np.zeros(n, dtype=bool)
    if n < neighbours + 1:
        return out
    rr = (high - low) / close
    k = neighbours
    padded = np.pad(rr, (k, k), constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1).copy()
    windows[:, k] = np.nan
    med = np.nanmedian(windows, axis=1)
    flagged: np.ndarray = (med > 0) & (rr > factor * med)
    return flagged
