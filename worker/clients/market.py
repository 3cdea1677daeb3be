"""Live market data for the run-time agent through ccxt: the order book and recent trades.

Public endpoints only: qtrain never places an order and never asks for API keys. Requests are
retried like ``worker.clients.exchange`` (429 / ``RateLimitExceeded`` / ``DDoSProtection``, timeouts and
network errors, exponential backoff); what still fails is reported as missing (``MarketData``
keeps the reason), never invented: the ensemble then leaves that component out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np

from model.trading.signals import flow_score_from_trades, orderbook_score
from worker.clients.exchange import ccxt_call
from worker.errors import BadInput, ServiceUnavailable
from worker.symbols import to_ccxt

#: Attempts per live request (the tick must not hang on one candle): waits 1, 2 s in between.
LIVE_MAX_ATTEMPTS = 3
#: Trades read for the flow score (the exchange's most recent ones).
DEFAULT_TRADES_LIMIT = 200
#: Seconds one live request may take (a decision should not wait for ccxt's default 30 s).
DEFAULT_MARKET_TIMEOUT_S = 10.0


@dataclass
class MarketData:
    """Order-book and trade-flow scores of one symbol now; None with a reason when unavailable."""

    symbol: str
    orderbook: float | None = None
    flow: float | None = None
    book_levels: int = 0
    n_trades: int = 0
    retries: int = 0
    fetched_at: float = 0.0
    missing: dict[str, str] = field(default_factory=dict)

    def notes(self) -> tuple[str, ...]:
        """One line per missing part, for the decision record."""
        return tuple(f"{k}: {v}" for k, v in self.missing.items())


def _retry(
    fn: Callable[[], Any], data: MarketData, what: str, max_attempts: int, sleep: Callable[[float], None]
) -> Any:
    def count() -> None:
        data.retries += 1

    return ccxt_call(
        fn, what=what, symbol=data.symbol, max_attempts=max_attempts, sleep=sleep, on_retry=count
    )


def fetch_market(
    exchange: ccxt.Exchange,
    symbol: str,
    *,
    depth: int = 10,
    trades_limit: int = DEFAULT_TRADES_LIMIT,
    max_attempts: int = LIVE_MAX_ATTEMPTS,
    timeout_s: float = DEFAULT_MARKET_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> MarketData:
    """Order-book imbalance (top ``depth`` levels) and taker-flow imbalance of recent trades of
    ``symbol``; each part that cannot be had is None with its reason in ``missing``."""
    data = MarketData(symbol=symbol, fetched_at=time.time())
    market = to_ccxt(symbol)
    saved_timeout = exchange.timeout
    exchange.timeout = int(timeout_s * 1000)
    try:
        _fetch_both(exchange, market, data, depth, trades_limit, max_attempts, sleep)
    finally:
        exchange.timeout = saved_timeout
    return data


def _fetch_both(
    exchange: ccxt.Exchange,
    market: str,
    data: MarketData,
    depth: int,
    trades_limit: int,
    max_attempts: int,
    sleep: Callable[[float], None],
) -> None:
    try:
        book = _retry(lambda: exchange.fetch_order_book(market), data, "order book", max_attempts, sleep)
        bids, asks = book.get("bids") or [], book.get("asks") or []
        data.book_levels = min(len(bids), depth) + min(len(asks), depth)
        score = orderbook_score([b[:2] for b in bids], [a[:2] for a in asks], depth=depth)
        if math.isfinite(score):
            data.orderbook = score
        else:
            data.missing["orderbook"] = "empty order book"
    except (ServiceUnavailable, BadInput, ValueError) as exc:
        data.missing["orderbook"] = str(exc)
    try:
        trades = _retry(
            lambda: exchange.fetch_trades(market, limit=trades_limit), data, "trades", max_attempts, sleep
        )
        rows = [t for t in trades if t.get("amount") is not None and t.get("side") in ("buy", "sell")]
        data.n_trades = len(rows)
        sizes = np.array([float(t["amount"]) for t in rows], dtype=np.float64)
        taker_sold = np.array([t["side"] == "sell" for t in rows], dtype=bool)
        flow = flow_score_from_trades(sizes, taker_sold)
        if math.isfinite(flow):
            data.flow = flow
        else:
            data.missing["flow"] = "no recent trades with a taker side"
    except (ServiceUnavailable, BadInput, ValueError) as exc:
        data.missing["flow"] = str(exc)
