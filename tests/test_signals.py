"""Component signals: order-book imbalance, trade flow, candle flow (taker or CLV proxy), technical."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model.candles import Candles
from model.market.synthetic import make_candles
from model.trading.signals import (
    FLOW_CLV_PROXY,
    FLOW_TAKER,
    flow_score_from_candles,
    flow_score_from_trades,
    orderbook_score,
    technical_score,
)


def test_orderbook_imbalance_uses_best_levels_in_any_order() -> None:
    bids = np.array([[99.0, 1.0], [100.0, 3.0], [98.0, 100.0]])  # unsorted; 98 is beyond depth 2
    asks = np.array([[101.0, 1.0], [102.0, 0.0], [103.0, 50.0]])
    assert orderbook_score(bids, asks, depth=2) == pytest.approx((4.0 - 1.0) / 5.0)
    assert orderbook_score(bids, asks, depth=10) == pytest.approx((104.0 - 51.0) / 155.0)
    assert orderbook_score(bids, np.empty((0, 2))) == 1.0
    assert np.isnan(orderbook_score([], []))


def test_orderbook_rejects_bad_books() -> None:
    with pytest.raises(ValueError, match="crossed book"):
        orderbook_score([[101.0, 1.0]], [[100.0, 1.0]])
    with pytest.raises(ValueError, match="bids"):
        orderbook_score([[100.0, -1.0]], [[101.0, 1.0]])
    with pytest.raises(ValueError, match="depth"):
        orderbook_score([[100.0, 1.0]], [[101.0, 1.0]], depth=0)


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(0, 1e6)),
    hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(0, 1e6)),
)
def test_orderbook_score_in_range(bid_sizes: np.ndarray, ask_sizes: np.ndarray) -> None:
    bids = np.column_stack([100.0 - np.arange(bid_sizes.size), bid_sizes])
    asks = np.column_stack([101.0 + np.arange(ask_sizes.size), ask_sizes])
    s = orderbook_score(bids, asks)
    assert np.isnan(s) or -1.0 <= s <= 1.0
    if bid_sizes[:10].sum() + ask_sizes[:10].sum() > 0:
        assert not np.isnan(s)


def test_flow_from_trades() -> None:
    sizes = np.array([1.0, 2.0, 3.0])
    maker = np.array([True, False, False])  # first trade: taker sold
    assert flow_score_from_trades(sizes, maker) == pytest.approx((5.0 - 1.0) / 6.0)
    assert np.isnan(flow_score_from_trades(np.array([]), np.array([], dtype=bool)))
    with pytest.raises(ValueError, match="one length"):
        flow_score_from_trades(sizes, maker[:2])


def test_flow_from_candles_taker_and_named_proxy() -> None:
    c = make_candles(50, seed=3)
    taker = flow_score_from_candles(c)
    assert taker.source == FLOW_TAKER
    assert c.taker_buy_volume is not None
    np.testing.assert_allclose(taker.score, np.clip(2 * c.taker_buy_volume / c.volume - 1, -1, 1))

    no_taker = make_candles(50, seed=3, with_taker=False)
    proxy = flow_score_from_candles(no_taker)
    assert proxy.source == FLOW_CLV_PROXY
    h, low, close = no_taker.high, no_taker.low, no_taker.close
    np.testing.assert_allclose(proxy.score, ((close - low) - (h - close)) / (h - low))
    assert np.all(np.abs(proxy.score) <= 1.0)


def test_flow_window_is_causal_volume_weighted_and_nan_where_undefined() -> None:
    ts = np.arange(4, dtype=np.int64) * 3600
    ones = np.ones(4)
    c = Candles(
        ts,
        ones,
        np.array([2.0, 2.0, 1.0, 2.0]),
        np.array([1.0, 1.0, 1.0, 1.0]),
        np.array([2.0, 1.0, 1.0, 1.5]),
        np.array([1.0, 3.0, 5.0, 0.0]),
    )
    per = flow_score_from_candles(c).score
    np.testing.assert_allclose(per, [1.0, -1.0, np.nan, np.nan])  # row 2: no range; row 3: no volume
    rolled = flow_score_from_candles(c, window=2).score
    np.testing.assert_allclose(rolled, [np.nan, (1.0 - 3.0) / 4.0, np.nan, np.nan])
    full = make_candles(40, seed=1)
    w = flow_score_from_candles(full, window=5).score
    assert np.array_equal(flow_score_from_candles(full.slice(0, 20), window=5).score, w[:20], equal_nan=True)


def test_technical_score_formula_and_missing_inputs() -> None:
    feats = {
        "rsi": np.array([30.0, 70.0, np.nan, 50.0]),
        "bb_pct_b": np.array([0.0, 1.0, np.nan, 0.5]),
        "macd_hist": np.array([1e6, -1e6, np.nan, 0.0]),
        "ema_gap": np.array([1e6, -1e6, np.nan, 0.0]),
    }
    s = technical_score(feats)
    np.testing.assert_allclose(s, [1.0, -1.0, np.nan, 0.0])
    only_rsi = technical_score({"rsi": np.array([40.0])})
    assert only_rsi[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="none of"):
        technical_score({"volume_z": np.zeros(2)})


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            *[hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True)) for _ in range(4)]
        )
    )
)
def test_technical_score_in_range(cols: tuple[np.ndarray, ...]) -> None:
    feats = dict(zip(("rsi", "bb_pct_b", "macd_hist", "ema_gap"), cols, strict=True))
    s = technical_score(feats)
    all_nan = np.all(np.isnan(np.vstack(cols)), axis=0)
    np.testing.assert_array_equal(np.isnan(s), all_nan)
    assert np.all(np.abs(s[~all_nan]) <= 1.0)
