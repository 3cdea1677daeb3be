"""Features and indicators are causal (bit-identical on any prefix) and right on analytic series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.candles import Candles
from model.features import FEATURE_WARMUP, FEATURES, WARMUP, compute_features, feature_matrix
from model.indicators import FastIndicators as ind
from model.market.synthetic import make_candles

# Bit-exact equality is expected, not a tolerance: every step (block boundaries at fixed absolute
# indices, sequential cumulative sums, pairwise merges, the carry loop) depends on the index only,
# never on the series length, so a prefix repeats exactly the same floating-point operations.


def with_gaps(candles: Candles, seed: int, rate: float) -> Candles:
    if rate == 0.0:
        return candles
    rng = np.random.default_rng(seed)
    cols = {k: getattr(candles, k).copy() for k in ("open", "high", "low", "close", "volume")}
    for name in cols:
        cols[name][rng.random(len(candles)) < rate] = np.nan
    return Candles(candles.ts, **cols, symbol=candles.symbol, timeframe=candles.timeframe)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 700),
    cut=st.floats(0.0, 1.0),
    gap_rate=st.sampled_from([0.0, 0.0, 0.005, 0.05]),
)
def test_appending_candles_never_changes_past_features(
    seed: int, n: int, cut: float, gap_rate: float
) -> None:
    full = with_gaps(make_candles(n, seed=seed), seed, gap_rate)
    m = int(cut * n)
    past = compute_features(full.slice(0, m))
    everything = compute_features(full)
    assert list(everything) == list(FEATURES)
    for name in FEATURES:
        assert everything[name].dtype == np.float64 and everything[name].shape == (n,)
        np.testing.assert_array_equal(past[name], everything[name][:m], err_msg=name)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 5000),
    cut=st.floats(0.0, 1.0),
    period=st.integers(1, 60),
    gap_rate=st.sampled_from([0.0, 0.001, 0.05]),
)
def test_appending_values_never_changes_past_indicators(
    seed: int, n: int, cut: float, period: int, gap_rate: float
) -> None:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    close[rng.random(n) < gap_rate] = np.nan
    m = int(cut * n)
    calls = {
        "ema": lambda c: ind.ema(c, period),
        "wilder": lambda c: ind.wilder(c, period),
        "sma": lambda c: ind.sma(c, period),
        "std": lambda c: ind.rolling_std(c, period),
        "rsi": lambda c: ind.rsi(c, period),
        "macd": lambda c: np.stack(ind.macd(c, max(1, period // 2), period + 1, 9)),
        "bb": lambda c: np.stack(ind.bollinger(c, period)),
        "atr": lambda c: ind.atr(c * 1.01, c * 0.99, c, period),
        "vol": lambda c: ind.rolling_volatility(c, period + 1),
        "ret": lambda c: ind.log_returns(c, period),
    }
    for name, call in calls.items():
        np.testing.assert_array_equal(call(close[:m])[..., :m], call(close)[..., :m], err_msg=name)


@pytest.mark.parametrize("period", [2, 14, 50])
def test_long_series_prefixes_across_many_blocks(period: int) -> None:
    """Deterministic companion of the property test: many filter blocks, so the carry loop matters."""
    close = make_candles(20_000, seed=period).close.copy()
    close[[5000, 5001, 12_345]] = np.nan
    full = [ind.ema(close, period), ind.wilder(close, period), ind.rsi(close, period), ind.sma(close, period)]
    full += [ind.rolling_std(close, period), *ind.macd(close, 12, 26, period)]
    for m in (2048, 4097, 9999, 15_000, 19_999):
        part = [ind.ema(close[:m], period), ind.wilder(close[:m], period), ind.rsi(close[:m], period)]
        part += [ind.sma(close[:m], period), ind.rolling_std(close[:m], period)]
        part += list(ind.macd(close[:m], 12, 26, period))
        for i, (p, f) in enumerate(zip(part, full, strict=True)):
            np.testing.assert_array_equal(p, f[:m], err_msg=f"output {i} at cut {m}")


def test_warmup_is_the_longest_and_each_feature_starts_when_documented() -> None:
    feats = compute_features(make_candles(400, seed=5))
    assert WARMUP == max(FEATURE_WARMUP.values()) == 49
    assert set(FEATURE_WARMUP) == set(FEATURES)
    for name, values in feats.items():
        first = FEATURE_WARMUP[name]
        assert np.isnan(values[:first]).all(), name
        assert np.isfinite(values[first:]).all(), name
    matrix = feature_matrix(feats)
    assert matrix.shape == (400, len(FEATURES))
    assert np.isfinite(matrix[WARMUP:]).all() and np.isnan(matrix[:WARMUP]).any(axis=1).all()
    np.testing.assert_array_equal(matrix[:, FEATURES.index("rsi")], feats["rsi"])
    sub = feature_matrix(feats, names=("ret_1", "rsi"))
    np.testing.assert_array_equal(sub, np.column_stack([feats["ret_1"], feats["rsi"]]))


def test_feature_matrix_rejects_unknown_or_ragged_columns() -> None:
    feats = compute_features(make_candles(60))
    with pytest.raises(ValueError, match="nope"):
        feature_matrix(feats, names=("rsi", "nope"))
    with pytest.raises(ValueError, match="names"):
        feature_matrix(feats, names=())
    with pytest.raises(ValueError, match="1-D"):
        feature_matrix({"a": np.zeros(3), "b": np.zeros(4)}, names=("a", "b"))


def test_golden_values_on_a_geometric_series() -> None:
    """Price grows by g per candle with fixed wicks and volume: every feature has a closed form."""
    n, g = 300, 1.01
    t = np.arange(n)
    close = 100.0 * g**t
    candles = Candles(t.astype(np.int64) * 3600, close, close * 1.001, close * 0.999, close, np.full(n, 10.0))
    f = compute_features(candles)

    def sma_ratio(p: int) -> float:  # SMA_p / close
        return (1 - g**-p) / (p * (1 - 1 / g))

    def smoothed_ratio(alpha: float, start: int, first: float) -> np.ndarray:  # EMA_t / close_t
        a = 1 - alpha
        steady = alpha / (1 - a / g)
        return steady + (first - steady) * (a / g) ** (t[start:] - start)

    np.testing.assert_allclose(f["ret_1"][1:], 100 * math.log(g), rtol=1e-10)
    np.testing.assert_allclose(f["ret_24"][24:], 2400 * math.log(g), rtol=1e-10)
    np.testing.assert_allclose(f["volatility"][24:], 0.0, atol=1e-10)
    np.testing.assert_allclose(f["rsi"][14:], 100.0)
    np.testing.assert_array_equal(f["volume_z"][19:], 0.0)
    np.testing.assert_allclose(f["sma_cross"][29:], (sma_ratio(10) / sma_ratio(30) - 1) * 100, rtol=1e-9)
    ema = smoothed_ratio(2 / 51, 49, sma_ratio(50))
    np.testing.assert_allclose(f["ema_gap"][49:], (1 / ema - 1) * 100, rtol=1e-9)
    tr = 1.001 - 1 / g  # true range / close: high minus the previous close
    atr = tr * smoothed_ratio(1 / 14, 14, sma_ratio(14))
    np.testing.assert_allclose(f["atr_pct"][14:], atr * 100, rtol=1e-9)
    powers = g ** -np.arange(20.0)  # window / close
    mean, std = powers.mean(), powers.std()
    np.testing.assert_allclose(f["bb_width"][19:], 4 * std / mean * 100, rtol=1e-9)
    np.testing.assert_allclose(f["bb_pct_b"][19:], (1 - (mean - 2 * std)) / (4 * std), rtol=1e-9)
