"""Indicator speed: ``model.indicators.FastIndicators`` against TA-Lib in the same run.

Run from the repository root: ``.venv/bin/python bench/bench_indicators.py [--n 1000000] [--repeat 5]``.

Workload: ``n`` generated candles (``model.market.synthetic.make_candles``, seed 42). Each row times one
indicator with TA-Lib's defaults (best of ``--repeat`` runs, both libraries), checks that the two
agree after warm-up (1e-8 relative) and prints ms and the ratio ours / TA-Lib. A last row times a
naive one-candle-at-a-time Python EMA for reference (one run, it is slow). Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import talib  # noqa: E402

from model.features import compute_features  # noqa: E402
from model.indicators import FastIndicators as ind  # noqa: E402
from model.market.synthetic import make_candles  # noqa: E402

Result = np.ndarray | tuple[np.ndarray, ...]


def best_of(fn: Callable[[], Result], repeat: int) -> tuple[float, Result]:
    """Smallest wall time in seconds of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    assert out is not None
    return best, out


def naive_ema(x: np.ndarray, period: int) -> np.ndarray:
    """EMA with an SMA seed, one candle per Python iteration: the reference for 'no vectorisation'."""
    out = np.full(len(x), np.nan)
    alpha = 2.0 / (period + 1)
    y = float(np.mean(x[:period]))
    out[period - 1] = y
    for t in range(period, len(x)):
        y += alpha * (float(x[t]) - y)
        out[t] = y
    return out


def talib_features(h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """The eleven features from TA-Lib calls, for the ``compute_features`` row."""
    up, mid, low = talib.BBANDS(c, 20, 2, 2, 0)
    lr1 = np.log(talib.ROCR(c, 1))
    return (
        talib.RSI(c, 14),
        talib.MACD(c, 12, 26, 9)[2] / c * 100,
        (c - low) / (up - low),
        (up - low) / mid * 100,
        talib.ATR(h, lo, c, 14) / c * 100,
        (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20, 1),
        lr1 * 100,
        np.log(talib.ROCR(c, 24)) * 100,
        talib.STDDEV(lr1, 24, 1) * 100,
        (c / talib.EMA(c, 50) - 1) * 100,
        (talib.SMA(c, 10) / talib.SMA(c, 30) - 1) * 100,
    )


def agree(ours: Result, ref: Result) -> bool:
    """Same NaN pattern and values within 1e-8 relative (atol 1e-9 for values near zero)."""
    a = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    b = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    return bool(np.allclose(a, b, rtol=1e-8, atol=1e-9, equal_nan=True))


def row(name: str, ours_s: float, ref_s: float | None, ok: str = "") -> str:
    """One table line: name, ms ours, ms TA-Lib, ratio, agreement."""
    if ref_s is None:
        return f"{name:<32}{ours_s * 1e3:>10.1f}{'':>10}{'':>8}  {ok}"
    return f"{name:<32}{ours_s * 1e3:>10.1f}{ref_s * 1e3:>10.1f}{ours_s / ref_s:>8.1f}  {ok}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of generated candles")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row; the best is kept")
    args = parser.parse_args()
    candles = make_candles(args.n, seed=42)
    h, lo, c, v = candles.high, candles.low, candles.close, candles.volume
    rows: list[tuple[str, Callable[[], Result], Callable[[], Result]]] = [
        ("sma(close, 20)", lambda: ind.sma(c, 20), lambda: talib.SMA(c, 20)),
        ("ema(close, 50)", lambda: ind.ema(c, 50), lambda: talib.EMA(c, 50)),
        ("rsi(close, 14)", lambda: ind.rsi(c, 14), lambda: talib.RSI(c, 14)),
        ("macd(close, 12, 26, 9)", lambda: ind.macd(c), lambda: talib.MACD(c, 12, 26, 9)),
        ("bollinger(close, 20, 2)", lambda: ind.bollinger(c)[:3], lambda: talib.BBANDS(c, 20, 2, 2, 0)),
        ("atr(h, l, c, 14)", lambda: ind.atr(h, lo, c, 14), lambda: talib.ATR(h, lo, c, 14)),
        ("rolling_std(close, 20)", lambda: ind.rolling_std(c, 20), lambda: talib.STDDEV(c, 20, 1)),
        (
            "volume_zscore(volume, 20)",
            lambda: ind.volume_zscore(v, 20),
            lambda: (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20, 1),
        ),
        ("log_returns(close, 1)", lambda: ind.log_returns(c, 1), lambda: np.log(talib.ROCR(c, 1))),
        (
            "rolling_volatility(close, 24)",
            lambda: ind.rolling_volatility(c, 24),
            lambda: talib.STDDEV(np.log(talib.ROCR(c, 1)), 24, 1),
        ),
    ]
    print(f"{args.n:,} generated candles, best of {args.repeat} runs (ms)\n")
    print(f"{'indicator':<32}{'qtrain':>10}{'TA-Lib':>10}{'ratio':>8}  agree")
    total_ours = total_ref = 0.0
    for name, ours, ref in rows:
        t_ours, out_ours = best_of(ours, args.repeat)
        t_ref, out_ref = best_of(ref, args.repeat)
        total_ours += t_ours
        total_ref += t_ref
        ok = "yes" if agree(out_ours, out_ref) else "NO"
        print(row(name, t_ours, t_ref, ok))
    print(row("total (rows above)", total_ours, total_ref))
    t_ours, _ = best_of(lambda: tuple(compute_features(candles).values()), args.repeat)
    t_ref, _ = best_of(lambda: talib_features(h, lo, c, v), args.repeat)
    print(row("compute_features (11 features)", t_ours, t_ref))
    t_naive, out_naive = best_of(lambda: naive_ema(c, 50), 1)
    t_ours, out_ours = best_of(lambda: ind.ema(c, 50), args.repeat)
    print(
        row("naive Python-loop ema(close, 50)", t_naive, None, "yes" if agree(out_ours, out_naive) else "NO")
    )
    print(f"\nvectorised ema is {t_naive / t_ours:.0f}x faster than the Python loop")


if __name__ == "__main__":
    main()
