"""Shared steps of the CSV readers: split rows, turn cells into floats and timestamps, build Columns."""

from __future__ import annotations

import csv
import math
import re
from datetime import UTC, datetime

import numpy as np

from worker.errors import BadInput
from worker.ingest.readers.base import Columns, Source

NULLS = frozenset({"", "null", "none", "nan", "n/a", "na"})
#: (lowest magnitude, divisor, name): epoch units told apart per value by magnitude.
_UNITS = ((1e14, 1_000_000.0, "us"), (1e11, 1000.0, "ms"), (0.0, 1.0, "s"))
#: CryptoDataDownload's older 12-hour style: ``2019-12-02 03-AM`` (also ``03:00:00 PM``).
_TWELVE_HOUR = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2})(?:[-:](\d{2}))?(?:[-:](\d{2}))?\s*-?\s*([AP]M)$", re.I
)


def first_lines(src: Source, n: int = 3) -> list[str]:
    """The first ``n`` non-blank lines of ``src`` (for sniffing; '' entries never returned)."""
    head = src.data[:8192].decode("utf-8-sig", errors="replace")
    return [ln for ln in head.splitlines() if ln.strip()][:n]


def header_cells(line: str) -> list[str]:
    """Lower-cased, stripped cells of a header line."""
    return [h.strip().lower() for h in next(csv.reader([line]), [])]


def is_number(cell: str) -> bool:
    """True when ``cell`` parses as a float."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def body_rows(text: str, header_lines: int) -> tuple[list[list[str]], list[int], int]:
    """(rows, file line number of each, blank lines after the header) skipping ``header_lines``."""
    rows: list[list[str]] = []
    line_no: list[int] = []
    blank = 0
    header_left = header_lines
    for no, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not (row[0].strip() or any(c.strip() for c in row)):
            blank += 1 if header_left == 0 else 0
            continue
        if header_left:
            header_left -= 1
            continue
        rows.append(row)
        line_no.append(no)
    return rows, line_no, blank


def floats(cells: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, is_null, is_bad) of text cells; NULL-like cells give NaN, scientific notation is fine."""
    try:
        values = np.array(cells, dtype=np.float64)
        return values, np.isnan(values), np.isinf(values)
    except ValueError:
        pass
    n = len(cells)
    values = np.full(n, np.nan)
    null = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, cell in enumerate(cells):
        c = cell.strip()
        if c.lower() in NULLS:
            null[i] = True
            continue
        try:
            v = float(c)
        except ValueError:
            bad[i] = True
            continue
        if math.isnan(v):
            null[i] = True
        elif math.isinf(v):
            bad[i] = True
        else:
            values[i] = v
    return values, null, bad


def epoch_seconds(raw: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, unit name) of epoch numbers, the unit told per value by magnitude (s, ms or us)."""
    seconds = np.full(len(raw), np.nan)
    unit = np.full(len(raw), "", dtype=object)
    for lo, div, name in _UNITS:
        with np.errstate(invalid="ignore"):
            sel = usable & (np.abs(raw) >= lo) & (unit == "")
        seconds[sel] = raw[sel] / div
        unit[sel] = name
    return seconds, unit


def parse_date(cell: str) -> tuple[float, str] | None:
    """(epoch seconds, style) of an ISO 8601 or 12-hour ``2019-12-02 03-AM`` text date (naive = UTC)."""
    m = _TWELVE_HOUR.match(cell)
    if m:
        day, hour, minute, second, half = m.groups()
        h = int(hour)
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if half.upper() == "PM" else 0)
        try:
            dt = datetime.fromisoformat(day).replace(
                hour=h, minute=int(minute or 0), second=int(second or 0), tzinfo=UTC
            )
        except ValueError:
            return None
        return dt.timestamp(), "12-hour"
    try:
        dt = datetime.fromisoformat(cell)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp(), "iso8601"


def timestamps(cells: list[str], text_dates: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(epoch seconds, unit or date style per row, reason per bad row or '') from text cells."""
    raw, null, bad = floats(cells)
    seconds, unit = epoch_seconds(raw, ~null & ~bad)
    reasons = [""] * len(cells)
    for i in np.flatnonzero(null | bad):
        cell = cells[i].strip()
        if cell.lower() in NULLS:
            reasons[i] = "timestamp missing"
            continue
        parsed = parse_date(cell) if text_dates else None
        if parsed is None:
            reasons[i] = "timestamp unparseable"
        else:
            seconds[i], unit[i] = parsed
    return seconds, unit, reasons


def columns_from_rows(
    fmt: str,
    rows: list[list[str]],
    line_no: list[int],
    *,
    ncols: int,
    ts_col: int,
    cols: dict[str, int],
    text_dates: bool,
    blank_lines: int = 0,
    symbol_col: int | None = None,
    source: str = "<input>",
) -> Columns:
    """``Columns`` of CSV ``rows`` whose field ``name`` is in column ``cols[name]``."""
    n = len(rows)
    if n == 0:
        raise BadInput(f"{source}: header but no data rows")
    reason = np.full(n, "", dtype=object)
    width_ok = np.array([len(r) == ncols for r in rows], dtype=bool)
    reason[~width_ok] = f"wrong number of fields (expected {ncols})"
    good = [r if ok else [""] * ncols for r, ok in zip(rows, width_ok, strict=True)]
    ts, unit, ts_reasons = timestamps([r[ts_col] for r in good], text_dates)
    for i, why in enumerate(ts_reasons):
        if why and not reason[i]:
            reason[i] = why
    values: dict[str, np.ndarray] = {}
    bad: dict[str, np.ndarray] = {}
    for name, idx in cols.items():
        values[name], _, bad[name] = floats([r[idx] for r in good])
    symbols = None if symbol_col is None else [r[symbol_col] for r in good]
    return Columns(
        fmt=fmt,
        ts=ts,
        ts_unit=unit,
        reason=reason,
        values=values,
        bad=bad,
        row_no=np.array(line_no, dtype=np.int64),
        blank_lines=blank_lines,
        symbol_cells=symbols,
    )
