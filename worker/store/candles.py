"""Candle storage in PostgreSQL (``btc.candles``): bulk insert, load as ``Candles``, list coverage.

Inserts go through ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING``: a stored candle is never overwritten, so re-importing a file inserts nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2
import psycopg2.extensions

from model.candles import TIMEFRAME_SECONDS, Candles, minute_utc, timeframe_seconds
from model.features import WARMUP
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
    with db.transaction(database_url) as cur:
        try:
            cur.execute(
                "SELECT extract(epoch FROM ts)::bigint, open, high, low, close, volume, taker_buy_volume"
                " FROM btc.candles WHERE symbol = %s AND timeframe = %s"
                " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
                " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint)) ORDER BY ts",
                (symbol, timeframe, since, since, until, until),
            )
        except psycopg2.errors.UndefinedTable:
            raise BadInput(NO_SCHEMA) from None
        rows = cur.fetchall()
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
        try:
            cur.execute(
                "SELECT count(*) FROM btc.candles WHERE symbol = %s AND timeframe = %s AND volume IS NULL"
                " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
                " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint))",
                (symbol, timeframe, since, since, until, until),
            )
        except psycopg2.errors.UndefinedTable:
            raise BadInput(NO_SCHEMA) from None
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
        try:
            cur.execute(query, params)
        except psycopg2.errors.UndefinedTable:
            raise BadInput(NO_SCHEMA) from None
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
    url: str, symbol: str, *, timeframe: str | None = None, since: int | None = None,
    until: int | None = None, dry_run: bool = True,
) -> dict[str, int]:  # fmt: skip
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
        try:
            cur.execute(
                f"SELECT timeframe, count(*) FROM btc.candles{where} GROUP BY timeframe ORDER BY 1", args
            )
        except psycopg2.errors.UndefinedTable:
            raise BadInput(NO_SCHEMA) from None
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
        try:
            cur.execute(
                "SELECT symbol, count(*) FROM btc.candles WHERE timeframe = %s"
                " AND (%s::bigint IS NULL OR ts >= to_timestamp(%s::bigint))"
                " AND (%s::bigint IS NULL OR ts < to_timestamp(%s::bigint))"
                " GROUP BY symbol HAVING count(*) FILTER (WHERE volume IS NULL) = 0 ORDER BY symbol",
                (timeframe, since, since, until, until),
            )
        except psycopg2.errors.UndefinedTable:
            raise BadInput(NO_SCHEMA) from None
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}
