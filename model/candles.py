"""The in-memory candle series every computation in ``model`` takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np


@dataclass(frozen=True)
class Candles:
    """OHLCV candles of one symbol and timeframe, oldest first.

    ``ts`` holds epoch seconds (UTC, int64) of each candle's open time. Optional columns are
    ``None`` when the source had no such data (never filled with invented values).
    """

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    taker_buy_volume: np.ndarray | None = None
    symbol: str = ""
    timeframe: str = "1h"

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"candles column {name!r} has {len(getattr(self, name))} rows, ts has {n}")
        if self.taker_buy_volume is not None and len(self.taker_buy_volume) != n:
            raise ValueError("candles column 'taker_buy_volume' length differs from ts")

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> Candles:
        """Rows ``start:stop`` as a new ``Candles`` (views, no copy)."""
        tbv = None if self.taker_buy_volume is None else self.taker_buy_volume[start:stop]
        return Candles(
            ts=self.ts[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            taker_buy_volume=tbv,
            symbol=self.symbol,
            timeframe=self.timeframe,
        )


TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds in one candle of ``timeframe`` (``1h`` -> 3600); ValueError names the known ones."""
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        known = ", ".join(TIMEFRAME_SECONDS)
        raise ValueError(f"unknown timeframe {timeframe!r}: use one of {known}") from None


def minute_utc(ts: int) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of an epoch second: how tables, reports and error lines show a time."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%d %H:%M")
