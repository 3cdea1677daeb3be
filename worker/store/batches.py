"""Storage of batches and their windows (PostgreSQL is the source of truth, Redis only carries ids).

A window moves ``pending -> running -> done | cached | failed``; a temporary failure sends it back to
``pending`` with the reason in ``error`` until its attempts run out. ``done``, ``cached`` and
``failed`` are final: the reducer of a symbol runs once none of its windows is pending or running.

Leases and fencing (``worker.runtime.reaper``): a claim gives the window a lease (``lease_until``) and
bumps ``attempts``, the claim's fencing token; only the attempt holding the claim may write the
window's outcome. A window whose worker was lost is taken back (by the reaper when its lease
expires, or by a redelivered message) and counted in ``lost``; at the limit it ends ``failed``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from worker.errors import QtrainError
from worker.settings import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS
from worker.store import db
from worker.store.db import Cursor

STATUSES = ("pending", "running", "done", "cached", "failed")
UNFINISHED = ("pending", "running")
ANALYSED = ("done", "cached")
"""Final states of a window that has an analysis (``failed`` has none)."""


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
    #: ``anonymous`` or ``named`` (``model.analyst.prompt``): the batch's ``params.prompt``.
    prompt_style: str = "anonymous"


def prompt_style(prompt_version: int, params_prompt: object) -> str:
    """The prompt style of a batch: its ``params.prompt`` (set by ``qtrain train``), else what its
    version implies (batches written before styles existed, version <= 3, used the named prompt)."""
    if params_prompt in ("anonymous", "named"):
        return str(params_prompt)
    return "named" if int(prompt_version) <= 3 else "anonymous"


def ts_to_dt(ts: int | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(int(ts), tz=UTC)


def dt_to_ts(dt: datetime | None) -> int | None:
    """Aware datetime -> epoch seconds (None stays None)."""
    return None if dt is None else int(dt.timestamp())


def create_batch(url: str, spec: BatchSpec, windows: Iterable[tuple[str, int, int, int, str]]) -> int:
    """Insert the batch row and all its windows ``(symbol, idx, start_ts, end_ts, hash)`` at once.

    The windows go in with one ``COPY`` (about 10x faster than multi-row inserts at 100,000 rows),
    in the same transaction as the batch row: a batch is never seen half written.
    """
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
        cur.copy_expert(
            "COPY btc.windows (batch_id, symbol, idx, start_ts, end_ts, content_hash) FROM STDIN"
            " WITH (FORMAT csv)",
            _windows_csv(batch_id, windows),
        )
    return batch_id


def _windows_csv(batch_id: int, windows: Iterable[tuple[str, int, int, int, str]]) -> io.StringIO:
    """The window rows as CSV for ``COPY``: timestamps as ISO 8601 UTC (vectorised), text quoted."""
    import numpy as np  # here, not at the top: `qtrain status` imports this module and needs no numpy

    rows = list(windows)
    buf = io.StringIO()
    if not rows:
        return buf
    symbols, idx, starts, ends, hashes = zip(*rows, strict=True)

    def iso(ts: tuple[int, ...]) -> list[str]:
        text = np.datetime_as_string(np.asarray(ts, dtype="datetime64[s]"), unit="s")
        out: list[str] = np.char.add(text, "Z").tolist()
        return out

    out = csv.writer(buf, lineterminator="\n")
    ids = [batch_id] * len(rows)
    out.writerows(zip(ids, symbols, map(int, idx), iso(starts), iso(ends), hashes, strict=True))
    buf.seek(0)
    return buf


_SPEC_COLS = (
    "symbols, timeframe, window_size, stride, since, until, epochs, model, analyst, prompt_version, seed,"
    " params, state"
)
"""The ``btc.batches`` columns of a ``BatchSpec`` and the batch's state, in ``_spec``'s order."""


def _spec(r: dict[str, Any]) -> BatchSpec:
    """The ``BatchSpec`` of a row (by name, ``db.named``) that has the ``_SPEC_COLS``."""
    return BatchSpec(
        symbols=tuple(r["symbols"]),
        timeframe=r["timeframe"],
        window_size=r["window_size"],
        stride=r["stride"],
        since=dt_to_ts(r["since"]),
        until=dt_to_ts(r["until"]),
        epochs=r["epochs"],
        model=r["model"],
        analyst=r["analyst"],
        prompt_version=r["prompt_version"],
        seed=int(r["seed"]),
        params=r["params"],
    )


def load_batch(url: str, batch_id: int) -> tuple[BatchSpec, str] | None:
    """The batch's spec and state, or None when there is no such batch."""
    with db.transaction(url) as cur:
        cur.execute(f"SELECT {_SPEC_COLS} FROM btc.batches WHERE id = %s", (batch_id,))
        row = cur.fetchone()
        r = None if row is None else db.named(cur, row)
    return None if r is None else (_spec(r), r["state"])


def latest_batch_id(url: str) -> int | None:
    """Id of the newest batch, or None when there is none."""
    with db.transaction(url) as cur:
        cur.execute("SELECT max(id) FROM btc.batches")
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


_WINDOW_COLS = (
    "w.batch_id, w.symbol, w.idx, w.start_ts, w.end_ts, w.content_hash, w.status, w.attempts,"
    " b.timeframe, b.model, b.analyst, b.prompt_version, b.params->>'prompt' AS prompt_style"
)


def _window(r: dict[str, Any]) -> Window:
    """The ``Window`` of a row (by name, ``db.named``) that has the ``_WINDOW_COLS``."""
    return Window(
        batch_id=int(r["batch_id"]),
        symbol=r["symbol"],
        idx=int(r["idx"]),
        start_ts=int(r["start_ts"].timestamp()),
        end_ts=int(r["end_ts"].timestamp()),
        content_hash=r["content_hash"],
        status=r["status"],
        attempts=int(r["attempts"]),
        timeframe=r["timeframe"],
        model=r["model"],
        analyst=r["analyst"],
        prompt_version=int(r["prompt_version"]),
        prompt_style=prompt_style(r["prompt_version"], r["prompt_style"]),
    )


class Superseded(QtrainError):
    """Raised when a task's claim on a window was taken over (reaped, or claimed by a newer attempt):
    that copy must not write anything, so its transaction is rolled back."""


class Claim(NamedTuple):
    """What ``claim_window`` got; unpacks as ``window, status``.

    - claimed: ``window`` is set (its ``attempts`` is the fencing token), ``status`` is None;
    - already final: no window, ``status`` is its final status (a redelivery);
    - poison: no window, ``status`` is ``failed`` (this claim recorded "worker lost N times");
    - no such window: both None.
    """

    window: Window | None
    status: str | None


def claim_window(
    url: str,
    batch_id: int,
    symbol: str,
    idx: int,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    max_lost: int = DEFAULT_MAX_ATTEMPTS,
    handover: int | None = None,
) -> Claim:
    """Mark a pending/running window running, count the attempt and give it a lease of ``lease_s``;
    (window, None) when claimed. ``window.attempts`` is the fencing token of this claim.

    A window found still ``running`` lost its worker (a redelivery after a SIGKILL, an OOM kill or
    a hard time limit), unless ``handover`` names that running attempt (a task that retried itself
    without being able to write, e.g. during a database outage). The ``max_lost``-th such loss
    records the window ``failed`` ("worker lost N times") instead of running it again: returns
    (None, 'failed'). A window already final is not claimed: (None, its status). (None, None): no
    such window. Not durable (see ``db.transaction``): a lost claim only means the window runs again.
    """
    lost = "(w.status = 'running' AND w.attempts IS DISTINCT FROM %(handover)s)::int"
    poison = f"w.lost + {lost} >= %(max_lost)s"
    with db.transaction(url, durable=False) as cur:
        cur.execute(
            f"UPDATE btc.windows w SET lost = w.lost + {lost}, attempts = w.attempts + 1,"
            f" status = CASE WHEN {poison} THEN 'failed' ELSE 'running' END,"
            f" error = CASE WHEN {poison} THEN 'worker lost ' || (w.lost + {lost}) || ' times'"
            " ELSE w.error END,"
            f" lease_until = CASE WHEN {poison} THEN NULL"
            " ELSE now() + make_interval(secs => %(lease)s) END, updated_at = now()"
            " FROM btc.batches b WHERE b.id = w.batch_id AND w.batch_id = %(batch)s AND w.symbol = %(symbol)s"
            f" AND w.idx = %(idx)s AND w.status = ANY(%(unfinished)s) RETURNING {_WINDOW_COLS}",
            {
                "handover": handover,
                "max_lost": max_lost,
                "lease": float(lease_s),
                "batch": batch_id,
                "symbol": symbol,
                "idx": idx,
                "unfinished": list(UNFINISHED),
            },
        )
        row = cur.fetchone()
        if row is not None:
            window = _window(db.named(cur, row))
            return Claim(window, None) if window.status == "running" else Claim(None, window.status)
        cur.execute(
            "SELECT status FROM btc.windows WHERE batch_id = %s AND symbol = %s AND idx = %s",
            (batch_id, symbol, idx),
        )
        got = cur.fetchone()
    return Claim(None, got[0] if got else None)


_FENCE = " AND attempts = %s AND status = 'running'"

WindowClaim = tuple[int, str, int, int]
"""A held claim: ``(batch_id, symbol, idx, attempt)``."""


def renew_leases(cur: Cursor, claims: Iterable[WindowClaim], lease_s: float) -> int:
    """Push the lease of every claim still held (same attempt, still ``running``) to now +
    ``lease_s``, in one statement; how many were renewed. A claim taken over meanwhile is left
    alone (its fencing token no longer matches), so a heartbeat never revives a reaped window."""
    rows = list(claims)
    if not rows:
        return 0
    b, s, i, a = (list(col) for col in zip(*rows, strict=True))
    cur.execute(
        "UPDATE btc.windows w SET lease_until = now() + make_interval(secs => %s)"
        " FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::int[]) AS h(batch_id, symbol, idx, attempts)"
        " WHERE w.batch_id = h.batch_id AND w.symbol = h.symbol AND w.idx = h.idx"
        " AND w.attempts = h.attempts AND w.status = 'running'",
        (float(lease_s), b, s, i, a),
    )
    return int(cur.rowcount)


def finish_window(
    cur: Cursor,
    batch_id: int,
    symbol: str,
    idx: int,
    status: str,
    *,
    analysis_id: int | None = None,
    error: str | None = None,
    attempt: int | None = None,
) -> None:
    """Set a window's final status inside the caller's transaction.

    ``attempt`` (the claim's fencing token): only that attempt, still holding its claim, may write;
    any other copy raises ``Superseded`` and the caller's transaction (its analysis included) is
    rolled back, so a late original changes nothing. None: unfenced (tests, tools).
    """
    fence, args = ("", ()) if attempt is None else (_FENCE, (attempt,))
    cur.execute(
        "UPDATE btc.windows SET status = %s, analysis_id = %s, error = %s, lease_until = NULL,"
        " updated_at = now() WHERE batch_id = %s AND symbol = %s AND idx = %s" + fence,
        (status, analysis_id, error, batch_id, symbol, idx, *args),
    )
    if attempt is not None and cur.rowcount != 1:
        raise Superseded(f"window {batch_id}/{symbol}/{idx}: attempt {attempt} no longer holds the claim")


def set_window_status(
    url: str,
    batch_id: int,
    symbol: str,
    idx: int,
    status: str,
    error: str,
    *,
    attempt: int | None = None,
    lease_s: float | None = None,
) -> bool:
    """Record a failure (``failed``) or a pending retry (``pending``) with its one-line reason; True
    when written.

    ``attempt``: fenced like ``finish_window`` (False when another attempt holds the window: the
    caller must then neither retry nor reduce). ``lease_s``: a pending retry's lease, so that the
    reaper re-enqueues it if the worker holding the delayed retry message dies. A window another
    copy of the task already analysed (``done``/``cached``) keeps its analysis.
    """
    fence, args = ("", ()) if attempt is None else (_FENCE, (attempt,))
    with db.transaction(url, durable=False) as cur:
        cur.execute(
            "UPDATE btc.windows SET status = %s, analysis_id = NULL, error = %s, updated_at = now(),"
            " lease_until = CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE now() + make_interval(secs => %s::float8) END"
            " WHERE batch_id = %s AND symbol = %s AND idx = %s AND status <> ALL(%s)" + fence,
            (status, error[:2000], lease_s, lease_s, batch_id, symbol, idx, list(ANALYSED), *args),
        )
        return bool(cur.rowcount == 1)


def reclaimed_by_symbol(cur: Cursor, batch_id: int) -> dict[str, int]:
    """Per symbol, how many of the batch's windows were taken back after losing their worker."""
    cur.execute(
        "SELECT symbol, count(*) FROM btc.windows WHERE batch_id = %s AND lost > 0 GROUP BY symbol",
        (batch_id,),
    )
    return {r[0]: int(r[1]) for r in cur.fetchall()}


def failed_count_in(cur: Cursor, batch_id: int, symbol: str) -> tuple[int, int]:
    """(failed, total) windows of a symbol in a batch (caller's cursor)."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM btc.windows"
        " WHERE batch_id = %s AND symbol = %s",
        (batch_id, symbol),
    )
    failed, total = cur.fetchone()
    return int(failed), int(total)


#: Failure reasons ``failure_reasons_in`` returns per symbol at most (the most frequent).
TOP_REASONS = 3


def failure_reasons_in(cur: Cursor, batch_id: int, symbol: str) -> list[tuple[str, int]]:
    """The most frequent reasons of a symbol's failed windows in a batch, with their counts."""
    return failure_reasons(cur, batch_id).get(symbol, [])


def failure_reasons(cur: Cursor, batch_id: int) -> dict[str, list[tuple[str, int]]]:
    """Symbol -> its most frequent failure reasons with counts (``TOP_REASONS`` at most, most first)."""
    cur.execute(
        "SELECT symbol, coalesce(error, 'no reason recorded'), count(*) FROM btc.windows"
        " WHERE batch_id = %s AND status = 'failed' GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2",
        (batch_id,),
    )
    out: dict[str, list[tuple[str, int]]] = {}
    for symbol, why, n in cur.fetchall():
        rows = out.setdefault(symbol, [])
        if len(rows) < TOP_REASONS:
            rows.append((str(why)[:300], int(n)))
    return out


#: "Is this symbol's reducer due?", its one definition in SQL: none of the symbol's windows in the
#: batch is pending or running, summed over its rows ``c`` of ``btc.window_counts`` (kept by the
#: triggers of migration 0006 in the windows' own transactions, so it agrees with the windows in
#: every snapshot; no row at all: nothing left, due). The analyse task (``reducer_due``), the
#: reducer under its lock (``reducer_due_in``) and the reaper (``unreduced_symbols``) all ask it.
_DUE = "coalesce(sum(c.n) FILTER (WHERE c.status = ANY(%(unfinished)s)), 0) = 0"


def reducer_due_in(cur: Cursor, batch_id: int, symbols: Iterable[str]) -> bool:
    """True when none of the batch's windows of ``symbols`` is pending or running (``_DUE``): their
    reducer may run; one indexed read of a few counter rows per symbol (caller's cursor)."""
    cur.execute(
        f"SELECT {_DUE} FROM btc.window_counts c"
        " WHERE c.batch_id = %(batch)s AND c.symbol = ANY(%(symbols)s)",
        {"unfinished": list(UNFINISHED), "batch": batch_id, "symbols": list(symbols)},
    )
    return bool(cur.fetchone()[0])


def reducer_due(url: str, batch_id: int, symbols: Iterable[str]) -> bool:
    """``reducer_due_in`` in its own transaction: what each analyse task asks once its window is
    final (a pooled batch: its symbol first, then all its peers)."""
    with db.transaction(url) as cur:
        return reducer_due_in(cur, batch_id, symbols)


def unreduced_symbols(cur: Cursor) -> list[tuple[int, str, float]]:
    """``(batch_id, symbol, idle seconds)`` of every symbol of a running batch whose reducer is due
    (``_DUE``, with at least one window) but which has no gated version for the batch yet; idle:
    since its last window changed. The reaper's list of reducers that may never have run."""
    cur.execute(
        "SELECT d.batch_id, d.symbol, (SELECT extract(epoch FROM now() - max(w.updated_at))"
        " FROM btc.windows w WHERE w.batch_id = d.batch_id AND w.symbol = d.symbol)"
        " FROM (SELECT c.batch_id, c.symbol FROM btc.window_counts c JOIN btc.batches b ON b.id = c.batch_id"
        f" WHERE b.state = 'running' GROUP BY c.batch_id, c.symbol HAVING {_DUE} AND sum(c.n) > 0) d"
        " WHERE NOT EXISTS (SELECT 1 FROM btc.agent_state a WHERE a.batch_id = d.batch_id"
        " AND a.symbol = d.symbol AND a.gated_at IS NOT NULL)",
        {"unfinished": list(UNFINISHED)},
    )
    return [(int(b), str(s), float(idle)) for b, s, idle in cur.fetchall()]


def reap_expired(cur: Cursor, max_lost: int) -> list[tuple[int, str, int, str]]:
    """Take back every window of a running batch whose lease expired: ``pending`` again, a
    ``running`` one counting one more lost worker, and ``failed`` ("worker lost N times") at
    ``max_lost`` losses; ``(batch_id, symbol, idx, new status)`` of each (caller's transaction)."""
    cur.execute(
        "UPDATE btc.windows w SET"
        " lost = w.lost + (w.status = 'running')::int,"
        " status = CASE WHEN w.lost + (w.status = 'running')::int >= %(max_lost)s THEN 'failed'"
        " ELSE 'pending' END,"
        " error = CASE WHEN w.lost + (w.status = 'running')::int >= %(max_lost)s"
        " THEN 'worker lost ' || (w.lost + 1) || ' times' ELSE w.error END,"
        " lease_until = NULL, updated_at = now()"
        " FROM btc.batches b"
        " WHERE b.id = w.batch_id AND b.state = 'running' AND w.status IN ('pending', 'running')"
        " AND w.lease_until < now()"
        " RETURNING w.batch_id, w.symbol, w.idx, w.status",
        {"max_lost": max_lost},
    )
    return [(int(b), s, int(i), st) for b, s, i, st in cur.fetchall()]


def finish_gated_batches(cur: Cursor) -> list[int]:
    """Mark ``done`` every running batch whose symbols all have a gated version (their reducers
    finished but the last one's "batch done" step never ran); their ids (caller's transaction)."""
    cur.execute(
        "SELECT b.id FROM btc.batches b WHERE b.state = 'running'"
        " AND (SELECT count(DISTINCT a.symbol) FROM btc.agent_state a"
        " WHERE a.batch_id = b.id AND a.gated_at IS NOT NULL) >= cardinality(b.symbols)"
    )
    gated = [int(r[0]) for r in cur.fetchall()]
    if gated:
        cur.execute(
            "UPDATE btc.batches SET state = 'done', finished_at = now()"
            " WHERE id = ANY(%s) AND state = 'running'",
            (gated,),
        )
    return gated


def unfinished_windows(url: str, batch_id: int) -> list[tuple[str, int]]:
    """(symbol, idx) of every window of the batch not yet final, in a stable order."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, idx FROM btc.windows WHERE batch_id = %s AND status = ANY(%s)"
            " ORDER BY symbol, idx",
            (batch_id, list(UNFINISHED)),
        )
        return [(r[0], int(r[1])) for r in cur.fetchall()]


def in_flight_hashes(
    cur: Cursor, symbol: str, hashes: list[str], *, model: str, prompt_version: int
) -> set[str]:
    """Which of ``hashes`` (window contents of ``symbol``) are pending or running in a running batch
    of the same model and prompt version: the retrain tick does not plan them again."""
    cur.execute(
        "SELECT DISTINCT w.content_hash FROM btc.windows w JOIN btc.batches b ON b.id = w.batch_id"
        " WHERE b.state = 'running' AND w.symbol = %s AND w.status = ANY(%s)"
        " AND b.model = %s AND b.prompt_version = %s AND w.content_hash = ANY(%s)",
        (symbol, list(UNFINISHED), model, prompt_version, hashes),
    )
    return {r[0] for r in cur.fetchall()}


def retrain_batch(cur: Cursor, tick: str, key: str) -> int | None:
    """The batch a retrain tick (``params.tick``) of the schedule ``key`` already made, if any."""
    cur.execute(
        "SELECT id FROM btc.batches WHERE params->>'trigger' = 'beat' AND params->>'tick' = %s"
        " AND params->>'retrain_key' = %s",
        (tick, key),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def mark_batch_done_if_complete(url: str, batch_id: int) -> bool:
    """Set the batch ``done`` once every symbol has its version AND that version's gate has run;
    True if it is done.

    Reducers of different symbols finish concurrently: the batch lock makes the second one wait
    for the first's commit, so its count sees both gated versions.
    """
    with db.transaction(url) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qtrain.batch:{batch_id}",))
        cur.execute(
            "UPDATE btc.batches b SET state = 'done', finished_at = now() WHERE b.id = %s"
            " AND b.state <> 'done' AND (SELECT count(DISTINCT symbol) FROM btc.agent_state a"
            " WHERE a.batch_id = b.id AND a.gated_at IS NOT NULL) >= cardinality(b.symbols) RETURNING id",
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


@dataclass(frozen=True)
class SymbolStatus:
    """One symbol of a batch: windows by state, skipped for gaps, and its reducer's version."""

    total: int
    pending: int
    running: int
    done: int
    cached: int
    failed: int
    skipped: int
    q_version: int | None
    gated: bool
    #: Windows taken back after their worker was lost (issue 13: reaper or redelivery).
    reclaimed: int = 0
    #: The most frequent reasons of its failed windows, ``{"reason", "count"}`` (issue 29).
    failure_reasons: tuple[dict[str, Any], ...] = ()

    @property
    def finished(self) -> int:
        """Windows in a final state."""
        return self.done + self.cached + self.failed

    @property
    def reduced(self) -> bool:
        """The reducer made this batch's version and its gate has run."""
        return self.q_version is not None and self.gated


@dataclass(frozen=True)
class BatchStatus:
    """Progress of a batch, all from PostgreSQL: what ``qtrain status`` and ``train --wait`` show."""

    batch_id: int
    state: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    analyst: str
    model: str
    epochs: int
    windows_per_s: float
    eta_s: float | None
    tokens: int
    llm_seconds: float
    symbols: dict[str, SymbolStatus]
    #: Medians per analysed window (``window_medians``): prompt tokens, answer tokens, LLM seconds.
    medians: WindowMedians | None = None
    #: The prompt style the batch's windows were analysed with (``anonymous`` or ``named``).
    prompt: str = "anonymous"

    @property
    def total(self) -> int:
        """Windows of the batch."""
        return sum(v.total for v in self.symbols.values())

    @property
    def finished(self) -> int:
        """Windows of the batch in a final state."""
        return sum(v.finished for v in self.symbols.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``qtrain status --json`` (timestamps ISO 8601)."""
        return {
            "batch_id": self.batch_id,
            "state": self.state,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "analyst": self.analyst,
            "model": self.model,
            "prompt": self.prompt,
            "epochs": self.epochs,
            "total": self.total,
            "finished": self.finished,
            "windows_per_s": self.windows_per_s,
            "eta_s": self.eta_s,
            "tokens": self.tokens,
            "llm_seconds": self.llm_seconds,
            "per_window": asdict(self.medians) if self.medians else None,
            "symbols": {sym: {**asdict(v), "reduced": v.reduced} for sym, v in self.symbols.items()},
        }


@dataclass(frozen=True)
class WindowMedians:
    """Per analysed window of a batch, medians: what a window costs the LLM."""

    prompt_tokens: float | None
    answer_tokens: float | None
    seconds: float | None
    windows: int


#: Analysed windows the medians read at most (a sample, so that the status stays quick).
MEDIAN_SAMPLE = 1000


def window_medians(cur: Cursor, batch_id: int) -> WindowMedians:
    """Median prompt tokens, answer tokens and LLM seconds of the batch's analysed (``done``) windows,
    over at most ``MEDIAN_SAMPLE`` of them (an index range: the cost does not grow with the batch)."""
    cur.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.prompt_tokens),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY a.completion_tokens),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY a.total_duration_ms), count(*)"
        " FROM (SELECT analysis_id FROM btc.windows WHERE batch_id = %s AND status = 'done'"
        " AND analysis_id IS NOT NULL LIMIT %s) w JOIN btc.ollama_analyses a ON a.id = w.analysis_id",
        (batch_id, MEDIAN_SAMPLE),
    )
    p, c, ms, n = cur.fetchone()
    return WindowMedians(
        prompt_tokens=None if p is None else round(float(p)),
        answer_tokens=None if c is None else round(float(c)),
        seconds=None if ms is None else round(float(ms) / 1000.0, 2),
        windows=int(n),
    )


def _symbol_counts(cur: Cursor, batch_id: int) -> tuple[dict[str, dict[str, int]], int, float]:
    """Windows per symbol and status, and the tokens and LLM seconds of the ``done`` ones.

    Read from ``btc.window_counts`` (migration 0006: kept up to date by triggers on ``btc.windows``),
    an index range of a few rows per symbol and status, whatever the number of windows.
    """
    cur.execute(
        "SELECT symbol, status, sum(n), sum(tokens), sum(llm_ms) FROM btc.window_counts"
        " WHERE batch_id = %s GROUP BY symbol, status",
        (batch_id,),
    )
    out: dict[str, dict[str, int]] = {}
    tokens, llm_ms = 0, 0.0
    for sym, st, n, tok, ms in cur.fetchall():
        if int(n) == 0:
            continue
        out.setdefault(sym, dict.fromkeys(STATUSES, 0))[st] = int(n)
        if st == "done":
            tokens, llm_ms = tokens + int(tok), llm_ms + float(ms)
    return out, tokens, llm_ms / 1000.0


def batch_status(url: str, batch_id: int) -> BatchStatus | None:
    """Progress of a batch from PostgreSQL: per symbol counts by status, reducer state, ETA.

    Three indexed reads in one transaction (batch row, counters, versions): the cost does not grow
    with the number of windows.
    """
    with db.transaction(url) as cur:
        cur.execute(
            f"SELECT {_SPEC_COLS}, created_at, finished_at,"
            " extract(epoch FROM now() - created_at) AS elapsed, error FROM btc.batches WHERE id = %s",
            (batch_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        r = db.named(cur, row)
        spec = _spec(r)
        state, created_at, finished_at, error = r["state"], r["created_at"], r["finished_at"], r["error"]
        elapsed = r["elapsed"]
        counts, tokens, llm_seconds = _symbol_counts(cur, batch_id)
        cur.execute(
            "SELECT symbol, version, gated_at IS NOT NULL FROM btc.agent_state WHERE batch_id = %s",
            (batch_id,),
        )
        made = {r[0]: (int(r[1]), bool(r[2])) for r in cur.fetchall()}
        reclaimed = reclaimed_by_symbol(cur, batch_id)  # issue 13
        medians = window_medians(cur, batch_id)  # issue 20
        any_failed = any(by.get("failed", 0) for by in counts.values())
        reasons = failure_reasons(cur, batch_id) if any_failed else {}  # issue 29
    skipped = spec.params.get("skipped", {})
    symbols = {}
    for sym in spec.symbols:
        by = counts.get(sym, dict.fromkeys(STATUSES, 0))
        version, gated = made.get(sym, (None, False))
        symbols[sym] = SymbolStatus(
            total=sum(by.values()),
            **by,
            skipped=int(skipped.get(sym, 0)),
            q_version=version,
            gated=gated,
            reclaimed=reclaimed.get(sym, 0),
            failure_reasons=tuple({"reason": why, "count": n} for why, n in reasons.get(sym, [])),
        )
    total = sum(v.total for v in symbols.values())
    finished = sum(v.finished for v in symbols.values())
    elapsed = float(elapsed or 0.0)
    rate = finished / elapsed if elapsed > 0 and finished else 0.0
    eta = 0.0 if finished >= total else ((total - finished) / rate if rate > 0 else None)
    return BatchStatus(
        batch_id=batch_id,
        state=state,
        error=error,
        created_at=created_at,
        finished_at=finished_at,
        analyst=spec.analyst,
        model=spec.model,
        epochs=spec.epochs,
        windows_per_s=round(rate, 3),
        eta_s=None if eta is None else round(eta, 1),
        tokens=int(tokens),
        llm_seconds=round(float(llm_seconds), 2),
        symbols=symbols,
        medians=medians,
        prompt=prompt_style(spec.prompt_version, spec.params.get("prompt")),
    )
