"""Helpers for the failure-injection tests: process trees, polling with deadlines, batch invariants.

Everything waits by polling PostgreSQL (or /proc, or the fake Ollama's counters) until a
deadline; nothing relies on a sleep being long enough.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from tests.pipeline_support import qtrain, query

T = TypeVar("T")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (read from /proc/PID/task/*/children; Linux only)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(out))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def start_batch(env: dict[str, str], symbols: str, *extra: str) -> int:
    """``qtrain train --json`` without ``--wait``: create and enqueue a batch, return its id."""
    proc = qtrain(env, "train", "--symbols", symbols, "--epochs", "1", "--seed", "5", "--json", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["batch_id"])


def window_counts(database_url: str, batch_id: int) -> dict[str, int]:
    """Status -> number of the batch's windows."""
    rows = query(
        database_url, "SELECT status, count(*) FROM windows WHERE batch_id = %s GROUP BY status", (batch_id,)
    )
    return {s: int(n) for s, n in rows}


def batch_state(database_url: str, batch_id: int) -> str:
    """The batch's state column (running, done, failed)."""
    return str(query(database_url, "SELECT state FROM batches WHERE id = %s", (batch_id,))[0][0])


def wait_batch_finished(database_url: str, batch_id: int, *, timeout: float) -> str:
    """Poll PostgreSQL until the batch is ``done`` or ``failed``; returns that state."""

    def finished() -> str | None:
        state = batch_state(database_url, batch_id)
        return state if state in ("done", "failed") else None

    try:
        return wait_until(finished, timeout=timeout, what=f"batch {batch_id} to finish", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; windows: {window_counts(database_url, batch_id)}") from None


def terminate_backends(database_url: str) -> int:
    """``pg_terminate_backend`` every other connection to the test database; how many were ended."""
    name = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")  # works during an outage too
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def sigkill(pid: int) -> None:
    """SIGKILL ``pid`` if it still exists."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_batch_complete(
    database_url: str, batch_id: int, symbols: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """The promises after any failure: batch done, every window final and analysed once per content.

    Returns the window rows ``(symbol, idx, status, attempts, error, analysis_id)``.
    """
    assert batch_state(database_url, batch_id) == "done"
    rows = query(
        database_url,
        "SELECT symbol, idx, status, attempts, error, analysis_id FROM windows WHERE batch_id = %s"
        " ORDER BY symbol, idx",
        (batch_id,),
    )
    assert rows and all(r[2] in ("done", "cached", "failed") for r in rows), rows
    assert all(r[4] for r in rows if r[2] == "failed"), "a failed window must record its reason"
    finished = [r for r in rows if r[2] != "failed"]
    assert all(r[5] is not None for r in finished), "a done/cached window must point at its analysis"
    (distinct_content,) = query(
        database_url,
        "SELECT count(DISTINCT content_hash) FROM windows WHERE batch_id = %s AND status <> 'failed'",
        (batch_id,),
    )[0]
    (analyses,) = query(database_url, "SELECT count(*) FROM ollama_analyses")[0]
    assert analyses == distinct_content == len({r[5] for r in finished}), (analyses, distinct_content)
    versions = query(database_url, "SELECT symbol FROM agent_state WHERE batch_id = %s", (batch_id,))
    assert sorted(v[0] for v in versions) == sorted(symbols)
    return rows


def allow_connections(database_url: str, allowed: bool) -> None:
    """``ALTER DATABASE ... ALLOW_CONNECTIONS``: refuse every new connection (superusers too) or not."""
    from psycopg2 import sql

    name = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allowed else "false")
                )
            )
    finally:
        conn.close()


def active_task_pid(broker_url: str, args: list[Any], timeout: float = 1.0) -> int | None:
    """The pool process running the task with ``args`` right now (``celery inspect active``), or None."""
    from celery import Celery

    probe = Celery(broker=broker_url)
    probe.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    try:
        replies = probe.control.inspect(timeout=timeout).active() or {}
    finally:
        probe.close()
    for tasks in replies.values():
        for t in tasks:
            got = t.get("args")
            if (got == args or got == repr(tuple(args))) and t.get("worker_pid"):
                return int(t["worker_pid"])
    return None


def reclaimed_windows(database_url: str, batch_id: int) -> int:
    """How many of the batch's windows were taken back after losing their worker (``lost > 0``)."""
    sql = "SELECT count(*) FROM windows WHERE batch_id = %s AND lost > 0"
    return int(query(database_url, sql, (batch_id,))[0][0])


def agent_tables(database_url: str) -> list[tuple[str, bytes]]:
    """Every stored Q-table version as ``(symbol, npz bytes)``, by symbol."""
    rows = query(database_url, "SELECT symbol, npz FROM agent_state ORDER BY symbol")
    return [(s, bytes(b)) for s, b in rows]
