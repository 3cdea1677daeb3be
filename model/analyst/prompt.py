"""The analyst's prompt: compact, versioned, deterministic; and the cache key of an analysis.

The user message is an indicator summary of the window (price path, returns, volatility, trend,
first/last/min/max/mean of every feature, a few recent closes), never a dump of rows, so a 48-candle
window costs a few hundred tokens. Same input -> byte-identical messages. Bump ``PROMPT_VERSION``
whenever the text changes: it is part of the cache key, so old analyses are not reused for a new
prompt.

Two styles (``QTRAIN_PROMPT``). ``anonymous``, the default (version ``PROMPT_VERSION``), carries
nothing that identifies the asset or the calendar: no symbol, no dates or times, no absolute price
or volume. Prices are an index (the window's first close = 100), moves are returns in %, volume is
a z-score; the timeframe and the candle count stay. A model trained on the web remembers what
BTC did after 2020-03-12: on history, a prompt naming the asset and the dates lets that memory
leak the future into the analyses, which no feature check can see. ``named`` (version
``NAMED_PROMPT_VERSION``) is the earlier text with symbol, dates and prices, kept to measure that
leak (``qtrain llm check``), never to train with. The style is part of the cache key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from model import ACTIONS
from model.analyst.answer import (
    ASKED_RATIONALE_CHARS,
    ASKED_REASONING_CHARS,
    ASKED_RULES,
    ASKED_SUMMARY_CHARS,
    REGIMES,
)
from model.analyst.rules import MAX_CONDITIONS, OPS
from model.candles import Candles
from model.features import FEATURES

#: Version of the anonymous prompt (the default style); bump it when its text changes.
PROMPT_VERSION: int = 4
#: Version of the named prompt (symbol, dates, absolute prices): the v3 text, unchanged.
NAMED_PROMPT_VERSION: int = 3
PROMPT_STYLES: tuple[str, ...] = ("anonymous", "named")
DEFAULT_PROMPT_STYLE = "anonymous"
N_RECENT_CLOSES = 8
#: The price index of the anonymous prompt: the window's first close is this value.
INDEX_BASE = 100.0

#: Meaning and typical range of each feature, as the model is told.
FEATURE_INFO: dict[str, str] = {
    "rsi": "RSI(14, Wilder), 0..100; <30 oversold, >70 overbought",
    "macd_hist": "MACD(12,26,9) histogram as % of close, about -1..1; >0 bullish momentum",
    "bb_pct_b": "Bollinger(20,2) %B, about -0.5..1.5; <0 below lower band, >1 above upper band",
    "bb_width": "Bollinger band width as % of middle band, about 1..15",
    "atr_pct": "ATR(14) as % of close, about 0.2..3",
    "volume_z": "volume z-score vs 20-candle mean, about -2..5",
    "ret_1": "1-candle log return in %, about -3..3",
    "ret_24": "24-candle log return in %, about -15..15",
    "volatility": "std of 1-candle log returns over 24 candles in %, about 0.2..3",
    "ema_gap": "close vs EMA50 in %, about -10..10; >0 above trend",
    "sma_cross": "SMA10 vs SMA30 in %, about -5..5; >0 short trend above long",
}


def _fmt(x: float, digits: int = 2) -> str:
    """Fixed-precision text of ``x``; ``na`` for NaN/inf (deterministic on every machine)."""
    if not math.isfinite(x):
        return "na"
    text = f"{x:.{digits}f}"
    return "0" if text.strip("-0.") == "" else text


def _price(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else "na"


def prompt_version(style: str) -> int:
    """The prompt version of ``style`` (``anonymous`` -> ``PROMPT_VERSION``, ``named`` -> 3)."""
    _check_style(style)
    return PROMPT_VERSION if style == "anonymous" else NAMED_PROMPT_VERSION


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")


def _system_message(style: str = "named") -> str:
    """The fixed instructions, byte-identical for every window (servers reuse their cached prefix).

    The answer is a window's cost (decoding dominates the GPU time), so it is asked short: at most
    ``ASKED_RULES`` rules, a rationale of a few words, a one-sentence summary; the schema bounds the
    same where the server's grammar honours it (a small model fills the rules up to the bound)."""
    features = "\n".join(f"- {name}: {FEATURE_INFO.get(name, 'indicator')}" for name in FEATURES)
    return (
        "You are a quantitative crypto analyst. Read the indicator summary of one market window and "
        "answer with ONE JSON object, no prose, no code fences:\n"
        f'{{"regime": one of {"|".join(REGIMES)}, "action": one of {"|".join(ACTIONS)} for the next '
        f'candles, "confidence": number 0..1, "rules": list of at most {ASKED_RULES} trading rules, '
        f'"summary": one short sentence (at most {ASKED_SUMMARY_CHARS} characters)}}.\n'
        f'A rule is {{"conditions": 1..{MAX_CONDITIONS} objects {{"feature", "op", "value"}} that must '
        'ALL hold, "action": BUY|SELL|HOLD, "confidence": 0..1, "rationale": a few words (at most '
        f"{ASKED_RATIONALE_CHARS} characters)}}.\n"
        f"Operators: {' '.join(OPS)}. Values are plain numbers in the feature's own unit.\n"
        f"Features (use only these names):\n{features}\n"
        "Write rules that would have been useful in this window and generalise to similar ones."
        + (_ANONYMOUS_NOTE if style == "anonymous" else "")
    )


_REASON_FIRST_NOTE = (
    '\nStart the object with "reasoning": what the window shows, in a few words (at most '
    f"{ASKED_REASONING_CHARS} characters), then the other fields."
)

_ANONYMOUS_NOTE = (
    "\nThe market is not named and the window is not dated: prices are an index (the window's first "
    "close = 100), moves are returns in %, volume is a z-score. Judge the window from these numbers."
)


def _stats(x: np.ndarray) -> str:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return "na"
    first, last = finite[0], finite[-1]
    return (
        f"first {_fmt(first)} last {_fmt(last)} min {_fmt(finite.min())} "
        f"max {_fmt(finite.max())} mean {_fmt(finite.mean())}"
    )


def _feature_lines(features: Mapping[str, np.ndarray]) -> list[str]:
    """One line of statistics per feature the window has, in ``FEATURES`` order (both prompt styles)."""
    return [f"- {n}: {_stats(np.asarray(features[n], dtype=np.float64))}" for n in FEATURES if n in features]


def _anonymous_user_message(candles: Candles, features: Mapping[str, np.ndarray], timeframe: str) -> str:
    """The window as the anonymous prompt shows it: timeframe, candle count, a price index, returns,
    feature statistics (all ratios, percentages or z-scores); no symbol, date or absolute price.

    Every price number is a ratio to the first close, so scaling the prices changes nothing."""
    close = np.asarray(candles.close, dtype=np.float64)
    n = len(close)
    base = float(close[0])
    index = close / base * INDEX_BASE
    logret = np.log(close[1:] / close[:-1]) * 100.0
    total = float(np.log(close[-1] / base) * 100.0)
    vol = float(logret.std()) if logret.size else float("nan")
    # Trend: least-squares slope of log(close / first close), in % per candle.
    slope = float(np.polyfit(np.arange(n), np.log(close / base), 1)[0] * 100.0)
    high = float(np.max(candles.high)) / base * INDEX_BASE
    low = float(np.min(candles.low)) / base * INDEX_BASE
    up = int(np.sum(logret > 0))
    recent = " ".join(_fmt(float(c), 1) for c in index[-N_RECENT_CLOSES:])
    lines = [
        f"{n} candles of {timeframe}",
        f"close index (first close = {_fmt(INDEX_BASE, 0)}): last {_fmt(float(index[-1]), 1)} "
        f"high {_fmt(high, 1)} low {_fmt(low, 1)}",
        f"return {_fmt(total)}% trend {_fmt(slope, 3)}%/candle volatility {_fmt(vol, 3)}%/candle, "
        f"{up} of {n - 1} candles up",
        f"last {min(n, N_RECENT_CLOSES)} closes (index): {recent}",
        "features (over the window):",
        *_feature_lines(features),
    ]
    return "\n".join(lines)


def _user_message(candles: Candles, features: Mapping[str, np.ndarray], symbol: str, timeframe: str) -> str:
    close = np.asarray(candles.close, dtype=np.float64)
    n = len(close)
    start = datetime.fromtimestamp(int(candles.ts[0]), tz=UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(int(candles.ts[-1]), tz=UTC).strftime("%Y-%m-%d %H:%M")
    logret = np.diff(np.log(close)) * 100.0 if n > 1 else np.zeros(0)
    total = float(np.log(close[-1] / close[0]) * 100.0)
    vol = float(logret.std()) if logret.size else float("nan")
    # Trend: least-squares slope of log close, in % per candle.
    slope = float(np.polyfit(np.arange(n), np.log(close), 1)[0] * 100.0) if n > 1 else float("nan")
    high = float(np.max(candles.high))
    low = float(np.min(candles.low))
    up = int(np.sum(logret > 0))
    recent = " ".join(_price(float(c)) for c in close[-N_RECENT_CLOSES:])
    lines = [
        f"{symbol} {timeframe}, {n} candles, {start} .. {end} UTC",
        f"close first {_price(float(close[0]))} last {_price(float(close[-1]))} "
        f"high {_price(high)} low {_price(low)}",
        f"return {_fmt(total)}% trend {_fmt(slope, 3)}%/candle volatility {_fmt(vol, 3)}%/candle "
        f"up candles {up}/{max(n - 1, 0)}",
        f"last {min(n, N_RECENT_CLOSES)} closes: {recent}",
        "features (over the window):",
        *_feature_lines(features),
    ]
    return "\n".join(lines)


def build_messages(
    candles_window: Candles,
    features_window: Mapping[str, np.ndarray],
    *,
    symbol: str,
    timeframe: str,
    style: str = DEFAULT_PROMPT_STYLE,
    reason_first: bool = False,
) -> list[dict[str, str]]:
    """Chat messages (system + user) asking for an analysis of one window; deterministic text.

    ``style`` is ``anonymous`` (default: no symbol, date or absolute price) or ``named``; the
    system message is the same for every window of a style. ``reason_first`` asks for a short
    ``reasoning`` before the structured fields (with ``model.analyst.answer.REASONED_SCHEMA``; an
    experiment)."""
    _check_style(style)
    if len(candles_window) < 2:
        raise ValueError(f"candles_window must have at least 2 candles, got {len(candles_window)}")
    for name, col in features_window.items():
        if len(col) != len(candles_window):
            raise ValueError(
                f"features_window[{name!r}] has {len(col)} rows, candles_window has {len(candles_window)}"
            )
    if not symbol:
        raise ValueError("symbol must be non-empty")
    if style == "anonymous":
        user = _anonymous_user_message(candles_window, features_window, timeframe)
    else:
        user = _user_message(candles_window, features_window, symbol, timeframe)
    system = _system_message(style) + (_REASON_FIRST_NOTE if reason_first else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def window_content_hash(candles_window: Candles, *, symbol: str, timeframe: str) -> str:
    """sha256 (hex) of the window's exact ts + OHLCV bytes, symbol and timeframe.

    Features also depend on the warm-up candles before the window; those are fixed by
    ``(symbol, timeframe, ts)`` as long as stored history is not rewritten.
    """
    h = hashlib.sha256()
    h.update(f"qtrain-window-v1\0{symbol}\0{timeframe}\0{len(candles_window)}\0".encode())
    h.update(np.ascontiguousarray(candles_window.ts, dtype="<i8").tobytes())
    for name in ("open", "high", "low", "close", "volume"):
        h.update(np.ascontiguousarray(getattr(candles_window, name), dtype="<f8").tobytes())
    return h.hexdigest()


def window_content_hashes(
    candles: Candles, lo: np.ndarray, hi: np.ndarray, *, symbol: str, timeframe: str
) -> list[str]:
    """``window_content_hash`` of ``candles[lo[k]:hi[k]]`` for every k, identical digests, in bulk.

    Each column is converted to little-endian bytes once for the whole series and each window
    hashes slices of those buffers (no per-window array copies): the hashing itself, sha256 over
    different byte ranges, is the only per-window work left.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if lo.shape != hi.shape or np.any(lo < 0) or np.any(hi > len(candles)) or np.any(lo > hi):
        raise ValueError("lo and hi must be equal-length index arrays with 0 <= lo <= hi <= len(candles)")
    cols = [memoryview(np.ascontiguousarray(candles.ts, dtype="<i8").tobytes())]
    for name in ("open", "high", "low", "close", "volume"):
        cols.append(memoryview(np.ascontiguousarray(getattr(candles, name), dtype="<f8").tobytes()))
    prefix = f"qtrain-window-v1\0{symbol}\0{timeframe}\0"
    sha256 = hashlib.sha256
    out = []
    for a, b in zip((lo * 8).tolist(), (hi * 8).tolist(), strict=True):
        h = sha256(f"{prefix}{(b - a) // 8}\0".encode())
        for col in cols:
            h.update(col[a:b])
        out.append(h.hexdigest())
    return out


def cache_key(content_hash: str, model: str, prompt_version: int, style: str) -> str:
    """sha256 (hex) identifying one analysis: window content + model + prompt version + prompt style
    (an analysis made under one style is never reused for the other)."""
    if not content_hash or not model:
        raise ValueError("content_hash and model must be non-empty")
    _check_style(style)
    text = f"{content_hash}\0{model}\0{int(prompt_version)}\0{style}"
    return hashlib.sha256(text.encode()).hexdigest()
