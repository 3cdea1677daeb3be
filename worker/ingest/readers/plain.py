"""Plain CSV with a header: ``timestamp,open,high,low,close[,volume]`` in any column order.

The timestamp column may be called timestamp, time, date, datetime or open_time and hold epoch
numbers (s, ms or us, per value) or text dates (ISO 8601, naive = UTC, or ``2019-12-02 03-AM``).
Optional columns: ``quote_volume``, ``trades``, ``taker_buy_volume``. Without ``volume`` the
candles are stored with volume NULL.
"""

from __future__ import annotations

from worker.errors import BadInput
from worker.ingest.readers import text
from worker.ingest.readers.base import OPTIONAL_FIELDS, PRICE_FIELDS, Columns, Source

FORMAT = "plain"
TS_NAMES = ("timestamp", "time", "date", "datetime", "open_time")


def ts_column(names: list[str]) -> int | None:
    """Index of the first timestamp-like column name, or None."""
    return next((names.index(n) for n in TS_NAMES if n in names), None)


def sniff(src: Source) -> bool:
    """A header line with a timestamp column."""
    lines = text.first_lines(src, 1)
    return bool(lines) and ts_column(text.header_cells(lines[0])) is not None


def read(src: Source, symbol: str | None) -> Columns:
    """Rows of a plain headed CSV (``symbol`` is not needed)."""
    body = src.text()
    lines = [ln for ln in body.splitlines() if ln.strip()]
    names = text.header_cells(lines[0])
    ts_col = ts_column(names)
    if ts_col is None:
        raise BadInput(f"{src.label}: no timestamp column in header {lines[0].strip()[:80]!r}")
    missing = [c for c in PRICE_FIELDS if c not in names]
    if missing:
        raise BadInput(
            f"{src.label}: missing column(s) {', '.join(missing)} in header {lines[0].strip()[:80]!r}"
        )
    cols = {c: names.index(c) for c in (*PRICE_FIELDS, "volume", *OPTIONAL_FIELDS) if c in names}
    rows, line_no, blank = text.body_rows(body, 1)
    return text.columns_from_rows(
        FORMAT,
        rows,
        line_no,
        ncols=len(names),
        ts_col=ts_col,
        cols=cols,
        text_dates=True,
        blank_lines=blank,
        source=src.label,
    )
