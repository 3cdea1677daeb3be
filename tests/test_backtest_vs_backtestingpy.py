"""MUST SHOW of issue 5: our engine and backtesting.py agree on the shared BTC candles.

Mapping of the settings (read from backtesting.py 0.6.6's source):

* Fill: backtesting.py fills a market order placed in ``Strategy.next()`` at bar t at the open of
  bar t+1 (``trade_on_close=False``), exactly our "decided at close t, executed at open t+1".
* Fee: ``commission=fee`` is charged on the order value at entry and again at exit, as our ``fee``.
  ``spread=0`` and our ``slippage_bps=0`` (backtesting.py's spread only moves the entry price).
* Size: backtesting.py buys whole units; ``size=0.9999`` with ``cash=1e12`` makes the rounding
  error ~price/cash (< 1e-7 relative). Trade prices, times and per-trade returns do not depend on
  the size at all (``ReturnPct = (1-c) * exit/entry - (1+c)``), so those are compared to 1e-9.
* End: the open trade at the end is left open (``finalize_trades=False``, the default) and not in
  the trade list on either side; equity marks it to the last close.
* Warm-up: backtesting.py measures buy-and-hold from ``close[warmup]`` (its first trading bar,
  ``slow - 1`` for an SMA(slow)); our ``run_backtest(..., warmup=slow - 1)`` does the same.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from model.evaluation.backtest import run_backtest
from model.evaluation.policies import buy_and_hold, sma, sma_crossover
from tests.conftest import shared_csv
from tests.shared_candles import load_csv_candles

backtesting = pytest.importorskip("backtesting")
from backtesting import Backtest, Strategy  # noqa: E402
from backtesting.lib import crossover  # noqa: E402

ROWS = 4000
FAST, SLOW = 10, 30
SIZE = 0.9999
BT_CASH = 1e12
RTOL = 1e-9


class SmaCross(Strategy):
    """The plain long-only SMA crossover: buy on a cross up, close on a cross down."""

    fast = FAST
    slow = SLOW

    def init(self) -> None:
        self.sma_fast = self.I(sma, self.data.Close, self.fast)
        self.sma_slow = self.I(sma, self.data.Close, self.slow)

    def next(self) -> None:
        if crossover(self.sma_fast, self.sma_slow) and not self.position:
            self.buy(size=SIZE)
        elif crossover(self.sma_slow, self.sma_fast) and self.position:
            self.position.close()


class BuyHold(Strategy):
    """Buy on the first bar backtesting.py calls next() on, hold to the end."""

    def init(self) -> None:
        pass

    def next(self) -> None:
        if not self.position:
            self.buy(size=SIZE)


@pytest.fixture(scope="module")
def candles():
    return load_csv_candles(shared_csv("Binance_BTCUSDT_1h.csv"), last=ROWS)


def _frame(c) -> pd.DataFrame:
    idx = pd.to_datetime(c.ts, unit="s")
    return pd.DataFrame(
        {"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume}, index=idx
    )


def _run_bt(c, strategy, fee):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(_frame(c), strategy, cash=BT_CASH, commission=fee, exclusive_orders=False)
        return bt.run()


@pytest.mark.parametrize("fee", [0.0, 0.001, 0.0025])
def test_sma_crossover_trades_match_backtestingpy(candles, fee):
    stats = _run_bt(candles, SmaCross, fee)
    bt_trades = stats["_trades"]
    ours = run_backtest(
        candles, sma_crossover(candles.close, FAST, SLOW), fee=fee, size=SIZE, warmup=SLOW - 1
    )
    t = ours.trades
    assert len(bt_trades) > 50, "the SMA strategy should trade often on 4,000 hours"
    assert len(t) == len(bt_trades)
    bt_entry = bt_trades["EntryTime"].to_numpy().astype("datetime64[s]").astype(np.int64)
    bt_exit = bt_trades["ExitTime"].to_numpy().astype("datetime64[s]").astype(np.int64)
    np.testing.assert_array_equal(t["entry_ts"], bt_entry)
    np.testing.assert_array_equal(t["exit_ts"], bt_exit)
    np.testing.assert_array_equal(t["entry_price"], bt_trades["EntryPrice"].to_numpy())
    np.testing.assert_array_equal(t["exit_price"], bt_trades["ExitPrice"].to_numpy())
    np.testing.assert_allclose(
        t["return_pct"] / 100.0, bt_trades["ReturnPct"].to_numpy(), rtol=RTOL, atol=1e-12
    )
    # Equity: ours uses fractional units, backtesting.py whole units of a 1e12 account.
    np.testing.assert_allclose(
        ours.equity / ours.equity[0], stats["_equity_curve"]["Equity"] / BT_CASH, rtol=1e-6
    )
    assert ours.metrics["buy_and_hold_return_pct"] == pytest.approx(stats["Buy & Hold Return [%]"], rel=RTOL)
    assert ours.metrics["n_trades"] == stats["# Trades"]
    assert ours.metrics["win_rate_pct"] == pytest.approx(stats["Win Rate [%]"], rel=RTOL)
    assert ours.metrics["expectancy_pct"] == pytest.approx(stats["Expectancy [%]"], rel=1e-6)
    assert ours.metrics["max_drawdown_pct"] == pytest.approx(-stats["Max. Drawdown [%]"], rel=1e-5)
    assert ours.metrics["total_return_pct"] == pytest.approx(stats["Return [%]"], rel=1e-5)
    open_bt = stats["_strategy"].trades
    assert (ours.open_trade is not None) == bool(len(open_bt))


def test_buy_and_hold_matches_backtestingpy(candles):
    fee = 0.001
    stats = _run_bt(candles, BuyHold, fee)
    # backtesting.py calls next() first at bar 1 (no indicators), so it buys at the open of bar 2.
    target = buy_and_hold(len(candles))
    target[0] = 0
    ours = run_backtest(candles, target, fee=fee, size=SIZE)
    assert ours.metrics["buy_and_hold_return_pct"] == pytest.approx(stats["Buy & Hold Return [%]"], rel=RTOL)
    assert ours.metrics["total_return_pct"] == pytest.approx(stats["Return [%]"], rel=1e-6)
    assert ours.open_trade is not None
    bt_open = stats["_strategy"].trades[0]
    assert ours.open_trade.entry_price == bt_open.entry_price
    assert ours.open_trade.entry_ts == int(pd.Timestamp(bt_open.entry_time).timestamp())
