"""The fixed feature set the rules, prompts and states read: names, definitions and warm-ups.

Every feature is float64, one value per candle, NaN during its warm-up, and causal (the value at
``t`` uses candles ``<= t`` only; a prefix of the candles gives bit-identical values). Percentages
are in percent units (``ret_1 = 0.5`` means +0.5 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from model.candles import Candles
from model.indicators import FastIndicators as ind

FloatArray = npt.NDArray[np.float64]

FEATURES: tuple[str, ...] = (
    "rsi",  # RSI 14 (Wilder), 0..100
    "macd_hist",  # MACD 12/26/9 histogram / close * 100
    "bb_pct_b",  # Bollinger 20, 2: (close - lower) / (upper - lower)
    "bb_width",  # Bollinger 20, 2: (upper - lower) / middle * 100
    "atr_pct",  # ATR 14 (Wilder) / close * 100
    "volume_z",  # (volume - SMA20) / std20 of volume (population std)
    "ret_1",  # 1-candle log return, %
    "ret_24",  # 24-candle log return, %
    "volatility",  # population std of 1-candle log returns over 24 candles, %
    "ema_gap",  # (close / EMA50 - 1) * 100
    "sma_cross",  # (SMA10 / SMA30 - 1) * 100
)

FEATURE_WARMUP: Mapping[str, int] = MappingProxyType(
    {
        "rsi": 14,
        "macd_hist": 26 + 9 - 2,
        "bb_pct_b": 20 - 1,
        "bb_width": 20 - 1,
        "atr_pct": 14,
        "volume_z": 20 - 1,
        "ret_1": 1,
        "ret_24": 24,
        "volatility": 24,
        "ema_gap": 50 - 1,
        "sma_cross": 30 - 1,
    }
)
"""Index of each feature's first value on gap-free candles (the number of leading NaNs)."""

WARMUP: int = max(FEATURE_WARMUP.values())
"""Leading candles where some feature is NaN (49, from the EMA50 of ``ema_gap``): rows
``WARMUP:`` of a gap-free series have every feature."""


def compute_features(candles: Candles) -> dict[str, FloatArray]:
    """All ``FEATURES`` of ``candles`` as float64 arrays of ``len(candles)`` (NaN in warm-up)."""
    close = np.asarray(candles.close, dtype=np.float64)
    high = np.asarray(candles.high, dtype=np.float64)
    low = np.asarray(candles.low, dtype=np.float64)
    volume = np.asarray(candles.volume, dtype=np.float64)
    with np.errstate(all="ignore"):
        _, _, hist = ind.macd(close, 12, 26, 9)
        _, _, _, pct_b, width = ind.bollinger(close, 20, 2.0)
        out = {
            "rsi": ind.rsi(close, 14),
            "macd_hist": hist / close * 100.0,
            "bb_pct_b": pct_b,
            "bb_width": width * 100.0,
            "atr_pct": ind.atr(high, low, close, 14) / close * 100.0,
            "volume_z": ind.volume_zscore(volume, 20),
            "ret_1": ind.log_returns(close, 1) * 100.0,
            "ret_24": ind.log_returns(close, 24) * 100.0,
            "volatility": ind.rolling_volatility(close, 24) * 100.0,
            "ema_gap": (close / ind.ema(close, 50) - 1.0) * 100.0,
            "sma_cross": (ind.sma(close, 10) / ind.sma(close, 30) - 1.0) * 100.0,
        }
    return {name: out[name] for name in FEATURES}


def feature_matrix(features: Mapping[str, npt.ArrayLike], names: Sequence[str] = FEATURES) -> FloatArray:
    """Stack ``features[name]`` for ``names`` into a float64 matrix ``[T, len(names)]``."""
    if len(names) == 0:
        raise ValueError("names must list at least one feature")
    missing = [name for name in names if name not in features]
    if missing:
        raise ValueError(f"names lists features that are absent: {missing}")
    cols = [np.asarray(features[name], dtype=np.float64) for name in names]
    lengths = {name: c.shape for name, c in zip(names, cols, strict=True)}
    if any(c.ndim != 1 for c in cols) or len({c.shape for c in cols}) > 1:
        raise ValueError(f"features must be 1-D arrays of one length, got shapes {lengths}")
    return np.column_stack(cols)
