"""Candle storage in PostgreSQL (``btc.candles``): the checks every candle passes on its way in, bulk
insert, load as ``Candles``, list coverage.

Inserts go through ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING``: a stored candle is never overwritten, so re-importing a file inserts nothing.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2
import psycopg2.extensions

from model.candles import TIMEFRAME_SECONDS, Candles, minute_utc, timeframe_seconds
from model.features import WARMUP
from model.market.defects import OUTLIER_FLAG
from worker.errors import BadInput
from worker.store import db
from worker.store.db import Cursor
from worker.symbols import normalize_symbol

_COLUMNS = (
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "flag",
)
NO_SCHEMA = db.SCHEMA_MISSING  # the one text of a missing table (db.map_error)


@dataclass(frozen=True)
class InsertResult:
    """Rows offered, inserted, and already stored (of which with different stored values)."""

    offered: int
    inserted: int
    already_present: int
    already_present_differing: int


def _check_timeframe(timeframe: str) -> int:
    try:
        return timeframe_seconds(timeframe)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _cell(v: float) -> str:
    return "\\N" if v != v else repr(float(v))  # NaN -> NULL; repr round-trips float64 exactly


def _copy_buffer(
    ts: np.ndarray,
    ohlcv: tuple[np.ndarray, ...],
    optional: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None],
    flag: np.ndarray | list[str | None] | None,
) -> io.StringIO:
    n = len(ts)
    none = np.full(n, np.nan)
    qv, tr, tb = (none if a is None else np.asarray(a, dtype=np.float64) for a in optional)
    cols = [np.asarray(a, dtype=np.float64).tolist() for a in ohlcv]
    qv_l, tr_l, tb_l = qv.tolist(), tr.tolist(), tb.tolist()
    flags = [None] * n if flag is None else list(flag)
    out = io.StringIO()
    write = out.write
    for i, t in enumerate(np.asarray(ts, dtype=np.int64).tolist()):
        trades = "\\N" if tr_l[i] != tr_l[i] else str(int(tr_l[i]))
        f = flags[i]
        write(
            f"{t}\t{cols[0][i]!r}\t{cols[1][i]!r}\t{cols[2][i]!r}\t{cols[3][i]!r}\t{_cell(cols[4][i])}\t"
            f"{_cell(qv_l[i])}\t{trades}\t{_cell(tb_l[i])}\t{f if f else chr(92) + 'N'}\n"
        )
    out.seek(0)
    return out


def insert_candles_report(
    cur: Cursor,
    symbol: str,
    timeframe: str,
    ts: np.ndarray,
    open: np.ndarray,  # noqa: A002 - the column's name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    quote_volume: np.ndarray | None = None,
    trades: np.ndarray | None = None,
    taker_buy_volume: np.ndarray | None = None,
    flag: np.ndarray | list[str | None] | None = None,
) -> InsertResult:
    """Bulk-insert candles (ts epoch seconds; NaN volume and optional values become NULL) in the
    caller's transaction; existing ``(symbol, timeframe, ts)`` rows are kept, never overwritten."""
    symbol = normalize_symbol(symbol)
    _check_timeframe(timeframe)
    n = len(ts)
    if n == 0:
        return InsertResult(0, 0, 0, 0)
    buf = _copy_buffer(ts, (open, high, low, close, volume), (quote_volume, trades, taker_buy_volume), flag)
    cur.execute("SAVEPOINT candles_insert")
    try:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _candles_in (ts bigint, open float8, high float8, low float8,"
            " close float8, volume float8, quote_volume float8, trades bigint, taker_buy_volume float8,"
            " flag text) ON COMMIT DROP"
        )
        cur.execute("TRUNCATE _candles_in")
        cur.copy_expert(f"COPY _candles_in ({', '.join(_COLUMNS)}) FROM STDIN", buf)
        cur.execute(
            "SELECT count(*) FROM _candles_in i JOIN btc.candles c ON c.symbol = %s AND c.timeframe = %s"
            " AND c.ts = to_timestamp(i.ts) WHERE (c.open, c.high, c.low, c.close, c.volume)"
            " IS DISTINCT FROM (i.open, i.high, i.low, i.close, i.volume)",
            (symbol, timeframe),
        )
        differing = int(cur.fetchone()[0])
        cur.execute(
            "INSERT INTO btc.candles (symbol, timeframe, ts, open, high, low, close, volume,"
            " quote_volume, trades, taker_buy_volume, flag)"
            " SELECT %s, %s, to_timestamp(ts), open, high, low, close, volume, quote_volume, trades,"
            " taker_buy_volume, flag FROM _candles_in ORDER BY ts ON CONFLICT DO NOTHING",
            (symbol, timeframe),
        )
        inserted = cur.rowcount
    except psycopg2.errors.UndefinedTable:
        cur.execute("ROLLBACK TO SAVEPOINT candles_insert")
        raise BadInput(NO_SCHEMA) from None
    cur.execute("RELEASE SAVEPOINT candles_insert")
    return InsertResult(n, inserted, n - inserted, differing)


def insert_candles(
    cur: Cursor,
    symbol: str,
    timeframe: str,
    ts: np.ndarray,
    open: np.ndarray,  # noqa: A002 - the column's name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    **optional: Any,
) -> int:
    """Bulk-insert candles like ``insert_candles_report``; returns the number of rows inserted."""
    return insert_candles_report(
        cur, symbol, timeframe, ts, open, high, low, close, volume, **optional
    ).inserted


#: Earliest plausible candle (the Bitcoin genesis block, 2009-01-03 UTC): catches unit mistakes.
MIN_TS = 1230940800


def first_defect(reason: np.ndarray, mask: np.ndarray, why: str) -> None:
    """Record ``why`` for the rows of ``mask`` that have no reason yet: the first defect found wins."""
    reason[mask & (reason == "")] = why


def candle_defects(
    ts: np.ndarray,
    open: np.ndarray,  # noqa: A002 - the column's name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray | None,
    *,
    timeframe: str,
    now: float,
    reason: np.ndarray | None = None,
) -> np.ndarray:
    """The first defect of each candle ('' = none): the checks every candle passes on its way in, a
    file's rows (``worker.ingest``) and an exchange's pages (``worker.clients.exchange``) alike.

    In this order: NULL price or volume, price <= 0, negative volume, high/low not bounding
    open/close, a fraction of a second, not aligned to ``timeframe``, before 2009 or later than
    ``now`` plus one candle. ``volume`` None: the source has none (stored NULL). ``reason``: the
    defects the caller found before (kept, and filled in place)."""
    step = _check_timeframe(timeframe)
    out = np.full(len(ts), "", dtype=object) if reason is None else reason
    prices = {"open": open, "high": high, "low": low, "close": close}
    for name, v in (prices if volume is None else {**prices, "volume": volume}).items():
        first_defect(out, np.isnan(v), f"NULL or empty {name}")
    vol = np.full(len(ts), np.nan) if volume is None else volume
    t = np.asarray(ts, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        first_defect(out, (open <= 0) | (high <= 0) | (low <= 0) | (close <= 0), "price <= 0")
        first_defect(out, vol < 0, "negative volume")
        bound = (high < np.maximum(open, close)) | (low > np.minimum(open, close))
        first_defect(out, bound, "high/low do not bound open/close")
        first_defect(out, t != np.floor(t), "timestamp has a fraction of a second")
        whole = np.where(np.isfinite(t), t, 0).astype(np.int64)
        first_defect(out, whole % step != 0, f"timestamp not aligned to {timeframe}")
        late = (t < MIN_TS) | (t > now + step)
        first_defect(out, late, "timestamp out of range (before 2009 or in the future)")
    return out


def store_candles(
    cur: Cursor,
    symbol: str,
    timeframe: str,
    ts: np.ndarray,
    open: np.ndarray,  # noqa: A002 - the column's name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    outlier: np.ndarray,
    quote_volume: np.ndarray | None = None,
    trades: np.ndarray | None = None,
    taker_buy_volume: np.ndarray | None = None,
) -> InsertResult:
    """Store candles that passed ``candle_defects``, those ``outlier`` marks flagged ``OUTLIER_FLAG``
    (kept, never dropped): the one way a file's and an exchange's candles reach the table."""
    optional = {"quote_volume": quote_volume, "trades": trades, "taker_buy_volume": taker_buy_volume}
    flag = np.full(len(ts), None, dtype=object)
    flag[np.asarray(outlier, dtype=bool)] = OUTLIER_FLAG
    return insert_candles_report(
        cur, symbol, timeframe, ts, open, high, low, close, volume, **optional, flag=flag
    )


def max_ts(cur: Cursor, symbol: str, timeframe: str) -> int | None:
    """Epoch seconds of the newest stored candle of ``symbol``/``timeframe``, or None."""
    try:
        cur.execute(
            "SELECT extract(epoch FROM max(ts))::bigint FROM btc.candles"
            " WHERE symbol = %s AND timeframe = %s",
            (normalize_symbol(symbol), timeframe),
        )
    except psycopg2.errors.UndefinedTable:
        raise BadInput(NO_SCHEMA) from None
    row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def load_candles(
    database_url: str,
    symbol: str,
    timeframe: str,
    *,
    since: int | None = None,
    until: int | None = None,
) -> Candles:
    """Stored candles of ``symbol``/``timeframe`` oldest first, ``since <= ts < until`` (epoch s).

    ``taker_buy_volume`` is None unless every loaded candle has it (never partly invented); a NULL
    volume (a source without volume) loads as NaN.
    """
    symbol = normalize_symbol(symbol)
    _check_timeframe(timeframe)
    rows = _candle_rows(database_url, symbol, timeframe, since, until)
    if not rows:
        empty = np.zeros(0)
        return Candles(
            np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty, None, symbol, timeframe
        )
    ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    arr = np.array([[np.nan if v is None else v for v in r[1:6]] for r in rows], dtype=np.float64)
    tbv_raw = [r[6] for r in rows]
    tbv = None if any(v is None for v in tbv_raw) else np.array(tbv_raw, dtype=np.float64)
    return Candles(
        ts=ts,
        open=arr[:, 0].copy(),
        high=arr[:, 1].copy(),
        low=arr[:, 2].copy(),
        close=arr[:, 3].copy(),
        volume=arr[:, 4].copy(),
        taker_buy_volume=tbv,
        symbol=symbol,
        timeframe=timeframe,
    )


def _candle_rows(
    database_url: str, symbol: str, timeframe: str, since: int | None, until: int | None
) -> list[Any]:
    """Rows ``(ts, open, high, low, close, volume, taker_buy_volume)`` of ``since <= ts < until``."""
    with db.transaction(database_url) as cur:
        cur.execute(
            "SELECT extract(epoch FROM ts)::bigint, open, high, low, close, volume, taker_buy_volume"
            " FROM btc.candles WHERE symbol = %s AND timeframe = %s"
            " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
            " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint)) ORDER BY ts",
            (symbol, timeframe, since, since, until, until),
        )
        return cur.fetchall()


@dataclass(frozen=True)
class _Span:
    """Candles of ``[since, until)`` as loaded at ``loaded`` (monotonic s); ``tbv_ok`` marks the
    rows whose taker-buy volume is stored (``taker_buy_volume`` holds NaN elsewhere)."""

    since: int
    until: int
    loaded: float
    candles: Candles
    tbv_ok: np.ndarray


class SpanCache:
    """Per process: recently loaded spans of each symbol's candles, so that the windows of a batch
    (~100 candles each, overlapping) cost one query per ``span`` candles instead of one each.

    ``get`` answers exactly what ``load_candles`` answers for the same range, from a span loaded
    at most ``max_age_s`` ago (the analyse step checks every window's candles against the content
    hash the batch recorded and reloads on a mismatch, so a stale span costs a query, never a
    wrong analysis). One thread loads a missing span while the others that need it wait.
    """

    def __init__(self, span: int = 2048, max_age_s: float = 30.0, keep: int = 8) -> None:
        self.span = span
        self.max_age_s = max_age_s
        self.keep = keep
        self._spans: OrderedDict[tuple[str, str, str, int], _Span] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}
        self.loads = 0  # spans loaded (tests, bench)

    def _find(self, key: tuple[str, str, str], since: int, until: int, now: float) -> _Span | None:
        with self._lock:
            for k, sp in reversed(self._spans.items()):
                if (
                    k[:3] == key
                    and sp.since <= since
                    and until <= sp.until
                    and now - sp.loaded <= self.max_age_s
                ):
                    self._spans.move_to_end(k)
                    return sp
        return None

    def get(self, url: str, symbol: str, timeframe: str, *, since: int, until: int) -> Candles:
        """The candles of ``symbol``/``timeframe`` with ``since <= ts < until``, as ``load_candles``."""
        symbol = normalize_symbol(symbol)
        step = _check_timeframe(timeframe)
        key = (url, symbol, timeframe)
        sp = self._find(key, since, until, time.monotonic())
        if sp is None:
            with self._lock:
                loading = self._loading.setdefault(key, threading.Lock())
            with loading:
                sp = self._find(key, since, until, time.monotonic())
                if sp is None:
                    sp = self._load(url, symbol, timeframe, since, max(until, since + self.span * step))
        return self._slice(sp, since, until)

    def _load(self, url: str, symbol: str, timeframe: str, since: int, until: int) -> _Span:
        loaded = time.monotonic()
        rows = _candle_rows(url, symbol, timeframe, since, until)
        n = len(rows)
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        arr = np.array([[np.nan if v is None else v for v in r[1:7]] for r in rows], dtype=np.float64)
        arr = arr.reshape(n, 6)
        tbv_ok = np.fromiter((r[6] is not None for r in rows), dtype=bool, count=n)
        cols = [np.ascontiguousarray(arr[:, j]) for j in range(6)]
        o, h, lo, c, v, tbv = cols
        sp = _Span(since, until, loaded, Candles(ts, o, h, lo, c, v, tbv, symbol, timeframe), tbv_ok)
        with self._lock:
            self._spans[(url, symbol, timeframe, since)] = sp
            self._spans.move_to_end((url, symbol, timeframe, since))
            while len(self._spans) > self.keep:
                self._spans.popitem(last=False)
            self.loads += 1
        return sp

    @staticmethod
    def _slice(sp: _Span, since: int, until: int) -> Candles:
        c = sp.candles
        lo, hi = (int(i) for i in np.searchsorted(c.ts, (since, until), side="left"))
        tbv = c.taker_buy_volume if c.taker_buy_volume is not None else c.volume  # always set in a span
        return Candles(
            ts=c.ts[lo:hi].copy(),
            open=c.open[lo:hi].copy(),
            high=c.high[lo:hi].copy(),
            low=c.low[lo:hi].copy(),
            close=c.close[lo:hi].copy(),
            volume=c.volume[lo:hi].copy(),
            taker_buy_volume=tbv[lo:hi].copy() if hi > lo and sp.tbv_ok[lo:hi].all() else None,
            symbol=c.symbol,
            timeframe=c.timeframe,
        )

    def forget(self, url: str, symbol: str, timeframe: str) -> None:
        """Drop the spans of ``symbol``/``timeframe`` (its stored candles differ from a span)."""
        key = (url, normalize_symbol(symbol), timeframe)
        with self._lock:
            for k in [k for k in self._spans if k[:3] == key]:
                del self._spans[k]

    def clear(self) -> None:
        """Forget every span (tests; after candles were deleted or re-imported)."""
        with self._lock:
            self._spans.clear()


def count_missing_volume(
    database_url: str,
    symbol: str,
    timeframe: str,
    *,
    since: int | None = None,
    until: int | None = None,
) -> int:
    """Stored candles of ``symbol``/``timeframe`` (``since <= ts < until``) whose volume is NULL.

    Training needs volume (the ``volume_z`` feature): its preflight refuses a symbol where this is > 0.
    """
    symbol = normalize_symbol(symbol)
    _check_timeframe(timeframe)
    with db.transaction(database_url) as cur:
        cur.execute(
            "SELECT count(*) FROM btc.candles WHERE symbol = %s AND timeframe = %s AND volume IS NULL"
            " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
            " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint))",
            (symbol, timeframe, since, since, until, until),
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


def list_candles(database_url: str) -> list[dict[str, Any]]:
    """Per symbol and timeframe: first, last (epoch s), count, gaps (runs), longest gap (missing
    candles), flagged candles and candles without volume."""
    steps = list(TIMEFRAME_SECONDS.items())
    values = ", ".join(["(%s, %s)"] * len(steps))
    params: list[Any] = [x for pair in steps for x in pair]
    query = (
        "WITH d AS (SELECT symbol, timeframe, ts, flag, volume,"
        " extract(epoch FROM ts - lag(ts) OVER (PARTITION BY symbol, timeframe ORDER BY ts))::bigint AS dt"
        " FROM btc.candles), "
        f"tf (name, s) AS (VALUES {values}) "
        "SELECT d.symbol, d.timeframe, extract(epoch FROM min(ts))::bigint,"
        " extract(epoch FROM max(ts))::bigint, count(*), count(*) FILTER (WHERE dt > tf.s),"
        " coalesce(max(dt / tf.s - 1) FILTER (WHERE dt > tf.s), 0),"
        " count(*) FILTER (WHERE flag IS NOT NULL), count(*) FILTER (WHERE volume IS NULL)"
        " FROM d LEFT JOIN tf ON tf.name = d.timeframe GROUP BY d.symbol, d.timeframe"
        " ORDER BY d.symbol, d.timeframe"
    )
    with db.transaction(database_url) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    keys = ("symbol", "timeframe", "first", "last", "count", "gaps", "longest_gap", "flagged", "no_volume")
    return [dict(zip(keys, (r[0], r[1], *(int(x) for x in r[2:])), strict=True)) for r in rows]


def load_range(
    url: str, symbol: str, timeframe: str, since: int | None, until: int | None
) -> tuple[Candles, int]:
    """Candles of ``[since, until)`` with up to ``WARMUP`` candles of history before them, and the
    index of the range's first candle in what is returned."""
    step = timeframe_seconds(timeframe)
    lo = None if since is None else since - WARMUP * step
    ctx = load_candles(url, symbol, timeframe, since=lo, until=until)
    start = 0 if since is None else int(np.searchsorted(ctx.ts, since, side="left"))
    if len(ctx) - start < 2:
        span = f"[{minute_utc(since) if since else 'start'}, {minute_utc(until) if until else 'end'})"
        raise BadInput(
            f"fewer than 2 {timeframe} candles for {symbol} in {span}: run `qtrain candles import` or"
            " `qtrain candles fetch`, or pick another --since/--until"
        )
    return ctx, start


def candle_spans(url: str, symbols: list[str], timeframe: str) -> list[tuple[str, int, int]]:
    """(symbol, first candle ts, number of candles) of each symbol that has ``timeframe`` candles."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, extract(epoch FROM min(ts))::bigint, count(*) FROM btc.candles"
            " WHERE symbol = ANY(%s) AND timeframe = %s GROUP BY symbol ORDER BY symbol",
            (symbols, timeframe),
        )
        return [(r[0], int(r[1]), int(r[2])) for r in cur.fetchall()]


def delete_candles(
    url: str,
    symbol: str,
    *,
    timeframe: str | None = None,
    since: int | None = None,
    until: int | None = None,
    dry_run: bool = True,
) -> dict[str, int]:
    """Count (``dry_run``) or delete the stored candles of ``symbol`` (one ``timeframe``, or every
    one) with ``since <= ts < until``, in one transaction; timeframe -> candles counted or deleted."""
    symbol = normalize_symbol(symbol)
    if timeframe is not None:
        _check_timeframe(timeframe)
    where = (
        " WHERE symbol = %s AND (%s::text IS NULL OR timeframe = %s)"
        " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
        " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint))"
    )
    args = (symbol, timeframe, timeframe, since, since, until, until)
    with db.transaction(url) as cur:
        cur.execute(f"SELECT timeframe, count(*) FROM btc.candles{where} GROUP BY timeframe ORDER BY 1", args)
        counts = {str(r[0]): int(r[1]) for r in cur.fetchall()}
        if not dry_run and counts:
            cur.execute(f"DELETE FROM btc.candles{where}", args)
    return counts


def stored_ts(cur: Cursor, symbol: str, timeframe: str, since: int, until: int) -> np.ndarray:
    """Epoch seconds of the stored candles of ``symbol``/``timeframe`` in ``[since, until)``, ascending."""
    try:
        cur.execute(
            "SELECT extract(epoch FROM ts)::bigint FROM btc.candles WHERE symbol = %s AND timeframe = %s"
            " AND ts >= to_timestamp(%s::bigint) AND ts < to_timestamp(%s::bigint) ORDER BY ts",
            (normalize_symbol(symbol), timeframe, since, until),
        )
    except psycopg2.errors.UndefinedTable:
        raise BadInput(NO_SCHEMA) from None
    return np.fromiter((r[0] for r in cur.fetchall()), dtype=np.int64)


def stored_counts(
    url: str, timeframe: str, *, since: int | None = None, until: int | None = None
) -> dict[str, int]:
    """Symbol -> its ``timeframe`` candles stored in ``[since, until)`` (epoch s, None: unbounded),
    for every symbol with candles there and none of them without volume (what a pool can train on)."""
    _check_timeframe(timeframe)
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, count(*) FROM btc.candles WHERE timeframe = %s"
            " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
            " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint))"
            " GROUP BY symbol HAVING count(*) FILTER (WHERE volume IS NULL) = 0 ORDER BY symbol",
            (timeframe, since, since, until, until),
        )
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}
