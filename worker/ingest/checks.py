"""Row checks of the import: validation reasons, their tally, duplicates, order and gaps (pure numpy).

Every row read ends in exactly one bucket: a candle, a resolved duplicate, or a rejection with
its reason (the first defect found wins, in the order of ``validate``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from worker.errors import BadInput
from worker.ingest.readers.base import OPTIONAL_FIELDS, PRICE_FIELDS, Columns
from worker.ingest.report import ImportReport
from worker.store.candles import candle_defects, first_defect
from worker.symbols import normalize_symbol

_EXAMPLES = 5


def time_now() -> float:
    """Current epoch seconds (a function so that tests can pass ``now`` instead)."""
    return datetime.now(UTC).timestamp()


def validate(cols: Columns, report: ImportReport, now: float | None) -> np.ndarray:
    """Reason per row ('' = valid), the first defect found winning; counts NULL optional cells. The
    file's own defects first (unreadable cells, optional fields), then the store's candle checks."""
    reason = cols.reason.copy()
    required = [*PRICE_FIELDS, *(["volume"] if "volume" in cols.values else [])]
    for name in required:
        v = cols.values[name]
        first_defect(reason, np.isnan(v) & ~cols.bad[name], f"NULL or empty {name}")
        first_defect(reason, cols.bad[name], f"not a number in {name}")
    for name in OPTIONAL_FIELDS:
        if name not in cols.values:
            continue
        v, bad = cols.values[name], cols.bad[name]
        null = np.isnan(v) & ~bad
        first_defect(reason, bad, f"not a number in {name}")
        with np.errstate(invalid="ignore"):
            first_defect(reason, ~null & ~bad & (v < 0), f"negative {name}")
            if name == "trades":
                first_defect(reason, ~null & ~bad & (v != np.floor(v)), "trades not a whole number")
        counted = null & (reason == "")
        if counted.any():
            report.null_optional[name] = int(counted.sum())
    o, h, lo, c = (cols.values[k] for k in PRICE_FIELDS)
    at = time_now() if now is None else now
    vol = cols.values.get("volume")
    return candle_defects(cols.ts, o, h, lo, c, vol, timeframe=report.timeframe, now=at, reason=reason)


def tally_rejections(cols: Columns, reason: np.ndarray, report: ImportReport) -> np.ndarray:
    """Count rejections by reason with a few examples; the mask of valid rows (BadInput if none)."""
    valid: np.ndarray = np.asarray(reason == "", dtype=bool)
    for r in np.unique(reason[~valid]):
        report.rejected[str(r)] = int((reason == r).sum())
    for i in np.flatnonzero(~valid)[:_EXAMPLES]:
        report.rejected_examples.append(f"{cols.row_word} {cols.row_no[i]}: {reason[i]}")
    if not valid.any():
        first = report.rejected_examples[0] if report.rejected_examples else "?"
        raise BadInput(f"{report.source}: no valid candle rows ({len(cols)} rejected; first: {first})")
    for u in np.unique(cols.ts_unit[valid]):
        report.ts_units[str(u)] = int((cols.ts_unit[valid] == u).sum())
    return valid


def check_symbols(cells: list[str], reason: np.ndarray, symbol: str, origin: str, source: str) -> None:
    """Reject rows with an invalid ``symbol`` cell; BadInput when a cell names another symbol."""
    cache: dict[str, str | None] = {}
    for i, cell in enumerate(cells):
        if reason[i]:
            continue
        if cell not in cache:
            try:
                cache[cell] = normalize_symbol(cell)
            except BadInput:
                cache[cell] = None
        got = cache[cell]
        if got is None:
            reason[i] = "invalid symbol cell"
        elif got != symbol:
            raise BadInput(
                f"{source}: file holds {got} rows but the symbol is {symbol} (from {origin}): check --symbol"
            )


def file_order(ts: np.ndarray) -> str:
    d = np.diff(ts)
    if len(d) == 0 or (d >= 0).all():
        return "oldest-first"
    if (d <= 0).all():
        return "newest-first"
    return "unordered"


def resolve_duplicates(
    ts: np.ndarray,
    pos: np.ndarray,
    cols: dict[str, np.ndarray],
    policy: str,
    report: ImportReport,
    source: str,
) -> np.ndarray:
    """Indices (into ``ts``) of the one row kept per timestamp, sorted by time."""
    nonnull = sum(
        (~np.isnan(cols[k])).astype(np.int64) for k in ("quote_volume", "trades", "taker_buy_volume")
    )
    if policy == "last":
        order = np.lexsort((-pos, ts))
    elif policy == "max-volume":
        order = np.lexsort((pos, -cols["volume"], ts))
    elif policy == "most-complete":
        order = np.lexsort((pos, -nonnull, ts))
    else:  # first, reject
        order = np.lexsort((pos, ts))
    sts = ts[order]
    head = np.r_[True, sts[1:] != sts[:-1]]
    group_head = order[np.maximum.accumulate(np.where(head, np.arange(len(order)), 0))]
    dropped = order[~head]
    kept_for_dropped = group_head[~head]
    same = np.ones(len(dropped), dtype=bool)
    for v in cols.values():
        a, b = v[dropped], v[kept_for_dropped]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))
    report.duplicate_timestamps = len(np.unique(ts[dropped]))
    report.duplicates_identical = int(same.sum())
    report.duplicates_conflicting = int((~same).sum())
    if policy == "reject" and report.duplicates_conflicting:
        first = datetime.fromtimestamp(int(ts[dropped[~same][0]]), UTC).isoformat()
        raise BadInput(
            f"{source}: {report.duplicates_conflicting} duplicate timestamps with conflicting values "
            f"(first at {first}) and --on-conflict reject: pick another policy"
        )
    return order[head]


def count_gaps(ts: np.ndarray, step: int, report: ImportReport) -> None:
    missing = np.diff(ts) // step - 1
    where = np.flatnonzero(missing > 0)
    report.gaps = len(where)
    if len(where):
        j = where[np.argmax(missing[where])]
        report.longest_gap = int(missing[j])
        report.longest_gap_start = int(ts[j] + step)
