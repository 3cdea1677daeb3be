"""Vectorised spot, long-only backtest of a target-position series.

Semantics (chosen to match backtesting.py's defaults, see ``tests/test_backtest_vs_backtestingpy.py``):

* ``target_position[t]`` in {0, 1} is the position DECIDED at the close of candle ``t``; it is
  EXECUTED at the open of candle ``t + 1`` (no look-ahead). The decision at the last candle is
  never executed. The position held during candle ``t`` is therefore ``target_position[t - 1]``.
* Sizing: ``size`` in (0, 1] is the fraction of equity committed at each entry (``1.0`` = full,
  less = fractional). Units are fractional (crypto) and fixed for the life of the trade (no
  rebalancing while long), as in backtesting.py. The notional bought is
  ``size * equity / (1 + fee)`` so that notional plus entry fee equals ``size * equity``
  (backtesting.py's ``size=<fraction>`` rule, without its rounding down to whole units).
* Fees: ``fee`` per side on the traded notional at the fill price (backtesting.py
  ``commission``: applied at entry and again at exit).
* Slippage: ``slippage_bps`` worsens every fill: buys fill at ``open * (1 + bps/1e4)``, sells at
  ``open * (1 - bps/1e4)``. (backtesting.py's ``spread`` only adjusts the entry price.)
* Equity is marked at each candle's close. An entry at candle ``t``'s open is marked at
  ``close[t]`` already.
* A position still open after the last candle stays open, like backtesting.py's default
  (``finalize_trades=False``): it is marked to the last close without an exit fee, it is NOT in
  ``trades`` (nor in trade statistics), and is reported as ``open_trade``. With
  ``close_at_end=True`` it is instead sold at the last close (fee and slippage applied) and
  counted as a trade (backtesting.py's ``finalize_trades=True`` closes at the last *open*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.candles import Candles, timeframe_seconds
from model.evaluation.metrics import compute_metrics

TRADE_DTYPE = np.dtype(
    [
        ("entry_index", np.int64),
        ("exit_index", np.int64),
        ("entry_ts", np.int64),
        ("exit_ts", np.int64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("size", np.float64),
        ("pnl", np.float64),
        ("return_pct", np.float64),
        ("fees", np.float64),
    ]
)
"""Fields of ``BacktestResult.trades``; ``size`` is in units of the base asset."""


@dataclass(frozen=True)
class Trade:
    """One round trip. ``return_pct`` = pnl / entry notional * 100 (backtesting.py ``ReturnPct``)."""

    entry_ts: int
    exit_ts: int
    entry_price: float
    exit_price: float
    size: float
    pnl: float
    return_pct: float
    fees: float


@dataclass(frozen=True)
class BacktestResult:
    """Per-candle equity, returns and position, the closed trades and the metrics of one run."""

    equity: np.ndarray
    returns: np.ndarray
    position: np.ndarray
    trades: np.ndarray
    open_trade: Trade | None
    fees_paid: float
    metrics: dict[str, float]

    def trade_list(self) -> tuple[Trade, ...]:
        """The closed trades as frozen ``Trade`` objects (for display and JSON)."""
        names = Trade.__dataclass_fields__
        return tuple(Trade(**{k: row[k].item() for k in names}) for row in self.trades)


#: Fees per side at or above this (10%) are taken for a typo (0.1 meant as 0.1%), not a fee.
MAX_FEE = 0.1


def _check(candles: Candles, target: Any, fee: float, slippage_bps: float, size: float, cash: float) -> None:
    n = len(candles)
    if n < 1:
        raise ValueError("candles is empty: need at least one candle")
    if np.shape(target) != (n,):
        raise ValueError(f"target_position has shape {np.shape(target)}, expected ({n},)")
    if not 0.0 <= fee < MAX_FEE:
        raise ValueError(f"fee must be in [0, {MAX_FEE:g}), got {fee}")
    if not 0.0 <= slippage_bps < 1000.0:
        raise ValueError(f"slippage_bps must be in [0, 1000), got {slippage_bps}")
    if not 0.0 < size <= 1.0:
        raise ValueError(f"size must be in (0, 1], got {size}")
    if not (np.isfinite(cash) and cash > 0):
        raise ValueError(f"initial_cash must be a positive number, got {cash}")


def run_backtest(
    candles: Candles,
    target_position: np.ndarray,
    *,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    size: float = 1.0,
    initial_cash: float = 10_000.0,
    warmup: int = 0,
    close_at_end: bool = False,
    risk_free: float = 0.0,
) -> BacktestResult:
    """Backtest ``target_position`` (decided at close t, filled at open t+1) on ``candles``.

    ``warmup`` candles at the start are indicator warm-up: decisions there are ignored and
    buy-and-hold is measured from ``close[warmup]`` (backtesting.py's ``first_trading_bar``).
    """
    _check(candles, target_position, fee, slippage_bps, size, initial_cash)
    n = len(candles)
    if not 0 <= warmup < n:
        raise ValueError(f"warmup must be in [0, {n}), got {warmup}")
    tgt = np.asarray(target_position, dtype=np.float64)
    if not np.all((tgt == 0.0) | (tgt == 1.0)):
        raise ValueError("target_position must hold only 0 (flat) and 1 (long)")
    held = np.zeros(n, dtype=bool)
    held[1:] = tgt[:-1] == 1.0
    held[: warmup + 1] = False
    step = np.diff(held.astype(np.int8), prepend=np.int8(0))
    entries = np.flatnonzero(step == 1)
    exits = np.flatnonzero(step == -1)
    n_closed = len(exits)
    is_open = len(entries) > n_closed
    slip = slippage_bps / 1e4
    opens = np.asarray(candles.open, dtype=np.float64)
    close = np.asarray(candles.close, dtype=np.float64)

    e_price = opens[entries] * (1.0 + slip)
    x_price = opens[exits] * (1.0 - slip)
    x_index = exits
    if is_open and close_at_end:
        x_price = np.append(x_price, close[-1] * (1.0 - slip))
        x_index = np.append(x_index, n - 1)
        n_closed += 1
    growth = (1.0 - size) + size * (1.0 - fee) / (1.0 + fee) * x_price / e_price[:n_closed]
    e_before = initial_cash * np.concatenate(([1.0], np.cumprod(growth)))
    units = size * e_before[: len(entries)] / ((1.0 + fee) * e_price)
    cash_in = e_before[: len(entries)] * (1.0 - size)
    e_after = e_before[1:]

    # Equity marked at close: long candles from the trade's cash and units, flat ones from the
    # equity after the last exit.
    trade_id = np.cumsum(step == 1) - 1
    flat_eq = np.concatenate(([initial_cash], e_after))[np.minimum(trade_id + 1, n_closed)]
    safe_id = np.maximum(trade_id, 0)
    long_eq = cash_in[safe_id] + units[safe_id] * close if len(entries) else flat_eq
    equity = np.where(held, long_eq, flat_eq)
    if is_open and close_at_end:
        equity[-1] = e_after[-1]
    prev = np.concatenate(([initial_cash], equity[:-1]))
    returns = equity / prev - 1.0

    u = units[:n_closed]
    entry_notional = u * e_price[:n_closed]
    fees = fee * (entry_notional + u * x_price)
    pnl = u * (x_price - e_price[:n_closed]) - fees
    trades = np.empty(n_closed, dtype=TRADE_DTYPE)
    trades["entry_index"] = entries[:n_closed]
    trades["exit_index"] = x_index
    trades["entry_ts"] = candles.ts[entries[:n_closed]]
    trades["exit_ts"] = candles.ts[x_index]
    trades["entry_price"] = e_price[:n_closed]
    trades["exit_price"] = x_price
    trades["size"] = u
    trades["pnl"] = pnl
    trades["return_pct"] = pnl / entry_notional * 100.0
    trades["fees"] = fees
    fees_paid = float(fees.sum())

    open_trade = None
    if is_open and not close_at_end:
        k = len(entries) - 1
        entry_fee = fee * units[k] * e_price[k]
        fees_paid += float(entry_fee)
        open_pnl = units[k] * (close[-1] - e_price[k]) - entry_fee
        open_trade = Trade(
            entry_ts=int(candles.ts[entries[k]]),
            exit_ts=int(candles.ts[-1]),
            entry_price=float(e_price[k]),
            exit_price=float(close[-1]),
            size=float(units[k]),
            pnl=float(open_pnl),
            return_pct=float(open_pnl / (units[k] * e_price[k]) * 100.0),
            fees=float(entry_fee),
        )

    metrics = compute_metrics(
        equity,
        candles.ts,
        trades,
        closes=close[warmup:],
        position=held,
        fees_paid=fees_paid,
        timeframe_seconds=timeframe_seconds(candles.timeframe),
        risk_free=risk_free,
    )
    return BacktestResult(
        equity=equity,
        returns=returns,
        position=held.astype(np.int8),
        trades=trades,
        open_trade=open_trade,
        fees_paid=fees_paid,
        metrics=metrics,
    )
