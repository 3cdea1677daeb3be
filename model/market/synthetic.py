"""Seeded synthetic candles: for the demo, the tests and the benchmarks (no data files needed)."""

from __future__ import annotations

import numpy as np

from model.candles import Candles

DEFAULT_START = 1_704_067_200  # 2024-01-01T00:00:00Z


def make_candles(
    n: int,
    *,
    seed: int = 42,
    start: int = DEFAULT_START,
    step: int = 3600,
    price: float = 30_000.0,
    vol: float = 0.01,
    symbol: str = "BTC-USDT",
    timeframe: str = "1h",
    with_taker: bool = True,
) -> Candles:
    """A geometric random walk with regime-switching drift, valid OHLC bounds and volumes.

    Same ``n`` and ``seed`` give the same candles on every machine.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    regime = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=n // 200 + 1), 200)[:n]
    rets = rng.normal(regime * vol * 0.05, vol, size=n)
    close = price * np.exp(np.cumsum(rets))
    open_ = np.empty(n)
    open_[0] = price
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0.0, vol * 0.5, size=(2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    volume = rng.lognormal(mean=3.0, sigma=0.5, size=n) * (1.0 + 20.0 * np.abs(rets))
    taker = volume * np.clip(0.5 + 5.0 * rets + rng.normal(0, 0.05, n), 0.0, 1.0) if with_taker else None
    ts = start + step * np.arange(n, dtype=np.int64)
    return Candles(ts, open_, high, low, close, volume, taker, symbol=symbol, timeframe=timeframe)
