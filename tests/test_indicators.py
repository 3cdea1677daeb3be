"""FastIndicators against TA-Lib (real and generated candles), a plain-loop reference, golden values."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from model.indicators import FastIndicators as ind
from model.market.synthetic import make_candles
from tests.conftest import shared_csv

Series = dict[str, np.ndarray]


def load_hlcv(path: Path) -> Series:
    """high/low/close/volume of a CryptoDataDownload CSV: ascending, first row of a duplicated time."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    start = next(i for i, r in enumerate(rows) if r and r[0].lower().startswith("unix")) + 1
    data = [r for r in rows[start:] if r]
    ts = np.array([float(r[0]) for r in data])
    ts = np.where(ts > 1e11, ts / 1000.0, ts)  # mixed milliseconds and float seconds
    cols = np.array([[float(r[k]) for k in (4, 5, 6, 7)] for r in data])
    order = np.argsort(ts, kind="stable")
    ts, cols = ts[order], cols[order]
    keep = np.concatenate(([True], ts[1:] != ts[:-1]))
    cols = cols[keep]
    return {
        name: np.ascontiguousarray(cols[:, i]) for i, name in enumerate(("high", "low", "close", "volume"))
    }


def synthetic(seed: int, n: int = 3000) -> Series:
    c = make_candles(n, seed=seed)
    return {"high": c.high, "low": c.low, "close": c.close, "volume": c.volume}


@pytest.fixture(
    scope="module",
    params=["real:Binance_BTCUSDT_1h.csv", "real:Binance_ETHUSDT_1h.csv", "syn:0", "syn:1", "syn:7"],
)
def hlcv(request: pytest.FixtureRequest) -> Series:
    kind, arg = request.param.split(":")
    if kind == "real":
        return load_hlcv(shared_csv(arg))
    return synthetic(int(arg))


def close_to_talib(ours: np.ndarray, ref: np.ndarray, *, warmup: int, scale: float) -> None:
    """NaN exactly in the warm-up, then within 1e-8 relative of TA-Lib (atol 1e-12 of the input scale)."""
    assert np.isnan(ours[:warmup]).all()
    assert np.isnan(ref[:warmup]).all()
    assert np.isfinite(ours[warmup:]).all()
    np.testing.assert_allclose(ours[warmup:], ref[warmup:], rtol=1e-8, atol=1e-12 * scale)


@pytest.mark.parametrize("period", [1, 2, 5, 14, 50])
def test_sma_ema_match_talib(hlcv: Series, period: int) -> None:
    c = hlcv["close"]
    close_to_talib(ind.sma(c, period), talib.SMA(c, period), warmup=period - 1, scale=c.max())
    close_to_talib(ind.ema(c, period), talib.EMA(c, period), warmup=period - 1, scale=c.max())


@pytest.mark.parametrize("period", [2, 14, 30])
def test_rsi_matches_talib(hlcv: Series, period: int) -> None:
    c = hlcv["close"]
    close_to_talib(ind.rsi(c, period), talib.RSI(c, period), warmup=period, scale=100.0)


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (3, 10, 1)])
def test_macd_matches_talib(hlcv: Series, fast: int, slow: int, signal: int) -> None:
    c = hlcv["close"]
    ours = ind.macd(c, fast, slow, signal)
    ref = talib.MACD(c, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    for o, r in zip(ours, ref, strict=True):
        close_to_talib(o, r, warmup=slow + signal - 2, scale=c.max())


@pytest.mark.parametrize(("period", "k"), [(20, 2.0), (10, 1.5)])
def test_bollinger_matches_talib(hlcv: Series, period: int, k: float) -> None:
    c = hlcv["close"]
    upper, middle, lower, pct_b, width = ind.bollinger(c, period, k)
    t_up, t_mid, t_low = talib.BBANDS(c, period, k, k, 0)
    for o, r in ((upper, t_up), (middle, t_mid), (lower, t_low)):
        close_to_talib(o, r, warmup=period - 1, scale=c.max())
    close_to_talib(width, (t_up - t_low) / t_mid, warmup=period - 1, scale=1.0)
    flat = t_up == t_low  # real data has hours with no trade: TA-Lib divides by zero there
    with np.errstate(all="ignore"):
        t_pct = np.where(flat, 0.5, (c - t_low) / (t_up - t_low))
    close_to_talib(pct_b, t_pct, warmup=period - 1, scale=1.0)


@pytest.mark.parametrize("period", [1, 5, 14])
def test_atr_matches_talib(hlcv: Series, period: int) -> None:
    h, lo, c = hlcv["high"], hlcv["low"], hlcv["close"]
    ref = talib.ATR(h, lo, c, period) if period > 1 else talib.TRANGE(h, lo, c)
    close_to_talib(ind.atr(h, lo, c, period), ref, warmup=period, scale=c.max())


@pytest.mark.parametrize("period", [2, 20])
def test_rolling_std_and_volume_zscore_match_talib(hlcv: Series, period: int) -> None:
    v, c = hlcv["volume"], hlcv["close"]
    close_to_talib(ind.rolling_std(c, period), talib.STDDEV(c, period, 1), warmup=period - 1, scale=c.max())
    std = talib.STDDEV(v, period, 1)
    with np.errstate(all="ignore"):
        ref = np.where(std == 0, 0.0, (v - talib.SMA(v, period)) / std)
    if period > 2:
        close_to_talib(ind.volume_zscore(v, period), ref, warmup=period - 1, scale=1.0)
    else:  # two values: z is exactly +-1 (0 if equal); TA-Lib's running sums are off by up to ~1e-8 here
        exact = np.sign(v[1:] - v[:-1])
        np.testing.assert_allclose(ind.volume_zscore(v, 2)[1:], exact, rtol=1e-11)
        np.testing.assert_allclose(ref[1:], exact, rtol=1e-6)


@pytest.mark.parametrize("period", [1, 24])
def test_returns_and_volatility_match_talib(hlcv: Series, period: int) -> None:
    c = hlcv["close"]
    close_to_talib(ind.log_returns(c, period), np.log(talib.ROCR(c, period)), warmup=period, scale=1.0)
    if period > 1:
        ref = talib.STDDEV(np.log(talib.ROCR(c, 1)), period, 1)
        close_to_talib(ind.rolling_volatility(c, period), ref, warmup=period, scale=1.0)


def test_golden_values() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(ind.ema(x, 3), [np.nan, np.nan, 2.0, 3.0, 4.0], rtol=1e-15)
    np.testing.assert_allclose(ind.sma(x, 2), [np.nan, 1.5, 2.5, 3.5, 4.5], rtol=1e-15)
    # Wilder, period 2: changes +1 +1 -1 +1 -> gains (1, 0.5, 0.75), losses (0, 0.5, 0.25)
    rsi = ind.rsi(np.array([1.0, 2.0, 3.0, 2.0, 3.0]), 2)
    np.testing.assert_allclose(rsi, [np.nan, np.nan, 100.0, 50.0, 75.0], rtol=1e-14)
    np.testing.assert_allclose(
        ind.rolling_std(np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 8)[-1], 2.0
    )
    assert ind.rsi(np.full(20, 7.0), 14)[-1] == 50.0  # no change at all: neutral, not 0 as TA-Lib
    assert ind.volume_zscore(np.full(30, 3.3), 20)[-1] == 0.0
    assert ind.bollinger(np.full(30, 0.1), 20)[3][-1] == 0.5


def loop_filter(x: np.ndarray, period: int, alpha: float, seed_pos: int) -> np.ndarray:
    """The documented semantics, one candle at a time: restart after a gap, SMA seed, recursion."""
    out = np.full(len(x), np.nan)
    run: list[float] = []
    y = math.nan
    for t, v in enumerate(x):
        if not math.isfinite(v):
            run, y = [], math.nan
            continue
        run.append(float(v))
        if len(run) - 1 == seed_pos:
            y = math.fsum(run[-period:]) / period
        elif len(run) - 1 > seed_pos:
            y = (1.0 - alpha) * y + alpha * v
        out[t] = y
    return out


def gappy(seed: int, n: int, gap_rate: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100.0 + np.cumsum(rng.normal(size=n))
    x[rng.random(n) < gap_rate] = np.nan
    if n > 10:
        x[rng.integers(0, n - 5) :][:3] = np.inf
    return x


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 1200),
    period=st.integers(1, 40),
    gap_rate=st.sampled_from([0.0, 0.002, 0.02, 0.3]),
)
def test_filters_and_windows_match_plain_loops(seed: int, n: int, period: int, gap_rate: float) -> None:
    x = gappy(seed, n, gap_rate)
    np.testing.assert_allclose(
        ind.ema(x, period), loop_filter(x, period, 2 / (period + 1), period - 1), rtol=1e-11
    )
    np.testing.assert_allclose(
        ind.wilder(x, period), loop_filter(x, period, 1 / period, period - 1), rtol=1e-11
    )
    windows = [x[t - period + 1 : t + 1] for t in range(period - 1, n)]
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    mean[period - 1 :] = [w.mean() if np.isfinite(w).all() else np.nan for w in windows]
    std[period - 1 :] = [w.std() if np.isfinite(w).all() else np.nan for w in windows]
    np.testing.assert_allclose(ind.sma(x, period), mean, rtol=1e-11)
    np.testing.assert_allclose(ind.rolling_std(x, period), std, rtol=1e-8, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    period=st.integers(1, 60),
    wilder=st.booleans(),
    gap_rate=st.sampled_from([0.0, 0.0, 0.002, 0.02, 0.3]),
)
def test_the_one_block_path_is_bit_identical_to_the_general_one(
    seed: int, n: int, period: int, wilder: bool, gap_rate: float
) -> None:
    """A short series (an analysed window) takes ``_one_block``: the same bits as the general block
    solver, so a window's features never depend on which path computed them."""
    from model.indicators import _recursive

    x = gappy(seed, n, gap_rate)
    alpha = 1 / period if wilder else 2 / (period + 1)
    fast = _recursive(x, period, alpha, period - 1)
    general = _recursive(x, period, alpha, period - 1, one_block=False)
    np.testing.assert_array_equal(fast, general)
    assert np.array_equal(np.signbit(fast), np.signbit(general))  # even the sign of a zero


def test_nan_input_is_a_gap_not_a_crash() -> None:
    c = make_candles(300, seed=3).close.copy()
    c[100] = np.nan
    ema = ind.ema(c, 10)
    assert np.isnan(ema[100:110]).all() and np.isfinite(ema[110:]).all()
    np.testing.assert_allclose(ema[110:], talib.EMA(c[101:], 10)[9:], rtol=1e-12)
    sma = ind.sma(c, 10)
    assert np.isnan(sma[100:110]).all() and np.isfinite(sma[110:]).all()
    assert np.isnan(ind.rsi(c)[100:115]).all() and np.isfinite(ind.rsi(c)[115:]).all()
    assert np.isnan(ind.macd(c)[2][100:134]).all() and np.isfinite(ind.macd(c)[2][134:]).all()
    assert np.isnan(ind.ema(np.full(50, np.nan), 3)).all()
    assert ind.ema(np.array([]), 3).shape == (0,)
    assert np.isnan(ind.log_returns(np.array([1.0, 0.0, -1.0, 2.0]))).all()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda x: ind.ema(x, 0), "period"),
        (lambda x: ind.sma(x, 2.5), "period"),
        (lambda x: ind.rsi(x, True), "period"),
        (lambda x: ind.macd(x, 26, 12), "fast"),
        (lambda x: ind.macd(x, 12, 26, 0), "signal"),
        (lambda x: ind.bollinger(x, 20, -1.0), "k"),
        (lambda x: ind.bollinger(x, 0), "period"),
        (lambda x: ind.atr(x, x[:-1], x), "length"),
        (lambda x: ind.volume_zscore(x, 1), "period"),
        (lambda x: ind.log_returns(x, 0), "periods"),
        (lambda x: ind.rolling_std(x, 5, ddof=5), "ddof"),
        (lambda x: ind.ema(x.reshape(2, -1), 3), "x must be a 1-D"),
    ],
)
def test_bad_arguments_name_the_argument(call: Callable[[np.ndarray], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call(np.arange(1.0, 41.0))
