"""Parse candle files into numpy arrays plus a report of every defect found (pure: bytes in).

``parse_candles`` runs named steps: open the source (unpack a zip or gz), pick its reader by content
and name (``worker.ingest.readers``: CryptoDataDownload both layouts, Binance bulk klines, freqtrade
feather/json, plain CSV), settle symbol and timeframe (``--symbol``/``--timeframe``, else the file
name, else the content), validate every row, resolve duplicates, count gaps, flag outliers.

Policies (every row read ends up in exactly one bucket: a candle, a resolved duplicate, or a
rejection with its reason; nothing is invented):

- Timestamp units are detected per row by magnitude (< 1e11 seconds, < 1e14 ms, else us), so a
  file mixing ms and float seconds is read correctly; fractional seconds are rejected. Text dates
  may be ISO 8601 or CryptoDataDownload's 12-hour ``2019-12-02 03-AM``, mixed in one file (UTC).
- Rows are rejected with a reason for: wrong field count, missing/unparseable timestamp, NULL or
  empty or non-numeric required field, non-positive price, negative volume, high/low not bounding
  open/close, timestamp not aligned to the timeframe, timestamp before 2009 or in the future.
  NULL/empty *optional* fields (trades, quote volume, taker volume) are stored as NULL and counted.
  The candle rules among them are ``worker.store.candles.candle_defects``, which ``candles fetch`` uses too.
- A file without a volume column imports with volume NULL (never 0: that would be a real quiet
  hour); the report says so, and training refuses such a symbol naming the column
  (``worker.store.candles.count_missing_volume``) since the state uses ``volume_z``.
- Timeframe when neither given nor named by the file: the most common spacing of the timestamps
  if it is a known timeframe, else 1h; the report says where symbol and timeframe came from.
- Duplicate timestamps are resolved by ``on_conflict`` (see ``CONFLICT_POLICIES``); identical
  copies and conflicting ones are counted separately.
- Gaps stay gaps: counted, with the longest run of missing candles.
- Outliers (``model.market.defects``): a candle whose range (high-low)/close exceeds ``OUTLIER_RANGE_FACTOR``
  times the median range of its ``OUTLIER_NEIGHBOURS`` neighbours on each side is kept and flagged
  ``outlier_range`` (never dropped: a real crash and a bad tick look alike to a program; the flag
  lets consumers decide). The factor 20 sits above the largest genuine hourly moves in 2017-2021
  BTC/ETH data (about 17x) and well below the bad ticks in them (>100x).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.candles import TIMEFRAME_SECONDS, minute_utc, timeframe_seconds
from model.market.defects import OUTLIER_FLAG, outliers
from worker.errors import BadInput
from worker.ingest import readers
from worker.ingest.checks import (
    check_symbols,
    count_gaps,
    file_order,
    resolve_duplicates,
    tally_rejections,
    validate,
)
from worker.ingest.readers.base import OPTIONAL_FIELDS, PRICE_FIELDS, Columns
from worker.ingest.readers.names import NameHint, identify
from worker.ingest.report import NO_VOLUME, ImportReport
from worker.symbols import normalize_symbol

#: How duplicate timestamps with different values are resolved (the first one is the default).
#: ``most-complete`` keeps the row with the most non-NULL optional fields, ties to the first in
#: the file: in CryptoDataDownload exports each conflicting pair is an exact millisecond row (with
#: tradecount) and a rounded float-second copy (tradecount NULL), so it keeps the exchange's own
#: numbers whatever the file order. ``first``/``last``: by file position. ``max-volume``: the
#: larger volume, ties to the first. ``reject``: refuse the whole file (nothing written).
CONFLICT_POLICIES: tuple[str, ...] = ("most-complete", "first", "last", "max-volume", "reject")
DEFAULT_ON_CONFLICT = "most-complete"
DEFAULT_TIMEFRAME = "1h"

MAX_FILE_BYTES = 2 * 1024**3
_EXAMPLES = 5


@dataclass(frozen=True)
class ParsedCandles:
    """Validated, de-duplicated candles, oldest first; NaN marks a NULL volume or optional value."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray
    taker_buy_volume: np.ndarray
    outlier: np.ndarray
    report: ImportReport


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``; BadInput with one line when it is missing, a directory or unreadable."""
    p = Path(path)
    try:
        if p.is_dir():
            raise BadInput(f"{p}: is a directory, not a candle file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BadInput(f"{p}: {size} bytes is too large to import (limit {MAX_FILE_BYTES})")
        return p.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{p}: no such file") from None
    except PermissionError:
        raise BadInput(f"{p}: permission denied") from None
    except OSError as exc:
        raise BadInput(f"{p}: cannot read ({exc.strerror or exc})") from None


def parse_candles(
    data: bytes,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    on_conflict: str = DEFAULT_ON_CONFLICT,
    source: str = "<input>",
    now: float | None = None,
    fmt: str | None = None,
    name: str | None = None,
) -> ParsedCandles:
    """Parse and validate a candle file (any supported format) into candles and an ``ImportReport``.

    ``symbol``/``timeframe`` override what the file name (``name``, default: ``source``'s) says;
    ``fmt`` overrides detection. BadInput when the file as a whole cannot be used (unreadable,
    unknown format, no valid row, a conflicting duplicate under ``on_conflict='reject'``);
    row-level defects are counted instead.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise BadInput(f"unknown --on-conflict {on_conflict!r}: use one of {', '.join(CONFLICT_POLICIES)}")
    given = normalize_symbol(symbol) if symbol else None
    outer = name or Path(source).name
    src = readers.open_source(data, outer, source)
    reader = readers.detect(src, fmt)
    hint = identify(src.name)
    if hint.symbol is None and hint.timeframe is None:
        hint = identify(outer)
    check_market(hint, given, source)
    cols = reader.read(src, given or hint.symbol)
    sym, sym_from = settle_symbol(given, hint, cols, source)
    tf, tf_from = settle_timeframe(timeframe, hint, cols, source)
    report = ImportReport(source, cols.fmt, sym, tf, on_conflict, sym_from, tf_from, hint.candle_type)
    report.rows_read, report.blank_lines = len(cols), cols.blank_lines
    report.volume_missing = "volume" not in cols.values
    reason = validate(cols, report, now)
    if cols.symbol_cells is not None:
        check_symbols(cols.symbol_cells, reason, sym, sym_from, source)
    valid = tally_rejections(cols, reason, report)
    return _assemble(cols, valid, report, on_conflict, source)


def check_market(hint: NameHint, given: str | None, source: str) -> None:
    """Refuse freqtrade funding-rate files, and futures/mark/index files without ``--symbol``."""
    if hint.not_prices:
        raise BadInput(
            f"{source}: a freqtrade {hint.candle_type} file holds no price candles: nothing to import"
        )
    if hint.other_market and given is None:
        raise BadInput(
            f"{source}: freqtrade {hint.candle_type} candles are not {hint.symbol}'s spot candles: "
            "give --symbol to store them under a name of your choice"
        )


def settle_symbol(given: str | None, hint: NameHint, cols: Columns, source: str) -> tuple[str, str]:
    """(symbol, where it came from): ``--symbol``, else the file name, else the file's content."""
    if given:
        return given, "--symbol"
    if hint.symbol:
        return hint.symbol, "file name"
    if cols.content_symbol:
        return cols.content_symbol, "file content"
    raise BadInput(f"{source}: the file name does not say the symbol: give --symbol (e.g. BTC-USDT)")


def settle_timeframe(given: str | None, hint: NameHint, cols: Columns, source: str) -> tuple[str, str]:
    """(timeframe, where it came from): ``--timeframe``, file name, the timestamps' spacing, or 1h."""
    if given:
        tf, origin = given, "--timeframe"
    elif hint.timeframe:
        tf, origin = hint.timeframe, "file name"
    else:
        spaced = infer_timeframe(cols.ts)
        tf, origin = (spaced, "spacing") if spaced else (DEFAULT_TIMEFRAME, "default")
    if tf not in TIMEFRAME_SECONDS:
        known = ", ".join(TIMEFRAME_SECONDS)
        raise BadInput(f"{source}: unknown timeframe {tf!r} (from {origin}): use one of {known}")
    return tf, origin


def infer_timeframe(ts: np.ndarray) -> str | None:
    """The known timeframe that is the spacing of most distinct timestamps, or None when unclear.

    Clear means: at least 3 distinct times, the most common step is a known timeframe, it is at
    least half of all steps and at least 90% of the steps are whole multiples of it (gaps allowed).
    """
    t = np.unique(ts[np.isfinite(ts)])
    if len(t) < 3:
        return None
    d = np.diff(t)
    steps, counts = np.unique(d, return_counts=True)
    mode = steps[np.argmax(counts)]
    if counts.max() * 2 < len(d) or np.count_nonzero(d % mode == 0) < 0.9 * len(d):
        return None
    return next((k for k, v in TIMEFRAME_SECONDS.items() if v == mode), None)


def _assemble(
    cols: Columns, valid: np.ndarray, report: ImportReport, on_conflict: str, source: str
) -> ParsedCandles:
    """Keep one row per timestamp, oldest first; fill gaps, outliers and the counts of the report."""
    idx = np.flatnonzero(valid)
    ts = cols.ts[idx].astype(np.int64)
    report.order = file_order(ts)
    n = len(cols)
    fields = (*PRICE_FIELDS, "volume", *OPTIONAL_FIELDS)
    values = {k: cols.values.get(k, np.full(n, np.nan))[idx] for k in fields}
    keep = resolve_duplicates(ts, idx, values, on_conflict, report, source)
    ts = ts[keep]
    values = {k: v[keep] for k, v in values.items()}
    report.candles = len(ts)
    report.first_ts, report.last_ts = int(ts[0]), int(ts[-1])
    count_gaps(ts, timeframe_seconds(report.timeframe), report)
    outlier = outliers(values["high"], values["low"], values["close"])
    report.outliers_flagged = int(outlier.sum())
    report.outlier_examples = [int(t) for t in ts[outlier][:_EXAMPLES]]
    return ParsedCandles(ts=ts, outlier=outlier, report=report, **values)


def summary_rows(report: ImportReport) -> list[tuple[str, str]]:
    """(what, how many / how) lines of the import summary, in reading order."""

    def when(ts: int | None) -> str:
        return "-" if ts is None else minute_utc(ts)

    rows = [
        ("format", report.format + (f" ({report.candle_type})" if report.candle_type else "")),
        (
            "symbol, timeframe",
            f"{report.symbol} (from {report.symbol_from}), {report.timeframe} (from {report.timeframe_from})",
        ),
        ("rows read", str(report.rows_read)),
        ("order in file", report.order),
        ("timestamp units", ", ".join(f"{k}: {v}" for k, v in sorted(report.ts_units.items()))),
    ]
    if report.volume_missing:
        rows.append(("volume", NO_VOLUME))
    for k, v in sorted(report.null_optional.items()):
        rows.append((f"NULL/empty {k} (stored NULL)", str(v)))
    rows.append(("duplicate timestamps", str(report.duplicate_timestamps)))
    rows.append(("  identical copies dropped", str(report.duplicates_identical)))
    rows.append((f"  conflicting resolved ({report.on_conflict})", str(report.duplicates_conflicting)))
    for k, v in sorted(report.rejected.items()):
        rows.append((f"rejected: {k}", str(v)))
    rows.append(("candles in file", f"{report.candles} ({when(report.first_ts)} .. {when(report.last_ts)})"))
    longest = (
        f", longest {report.longest_gap} missing from {when(report.longest_gap_start)}" if report.gaps else ""
    )
    rows.append(("gaps (kept as gaps)", f"{report.gaps}{longest}"))
    flagged = ", ".join(when(t) for t in report.outlier_examples)
    rows.append(
        (
            f"outliers flagged '{OUTLIER_FLAG}' (kept)",
            f"{report.outliers_flagged}" + (f": {flagged}" if flagged else ""),
        )
    )
    if report.inserted is not None:
        rows.append(("inserted", str(report.inserted)))
        rows.append(("already present (kept stored)", str(report.already_present)))
        if report.already_present_differing:
            rows.append(("  of which stored values differ", str(report.already_present_differing)))
    rows.append(("every row accounted for", "yes" if report.accounted() else "NO"))
    return rows
