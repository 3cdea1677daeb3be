"""Storage of batches and their windows (PostgreSQL is the source of truth, Redis only carries ids).

A window moves ``pending -> running -> done | cached | failed``; a temporary failure sends it back to
``pending`` with the reason in ``error`` until its attempts run out. ``done``, ``cached`` and
``failed`` are final: the reducer of a symbol runs once none of its windows is pending or running.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2.extras

from worker import db

FINAL = ("done", "cached", "failed")
UNFINISHED = ("pending", "running")


@dataclass(frozen=True)
class BatchSpec:
    """What a batch trains: its symbols, range, window slicing, epochs, analyst and seed."""

    symbols: tuple[str, ...]
    timeframe: str
    window_size: int
    stride: int
    since: int | None
    until: int | None
    epochs: int
    model: str
    analyst: str
    prompt_version: int
    seed: int
    params: dict[str, Any]


@dataclass(frozen=True)
class Window:
    """One window row joined with what the analyse task needs from its batch."""

    batch_id: int
    symbol: str
    idx: int
    start_ts: int
    end_ts: int
    content_hash: str
    status: str
    attempts: int
    timeframe: str
    model: str
    analyst: str
    prompt_version: int


def ts_to_dt(ts: int | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(int(ts), tz=UTC)


def dt_to_ts(dt: datetime | None) -> int | None:
    """Aware datetime -> epoch seconds (None stays None)."""
    return None if dt is None else int(dt.timestamp())


def create_batch(url: str, spec: BatchSpec, windows: Iterable[tuple[str, int, int, int, str]]) -> int:
    """Insert the batch row and all its windows ``(symbol, idx, start_ts, end_ts, hash)`` at once."""
    with db.transaction(url) as cur:
        cur.execute(
            "INSERT INTO btc.batches (symbols, timeframe, window_size, stride, since, until, epochs,"
            " model, analyst, prompt_version, seed, params)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
            (
                list(spec.symbols),
                spec.timeframe,
                spec.window_size,
                spec.stride,
                ts_to_dt(spec.since),
                ts_to_dt(spec.until),
                spec.epochs,
                spec.model,
                spec.analyst,
                spec.prompt_version,
                spec.seed,
                json.dumps(spec.params),
            ),
        )
        batch_id = int(cur.fetchone()[0])
        rows = [(batch_id, s, i, ts_to_dt(a), ts_to_dt(b), h) for s, i, a, b, h in windows]
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO btc.windows (batch_id, symbol, idx, start_ts, end_ts, content_hash) VALUES %s",
            rows,
            page_size=1000,
        )
    return batch_id


def load_batch(url: str, batch_id: int) -> tuple[BatchSpec, str] | None:
    """The batch's spec and state, or None when there is no such batch."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbols, timeframe, window_size, stride, since, until, epochs, model, analyst,"
            " prompt_version, seed, params, state FROM btc.batches WHERE id = %s",
            (batch_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    spec = BatchSpec(
        tuple(row[0]), row[1], row[2], row[3], dt_to_ts(row[4]), dt_to_ts(row[5]),
        row[6], row[7], row[8], row[9], int(row[10]), row[11],
    )  # fmt: skip
    return spec, row[12]


def latest_batch_id(url: str) -> int | None:
    """Id of the newest batch, or None when there is none."""
    with db.transaction(url) as cur:
        cur.execute("SELECT max(id) FROM btc.batches")
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


_WINDOW_COLS = (
    "w.batch_id, w.symbol, w.idx, w.start_ts, w.end_ts, w.content_hash, w.status, w.attempts,"
    " b.timeframe, b.model, b.analyst, b.prompt_version"
)


def _window(row: Sequence[Any]) -> Window:
    return Window(
        int(row[0]), row[1], int(row[2]), int(row[3].timestamp()), int(row[4].timestamp()),
        row[5], row[6], int(row[7]), row[8], row[9], row[10], int(row[11]),
    )  # fmt: skip


def claim_window(url: str, batch_id: int, symbol: str, idx: int) -> tuple[Window | None, str | None]:
    """Mark a pending/running window running and count the attempt; (window, None) when claimed.

    A window already final is not claimed: returns (None, its status). (None, None): no such window.
    Not durable (see ``db.transaction``): a lost claim only means the window runs again.
    """
    with db.transaction(url, durable=False) as cur:
        cur.execute(
            "UPDATE btc.windows w SET status = 'running', attempts = attempts + 1, updated_at = now()"
            " FROM btc.batches b WHERE b.id = w.batch_id AND w.batch_id = %s AND w.symbol = %s"
            f" AND w.idx = %s AND w.status IN ('pending', 'running') RETURNING {_WINDOW_COLS}",
            (batch_id, symbol, idx),
        )
        row = cur.fetchone()
        if row is not None:
            return _window(row), None
        cur.execute(
            "SELECT status FROM btc.windows WHERE batch_id = %s AND symbol = %s AND idx = %s",
            (batch_id, symbol, idx),
        )
        got = cur.fetchone()
    return None, (got[0] if got else None)


def finish_window(
    cur: Any, batch_id: int, symbol: str, idx: int, status: str, *, analysis_id: int | None = None,
    error: str | None = None,
) -> None:  # fmt: skip
    """Set a window's final (or retry) status inside the caller's transaction."""
    cur.execute(
        "UPDATE btc.windows SET status = %s, analysis_id = %s, error = %s, updated_at = now()"
        " WHERE batch_id = %s AND symbol = %s AND idx = %s",
        (status, analysis_id, error, batch_id, symbol, idx),
    )


def set_window_status(url: str, batch_id: int, symbol: str, idx: int, status: str, error: str) -> None:
    """Record a failure (``failed``) or a pending retry (``pending``) with its one-line reason.

    A window another copy of the task already analysed (``done``/``cached``: acks late and
    ``qtrain resume`` may run a window twice) keeps its analysis: the slower copy's failure is moot.
    """
    with db.transaction(url, durable=False) as cur:
        cur.execute(
            "UPDATE btc.windows SET status = %s, analysis_id = NULL, error = %s, updated_at = now()"
            " WHERE batch_id = %s AND symbol = %s AND idx = %s AND status NOT IN ('done', 'cached')",
            (status, error[:2000], batch_id, symbol, idx),
        )


def unfinished_count(url: str, batch_id: int, symbol: str) -> int:
    """How many of a symbol's windows in a batch are still pending or running."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT count(*) FROM btc.windows WHERE batch_id = %s AND symbol = %s"
            " AND status IN ('pending', 'running')",
            (batch_id, symbol),
        )
        return int(cur.fetchone()[0])


def unfinished_windows(url: str, batch_id: int) -> list[tuple[str, int]]:
    """(symbol, idx) of every window of the batch not yet final, in a stable order."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, idx FROM btc.windows WHERE batch_id = %s"
            " AND status IN ('pending', 'running') ORDER BY symbol, idx",
            (batch_id,),
        )
        return [(r[0], int(r[1])) for r in cur.fetchall()]


def reduced_symbols(url: str, batch_id: int) -> dict[str, int]:
    """Symbol -> Q-table version created by this batch's reducer."""
    with db.transaction(url) as cur:
        cur.execute("SELECT symbol, version FROM btc.agent_state WHERE batch_id = %s", (batch_id,))
        return {r[0]: int(r[1]) for r in cur.fetchall()}


def mark_batch_done_if_complete(cur: Any, batch_id: int) -> bool:
    """Set the batch ``done`` once every symbol has its reduced version; True if it is done.

    Reducers of different symbols commit concurrently (different symbol locks): the batch lock
    makes the second one wait for the first's commit, so its count sees both versions.
    """
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qtrain.batch:{batch_id}",))
    cur.execute(
        "UPDATE btc.batches b SET state = 'done', finished_at = now() WHERE b.id = %s"
        " AND b.state <> 'done' AND (SELECT count(DISTINCT symbol) FROM btc.agent_state a"
        " WHERE a.batch_id = b.id) >= cardinality(b.symbols) RETURNING id",
        (batch_id,),
    )
    return cur.fetchone() is not None


def fail_batch(url: str, batch_id: int, error: str) -> None:
    """Record that the batch cannot finish (a reducer failed): state ``failed`` with the reason."""
    with db.transaction(url) as cur:
        cur.execute(
            "UPDATE btc.batches SET state = 'failed', error = %s, finished_at = now() WHERE id = %s",
            (error[:2000], batch_id),
        )


def batch_status(url: str, batch_id: int) -> dict[str, Any] | None:
    """Progress of a batch from PostgreSQL: per symbol counts by status, reducer state, ETA."""
    loaded = load_batch(url, batch_id)
    if loaded is None:
        return None
    spec, state = loaded
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, status, count(*), max(updated_at) FROM btc.windows WHERE batch_id = %s"
            " GROUP BY symbol, status",
            (batch_id,),
        )
        counts = cur.fetchall()
        cur.execute(
            "SELECT created_at, finished_at, extract(epoch FROM now() - created_at), error FROM btc.batches"
            " WHERE id = %s",
            (batch_id,),
        )
        created_at, finished_at, elapsed, error = cur.fetchone()
        cur.execute(
            "SELECT coalesce(sum(a.prompt_tokens + a.completion_tokens), 0),"
            " coalesce(sum(a.total_duration_ms), 0) / 1000.0, count(*) FROM btc.windows w"
            " JOIN btc.ollama_analyses a ON a.id = w.analysis_id WHERE w.batch_id = %s"
            " AND w.status = 'done'",
            (batch_id,),
        )
        tokens, llm_seconds, _ = cur.fetchone()
    versions = reduced_symbols(url, batch_id)
    skipped = spec.params.get("skipped", {})
    symbols: dict[str, dict[str, Any]] = {}
    for sym in spec.symbols:
        by = {s: 0 for s in ("pending", "running", "done", "cached", "failed")}
        for s, st, n, _ in counts:
            if s == sym:
                by[st] = int(n)
        total = sum(by.values())
        symbols[sym] = {
            "total": total,
            **by,
            "skipped": int(skipped.get(sym, 0)),
            "reduced": sym in versions,
            "q_version": versions.get(sym),
        }
    total = sum(v["total"] for v in symbols.values())
    finished = sum(v["done"] + v["cached"] + v["failed"] for v in symbols.values())
    elapsed = float(elapsed or 0.0)
    rate = finished / elapsed if elapsed > 0 and finished else 0.0
    eta = 0.0 if finished >= total else ((total - finished) / rate if rate > 0 else None)
    return {
        "batch_id": batch_id,
        "state": state,
        "error": error,
        "created_at": created_at.isoformat(),
        "finished_at": finished_at.isoformat() if finished_at else None,
        "analyst": spec.analyst,
        "model": spec.model,
        "epochs": spec.epochs,
        "total": total,
        "finished": finished,
        "windows_per_s": round(rate, 3),
        "eta_s": None if eta is None else round(eta, 1),
        "tokens": int(tokens),
        "llm_seconds": round(float(llm_seconds), 2),
        "symbols": symbols,
    }
