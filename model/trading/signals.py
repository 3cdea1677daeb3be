"""Component scores of the ensemble, each in [-1, 1] (+1 buy pressure, -1 sell pressure).

NaN means "no data" (empty book, zero volume, warm-up): the ensemble leaves such a component out
instead of reading it as neutral.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from model.candles import Candles

FLOW_TAKER = "taker_buy"
FLOW_CLV_PROXY = "clv_proxy"


class FlowScores(NamedTuple):
    """Per-candle flow scores and where they came from: ``"taker_buy"`` or the ``"clv_proxy"``."""

    score: NDArray[np.float64]
    source: str


def _book_side(name: str, levels: Any, depth: int, *, descending: bool) -> NDArray[np.float64]:
    arr = np.asarray(levels, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be an array of [price, size] rows, got shape {arr.shape}")
    arr = arr[:, :2]
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] <= 0) or np.any(arr[:, 1] < 0):
        raise ValueError(f"{name} has NaN, inf, non-positive prices or negative sizes")
    order = np.argsort(-arr[:, 0] if descending else arr[:, 0], kind="stable")
    return arr[order][:depth]


def orderbook_score(bids: Any, asks: Any, *, depth: int = 10) -> float:
    """Depth imbalance ``(B - A) / (B + A)`` of the sizes in the best ``depth`` levels of each side.

    Bids and asks are ``[price, size]`` rows in any order (best levels are picked by price).
    NaN when both sides are empty (no book: the ensemble leaves the component out).
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    b = _book_side("bids", bids, depth, descending=True)
    a = _book_side("asks", asks, depth, descending=False)
    if b.size and a.size and b[0, 0] >= a[0, 0]:
        raise ValueError(f"crossed book: best bid {b[0, 0]} >= best ask {a[0, 0]}; check the bids/asks order")
    bv, av = float(b[:, 1].sum()), float(a[:, 1].sum())
    if bv + av <= 0:
        return float("nan")
    return (bv - av) / (bv + av)


def flow_score_from_trades(sizes: Any, is_buyer_maker: Any) -> float:
    """Taker imbalance ``(buy - sell) / (buy + sell)`` of a trade list; NaN when there is no volume.

    ``is_buyer_maker`` true means the buyer rested in the book, so the taker (aggressor) sold.
    """
    s = np.asarray(sizes, dtype=np.float64)
    maker = np.asarray(is_buyer_maker)
    if s.ndim != 1 or maker.shape != s.shape:
        raise ValueError(
            f"sizes and is_buyer_maker must be 1-D of one length, got {s.shape} and {maker.shape}"
        )
    if maker.size and maker.dtype != np.bool_:
        raise ValueError(f"is_buyer_maker must be bool, got {maker.dtype}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sizes has NaN, inf or negative values")
    total = float(s.sum())
    if total <= 0:
        return float("nan")
    sell = float(s[maker].sum())
    return (total - 2.0 * sell) / total


def _rolling_sum(x: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Causal sum over the last ``window`` rows; NaN for the first ``window-1`` rows or any NaN inside."""
    if window == 1:
        return x.copy()
    out = np.full(x.shape, np.nan)
    if x.size >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(x, window).sum(axis=1)
    return out


def flow_score_from_candles(candles: Candles, *, window: int = 1) -> FlowScores:
    """Buy/sell pressure per candle, summed over the last ``window`` candles (causal).

    With ``taker_buy_volume``: ``2 * taker / volume - 1`` (source ``"taker_buy"``), the share of
    volume bought by takers. Without it, a proxy: the volume-weighted close location value
    ``((c - l) - (h - c)) / (h - l)`` (source ``"clv_proxy"``; at window > 1 Chaikin money flow),
    which guesses pressure from where the candle closed in its range. NaN where volume or range is 0.
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    vol = np.asarray(candles.volume, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if candles.taker_buy_volume is not None:
            taker = np.asarray(candles.taker_buy_volume, dtype=np.float64)
            num, den, source = 2.0 * taker - vol, vol, FLOW_TAKER
        else:
            h = np.asarray(candles.high, dtype=np.float64)
            low = np.asarray(candles.low, dtype=np.float64)
            c = np.asarray(candles.close, dtype=np.float64)
            rng = h - low
            clv = np.where(rng > 0, ((c - low) - (h - c)) / np.where(rng > 0, rng, 1.0), np.nan)
            num, den, source = clv * vol, np.where(rng > 0, vol, np.nan), FLOW_CLV_PROXY
        num_s, den_s = _rolling_sum(num, int(window)), _rolling_sum(den, int(window))
        score = np.where(den_s > 0, num_s / np.where(den_s > 0, den_s, 1.0), np.nan)
    return FlowScores(np.clip(score, -1.0, 1.0), source)


# Technical score: the mean of the available (non-NaN) sub-scores below, each in [-1, 1]:
#   rsi        clip((50 - rsi) / 20)       mean reversion: RSI 30 -> +1, RSI 70 -> -1
#   bb_pct_b   clip(1 - 2 * %B)            mean reversion: lower band -> +1, upper band -> -1
#   macd_hist  tanh(macd_hist / 0.2)       trend: histogram in % of price, 0.2 % ~ 0.76
#   ema_gap    tanh(ema_gap / 2)           trend: 2 % above EMA50 ~ 0.76
TECHNICAL_PARTS: dict[str, str] = {
    "rsi": "clip((50 - rsi) / 20, -1, 1)",
    "bb_pct_b": "clip(1 - 2 * bb_pct_b, -1, 1)",
    "macd_hist": "tanh(macd_hist / 0.2)",
    "ema_gap": "tanh(ema_gap / 2)",
}


def technical_score(features: Mapping[str, NDArray[np.floating[Any]]]) -> NDArray[np.float64]:
    """Equal-weight mean of the rsi / bb_pct_b / macd_hist / ema_gap sub-scores present (see
    ``TECHNICAL_PARTS``); in [-1, 1], NaN on rows where none is available (warm-up)."""
    parts = []
    n = -1
    for name in TECHNICAL_PARTS:
        if name not in features:
            continue
        x = np.asarray(features[name], dtype=np.float64)
        if x.ndim != 1 or (n >= 0 and x.shape[0] != n):
            raise ValueError(
                f"feature {name!r} must be 1-D with {n if n >= 0 else 'the same'} rows, got {x.shape}"
            )
        n = x.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):  # huge values saturate at +-1
            if name == "rsi":
                parts.append(np.clip((50.0 - x) / 20.0, -1.0, 1.0))
            elif name == "bb_pct_b":
                parts.append(np.clip(1.0 - 2.0 * x, -1.0, 1.0))
            elif name == "macd_hist":
                parts.append(np.tanh(x / 0.2))
            else:
                parts.append(np.tanh(x / 2.0))
    if not parts:
        raise ValueError(f"features has none of {list(TECHNICAL_PARTS)}: compute the indicators first")
    stack = np.vstack(parts)
    ok = np.isfinite(stack)
    count = ok.sum(axis=0)
    total = np.where(ok, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
