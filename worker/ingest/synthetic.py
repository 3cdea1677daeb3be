"""Seeded synthetic candles into the store (``qtrain demo``, the integration tests, the benchmarks)."""

from __future__ import annotations

from model.market.synthetic import make_candles
from worker.store import db
from worker.store.candles import insert_candles


def insert_synthetic(database_url: str, n: int, symbols: dict[str, tuple[int, float]]) -> None:
    """Insert ``n`` seeded synthetic hourly candles per ``symbol -> (seed, start price)`` (idempotent)."""
    with db.transaction(database_url) as cur:
        for symbol, (seed, price) in symbols.items():
            c = make_candles(n, seed=seed, price=price, symbol=symbol)
            insert_candles(
                cur,
                symbol,
                "1h",
                c.ts,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                taker_buy_volume=c.taker_buy_volume,
            )
