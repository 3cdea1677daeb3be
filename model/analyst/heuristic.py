"""A deterministic analyst: rules from the indicators, no LLM, same ``Analysis`` as the model's.

It is the offline default of ``qtrain demo`` and the baseline that shows what the LLM adds.
Thresholds come from the window's own feature quantiles (bounded by textbook levels), so the
rules adapt to each window yet stay reproducible: same features -> same analysis.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from model import BUY, HOLD, SELL
from model.analyst.answer import MAX_RULES, Analysis
from model.analyst.rules import Condition, Rule

#: Window-mean thresholds for the regime: ema_gap (%) for a trend, volatility (%/candle) and
#: bb_width (%) for a volatile market.
TREND_EMA_GAP = 0.5
VOLATILE_VOLATILITY = 1.5
VOLATILE_BB_WIDTH = 8.0


def _finite(features: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in features:
        return np.zeros(0)
    x = np.asarray(features[name], dtype=np.float64)
    return x[np.isfinite(x)]


def _q(x: np.ndarray, q: float) -> float:
    return round(float(np.quantile(x, q)), 4)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def _regime(f: Mapping[str, np.ndarray]) -> str:
    vol, width = _finite(f, "volatility"), _finite(f, "bb_width")
    if _mean(vol) > VOLATILE_VOLATILITY or _mean(width) > VOLATILE_BB_WIDTH:
        return "volatile"
    gap, cross = _finite(f, "ema_gap"), _finite(f, "sma_cross")
    last_cross = float(cross[-1]) if cross.size else 0.0
    if _mean(gap) > TREND_EMA_GAP and last_cross > 0:
        return "bull"
    if _mean(gap) < -TREND_EMA_GAP and last_cross < 0:
        return "bear"
    return "range"


def _rules(f: Mapping[str, np.ndarray], regime: str) -> list[Rule]:
    rules: list[Rule] = []
    trend_conf = 0.6 if regime in ("bull", "bear") else 0.4
    revert_conf = 0.6 if regime == "range" else 0.4
    rsi = _finite(f, "rsi")
    if rsi.size:
        lo, hi = min(_q(rsi, 0.2), 35.0), max(_q(rsi, 0.8), 65.0)
        rules.append(
            Rule((Condition("rsi", "<", lo),), BUY, revert_conf, f"RSI below {lo}: oversold, revert")
        )
        rules.append(
            Rule((Condition("rsi", ">", hi),), SELL, revert_conf, f"RSI above {hi}: overbought, revert")
        )
    if _finite(f, "macd_hist").size and _finite(f, "ema_gap").size:
        up = (Condition("macd_hist", ">", 0.0), Condition("ema_gap", ">", 0.0))
        down = (Condition("macd_hist", "<", 0.0), Condition("ema_gap", "<", 0.0))
        rules.append(Rule(up, BUY, trend_conf, "MACD momentum up and price above EMA50: follow trend"))
        rules.append(Rule(down, SELL, trend_conf, "MACD momentum down and price below EMA50: follow trend"))
    pb = _finite(f, "bb_pct_b")
    if pb.size:
        lo, hi = min(_q(pb, 0.1), 0.1), max(_q(pb, 0.9), 0.9)
        rules.append(
            Rule((Condition("bb_pct_b", "<", lo),), BUY, revert_conf, "close at lower Bollinger band")
        )
        rules.append(
            Rule((Condition("bb_pct_b", ">", hi),), SELL, revert_conf, "close at upper Bollinger band")
        )
    cross = _finite(f, "sma_cross")
    if cross.size:
        lo, hi = min(_q(cross, 0.3), 0.0), max(_q(cross, 0.7), 0.0)
        rules.append(Rule((Condition("sma_cross", ">", hi),), BUY, trend_conf, "SMA10 well above SMA30"))
        rules.append(Rule((Condition("sma_cross", "<", lo),), SELL, trend_conf, "SMA10 well below SMA30"))
    return rules[:MAX_RULES]


def heuristic_analysis(features_window: Mapping[str, np.ndarray]) -> Analysis:
    """Analyse one window from its features alone (deterministic, no I/O)."""
    lengths = {len(np.asarray(v)) for v in features_window.values()}
    if len(lengths) > 1:
        raise ValueError(f"features_window columns differ in length: {sorted(lengths)}")
    regime = _regime(features_window)
    rsi = _finite(features_window, "rsi")
    last_rsi = float(rsi[-1]) if rsi.size else 50.0
    gap = abs(_mean(_finite(features_window, "ema_gap")))
    action, confidence = HOLD, 0.3
    if regime == "bull" and last_rsi < 70:
        action, confidence = BUY, min(0.3 + gap / 5.0, 0.9)
    elif regime == "bear" and last_rsi > 30:
        action, confidence = SELL, min(0.3 + gap / 5.0, 0.9)
    elif regime == "range" and last_rsi < 30:
        action, confidence = BUY, 0.5
    elif regime == "range" and last_rsi > 70:
        action, confidence = SELL, 0.5
    rules = _rules(features_window, regime)
    summary = (
        f"heuristic: {regime} regime, mean ema_gap {_mean(_finite(features_window, 'ema_gap')):.2f}%, "
        f"last RSI {last_rsi:.1f}; {len(rules)} rules from window quantiles"
    )
    return Analysis(regime, action, round(confidence, 3), tuple(rules), summary, {})
