"""The vectorised backtest against a plain loop reference, plus properties and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.candles import Candles
from model.evaluation.backtest import run_backtest
from model.evaluation.policies import buy_and_hold, random_policy
from model.market.synthetic import make_candles


def reference_backtest(c: Candles, target, *, fee, slippage_bps, size, cash, close_at_end=False):
    """Candle-by-candle loop: the obvious implementation the vectorised one must equal."""
    n = len(c)
    slip = slippage_bps / 1e4
    units = 0.0
    equity = np.empty(n)
    trades = []
    fees = 0.0
    for t in range(n):
        want = t > 0 and target[t - 1] == 1
        if want and units == 0.0:
            price = c.open[t] * (1 + slip)
            budget = size * cash
            notional = budget / (1 + fee)
            units = notional / price
            cash -= notional * (1 + fee)
            fees += notional * fee
            entry = (t, price, notional * fee)
        elif not want and units > 0.0:
            price = c.open[t] * (1 - slip)
            cash += units * price * (1 - fee)
            fees += units * price * fee
            trades.append((entry[0], t, entry[1], price, units, units * price * fee + entry[2]))
            units = 0.0
        equity[t] = cash + units * c.close[t]
    if close_at_end and units > 0.0:
        price = c.close[-1] * (1 - slip)
        cash += units * price * (1 - fee)
        fees += units * price * fee
        trades.append((entry[0], n - 1, entry[1], price, units, units * price * fee + entry[2]))
        equity[-1] = cash
    return equity, trades, fees


def _candles_from(prices: list[float], opens_jitter: list[float]) -> Candles:
    close = np.asarray(prices)
    open_ = close * np.asarray(opens_jitter)
    ts = 1_700_000_000 + 3600 * np.arange(len(close), dtype=np.int64)
    return Candles(ts, open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones(len(close)))


@st.composite
def scenario(draw):
    n = draw(st.integers(1, 60))
    prices = draw(st.lists(st.floats(1.0, 1e5), min_size=n, max_size=n))
    jitter = draw(st.lists(st.floats(0.9, 1.1), min_size=n, max_size=n))
    target = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return _candles_from(prices, jitter), np.asarray(target)


FEES = st.floats(0.0, 0.05)
SLIPS = st.floats(0.0, 100.0)
SIZES = st.floats(0.01, 1.0)


@settings(max_examples=200, deadline=None)
@given(scenario(), FEES, SLIPS, SIZES, st.booleans())
def test_vectorised_equals_loop_reference(sc, fee, slip, size, close_at_end):
    c, target = sc
    res = run_backtest(c, target, fee=fee, slippage_bps=slip, size=size, close_at_end=close_at_end)
    eq, trades, fees = reference_backtest(
        c, target, fee=fee, slippage_bps=slip, size=size, cash=10_000.0, close_at_end=close_at_end
    )
    np.testing.assert_allclose(res.equity, eq, rtol=1e-9)
    assert len(res.trades) == len(trades)
    for row, (ei, xi, ep, xp, u, f) in zip(res.trades, trades, strict=True):
        assert (row["entry_index"], row["exit_index"]) == (ei, xi)
        assert row["entry_price"] == pytest.approx(ep, rel=1e-12)
        assert row["exit_price"] == pytest.approx(xp, rel=1e-12)
        assert row["size"] == pytest.approx(u, rel=1e-9)
        assert row["fees"] == pytest.approx(f, rel=1e-9)
        assert row["pnl"] == pytest.approx(u * (xp - ep) - f, rel=1e-9, abs=1e-9)
    assert res.fees_paid == pytest.approx(fees, rel=1e-9, abs=1e-12)
    assert (res.open_trade is not None) == (not close_at_end and len(c) > 1 and bool(res.position[-1]))


@settings(max_examples=100, deadline=None)
@given(scenario(), FEES, SLIPS)
def test_equity_never_negative_and_returns_consistent(sc, fee, slip):
    c, target = sc
    res = run_backtest(c, target, fee=fee, slippage_bps=slip)
    assert np.all(res.equity >= 0)
    prev = np.concatenate(([10_000.0], res.equity[:-1]))
    np.testing.assert_allclose(res.returns, res.equity / prev - 1)


@settings(max_examples=100, deadline=None)
@given(scenario(), st.floats(0.0, 0.04), st.floats(0.0, 0.04), SLIPS)
def test_more_fee_never_increases_final_equity(sc, f1, f2, slip):
    c, target = sc
    lo, hi = sorted((f1, f2))
    a = run_backtest(c, target, fee=lo, slippage_bps=slip).equity[-1]
    b = run_backtest(c, target, fee=hi, slippage_bps=slip).equity[-1]
    assert b <= a * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(scenario(), st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_more_slippage_never_increases_final_equity(sc, s1, s2):
    c, target = sc
    lo, hi = sorted((s1, s2))
    assert run_backtest(c, target, slippage_bps=hi).equity[-1] <= run_backtest(
        c, target, slippage_bps=lo
    ).equity[-1] * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(scenario())
def test_free_always_long_equals_buy_and_hold_from_first_fill(sc):
    c, _ = sc
    if len(c) < 2:
        return
    res = run_backtest(c, buy_and_hold(len(c)), fee=0.0, slippage_bps=0.0)
    assert res.equity[0] == 10_000.0
    np.testing.assert_allclose(res.equity[1:], 10_000.0 * c.close[1:] / c.open[1], rtol=1e-12)
    assert len(res.trades) == 0


def test_decision_executes_at_next_open_not_same_candle():
    c = _candles_from([100.0, 110.0, 121.0, 100.0], [1.0, 1.0, 1.0, 1.0])
    # decided long at close of candle 0 -> bought at open of candle 1 (= 110 * 1.0), sold at open 3
    res = run_backtest(c, np.array([1, 1, 0, 0]), fee=0.0)
    assert res.position.tolist() == [0, 1, 1, 0]
    (trade,) = res.trade_list()
    assert (trade.entry_price, trade.exit_price) == (110.0, 100.0)
    assert res.equity.tolist() == pytest.approx([10_000.0, 10_000.0, 11_000.0, 10_000.0 * 100 / 110])


def test_fee_and_slippage_hand_computed():
    c = _candles_from([100.0, 100.0, 120.0, 120.0], [1.0, 1.0, 1.0, 1.0])
    res = run_backtest(c, np.array([1, 1, 0, 0]), fee=0.01, slippage_bps=100.0)
    (t,) = res.trade_list()
    assert t.entry_price == pytest.approx(101.0)
    assert t.exit_price == pytest.approx(118.8)
    units = 10_000.0 / 1.01 / 101.0
    assert t.size == pytest.approx(units)
    assert t.fees == pytest.approx(0.01 * units * (101.0 + 118.8))
    assert res.equity[-1] == pytest.approx(units * 118.8 * 0.99)
    assert t.return_pct == pytest.approx((units * (118.8 - 101.0) - t.fees) / (units * 101.0) * 100)
    assert res.metrics["fees_paid"] == pytest.approx(t.fees)


def test_fractional_size_keeps_cash():
    c = _candles_from([100.0, 100.0, 200.0], [1.0, 1.0, 1.0])
    res = run_backtest(c, np.array([1, 1, 1]), fee=0.0, size=0.5)
    assert res.equity[-1] == pytest.approx(5_000.0 + 5_000.0 * 2)


def test_open_trade_left_open_or_closed_at_end():
    c = make_candles(50, seed=3)
    target = np.zeros(50, dtype=int)
    target[10:] = 1
    left = run_backtest(c, target)
    assert len(left.trades) == 0 and left.open_trade is not None
    assert left.metrics["n_trades"] == 0
    assert left.fees_paid == pytest.approx(left.open_trade.fees)
    closed = run_backtest(c, target, close_at_end=True)
    assert len(closed.trades) == 1 and closed.open_trade is None
    assert closed.trades["exit_index"][0] == 49
    assert closed.equity[-1] < left.equity[-1]


def test_warmup_ignores_decisions_and_moves_buy_and_hold_start():
    c = make_candles(40, seed=5)
    res = run_backtest(c, buy_and_hold(40), warmup=10)
    assert res.position[:11].sum() == 0 and res.position[11:].all()
    assert res.metrics["buy_and_hold_return_pct"] == pytest.approx((c.close[-1] / c.close[10] - 1) * 100)


def test_one_candle_and_no_trades():
    c = make_candles(1)
    res = run_backtest(c, np.array([1]))
    assert res.equity.tolist() == [10_000.0] and res.position.tolist() == [0]
    assert res.metrics["n_trades"] == 0 and res.metrics["sharpe"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"fee": -0.1}, "fee"),
        ({"fee": 0.5}, "fee"),
        ({"slippage_bps": -1.0}, "slippage_bps"),
        ({"size": 0.0}, "size"),
        ({"size": 1.5}, "size"),
        ({"initial_cash": 0.0}, "initial_cash"),
        ({"warmup": 99}, "warmup"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    c = make_candles(20)
    with pytest.raises(ValueError, match=word):
        run_backtest(c, np.zeros(20), **kwargs)


def test_bad_target_position():
    c = make_candles(20)
    with pytest.raises(ValueError, match="target_position"):
        run_backtest(c, np.zeros(19))
    with pytest.raises(ValueError, match="target_position"):
        run_backtest(c, np.full(20, 0.5))


def test_random_policy_backtest_on_a_million_candles_is_fast():
    import time

    c = make_candles(1_000_000, seed=1)
    target = random_policy(len(c), seed=7, p_trade=0.02)
    t0 = time.perf_counter()
    res = run_backtest(c, target)
    assert time.perf_counter() - t0 < 5.0
    assert res.metrics["n_trades"] > 1000
