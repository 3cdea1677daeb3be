"""Binance public bulk data (data.binance.vision) kline CSVs, inside their ``.zip`` or unpacked.

Twelve columns: open_time, open, high, low, close, volume, close_time, quote_asset_volume,
number_of_trades, taker_buy_base_asset_volume, taker_buy_quote_asset_volume, ignore. No header
(spot) or an ``open_time,...`` header (futures files). Open time is in milliseconds, and in
microseconds from 2025-01-01 on: the unit is told per value by magnitude. Symbol and timeframe
come from the file name ``BTCUSDT-1h-2024-01.zip`` (monthly) or ``BTCUSDT-1h-2024-01-15.zip``
(daily) unless given.
"""

from __future__ import annotations

import re

from worker.errors import BadInput
from worker.ingest.readers import text
from worker.ingest.readers.base import Columns, Source

FORMAT = "binance"
HEADER = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
NCOLS = len(HEADER)
#: ``<SYMBOL>-<interval>-<YYYY>-<MM>[-<DD>]`` with an optional .csv/.zip ending.
NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{4,24})-(?P<tf>\d+[smhdwM]o?)-\d{4}-\d{2}(?:-\d{2})?(?:\.csv|\.zip)*$"
)
_COLS = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7, "trades": 8}


def _has_header(names: list[str]) -> bool:
    return names[:1] == ["open_time"]


def sniff(src: Source) -> bool:
    """An ``open_time`` header, or a first row of 12 numbers, or a Binance bulk file name."""
    lines = text.first_lines(src, 1)
    if not lines:
        return bool(NAME.match(src.name))
    names = text.header_cells(lines[0])
    numeric = len(names) == NCOLS and text.is_number(names[0])
    return _has_header(names) or numeric or bool(NAME.match(src.name))


def read(src: Source, symbol: str | None) -> Columns:
    """Rows of a Binance kline CSV (``symbol`` is not needed)."""
    body = src.text()
    lines = text.first_lines(src, 1)
    names = text.header_cells(lines[0]) if lines else []
    header = _has_header(names)
    if len(names) != NCOLS:
        what = "header has" if header else "first row has"
        raise BadInput(f"{src.label}: Binance kline CSV needs {NCOLS} columns, {what} {len(names)}")
    rows, line_no, blank = text.body_rows(body, 1 if header else 0)
    return text.columns_from_rows(
        FORMAT,
        rows,
        line_no,
        ncols=NCOLS,
        ts_col=0,
        cols={**_COLS, "taker_buy_volume": 9},
        text_dates=False,
        blank_lines=blank,
        source=src.label,
    )
