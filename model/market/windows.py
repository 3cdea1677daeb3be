"""Slicing a candle series into the market windows a batch analyses (gaps stay gaps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Start indices of the windows to analyse and how many were skipped for crossing a gap."""

    starts: np.ndarray  # int64 indices into the series; window i covers starts[i] : starts[i] + size
    size: int
    skipped: int


def plan_windows(ts: np.ndarray, *, size: int, stride: int, step: int) -> WindowPlan:
    """Windows of ``size`` candles every ``stride`` candles; those crossing a gap are skipped.

    A window is contiguous when each of its consecutive timestamps differs by exactly ``step``
    seconds. Vectorised: a cumulative count of breaks tells whether a window holds one.
    """
    if size < 2:
        raise ValueError(f"size must be >= 2 candles, got {size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if step < 1:
        raise ValueError(f"step must be >= 1 second, got {step}")
    n = len(ts)
    if n < size:
        return WindowPlan(np.zeros(0, dtype=np.int64), size, 0)
    breaks = np.concatenate(([0], np.cumsum(np.diff(ts) != step)))
    candidates = np.arange(0, n - size + 1, stride, dtype=np.int64)
    ok = breaks[candidates + size - 1] == breaks[candidates]
    return WindowPlan(candidates[ok], size, int((~ok).sum()))


def next_is_contiguous(ts: np.ndarray, *, step: int) -> np.ndarray:
    """Bool per candle: the next candle follows it without a gap (False for the last one)."""
    out = np.zeros(len(ts), dtype=bool)
    out[:-1] = np.diff(ts) == step
    return out
