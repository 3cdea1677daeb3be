"""Import candle files into PostgreSQL: parse (``importer``), then the store's step (``store_candles``).

One file, or every candle file of a directory (``directory.plan``), in ONE transaction: a file
that cannot be read writes nothing. Each report says what was parsed and what was inserted.
"""

from __future__ import annotations

import time

from worker.ingest import directory, importer
from worker.ingest.report import ImportReport
from worker.settings import Settings
from worker.store import candles as candles_store
from worker.store import db
from worker.store.db import Cursor


def import_file(
    settings: Settings,
    file: str,
    symbol: str | None = None,
    timeframe: str | None = None,
    *,
    on_conflict: str = importer.DEFAULT_ON_CONFLICT,
    fmt: str | None = None,
) -> ImportReport:
    """Parse ``file`` and insert its candles in one transaction; the report says what was done."""
    with db.transaction(settings.database_url) as cur:
        return _import_into(cur, file, symbol, timeframe, on_conflict, fmt)


def import_directory(
    settings: Settings,
    path: str,
    symbol: str | None = None,
    timeframe: str | None = None,
    *,
    on_conflict: str = importer.DEFAULT_ON_CONFLICT,
    fmt: str | None = None,
) -> directory.DirectoryImport:
    """Import every candle file under ``path`` in ONE transaction (a bad file writes nothing)."""
    plan = directory.plan(path, symbol, timeframe)
    with db.transaction(settings.database_url) as cur:
        for f in plan.files:
            plan.reports.append(_import_into(cur, str(f.path), f.symbol, f.timeframe, on_conflict, fmt))
    return plan


def _import_into(
    cur: Cursor, file: str, symbol: str | None, timeframe: str | None, on_conflict: str, fmt: str | None
) -> ImportReport:
    """Parse one file and insert it through ``cur`` (the caller's transaction)."""
    t0 = time.perf_counter()
    parsed = importer.parse_candles(
        importer.read_file(file),
        symbol=symbol,
        timeframe=timeframe,
        on_conflict=on_conflict,
        source=file,
        fmt=fmt,
    )
    report = parsed.report
    t1 = time.perf_counter()
    res = candles_store.store_candles(
        cur,
        report.symbol,
        report.timeframe,
        parsed.ts,
        parsed.open,
        parsed.high,
        parsed.low,
        parsed.close,
        parsed.volume,
        outlier=parsed.outlier,
        quote_volume=parsed.quote_volume,
        trades=parsed.trades,
        taker_buy_volume=parsed.taker_buy_volume,
    )
    report.inserted = res.inserted
    report.already_present = res.already_present
    report.already_present_differing = res.already_present_differing
    report.seconds_parse = round(t1 - t0, 4)
    report.seconds_insert = round(time.perf_counter() - t1, 4)
    return report
