"""PostgreSQL connections: one small pool per process and URL, errors translated at the edge."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from worker.errors import BadInput, QtrainError, ServiceUnavailable
from worker.redact import redact

START_HINT = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
#: What PostgreSQL says when its ``max_connections`` are all taken (and the superuser-reserved variant).
TOO_MANY_CLIENTS = ("too many clients already", "remaining connection slots are reserved")

#: PostgreSQL connections one process opens at most per URL, whatever its concurrency (a threads-pool
#: worker with 256 tasks in flight included): each transaction holds one for a few milliseconds and
#: none is held during an LLM call, so a handful serve hundreds of windows a second.
DEFAULT_POOL_MAX = 8
#: Seconds a thread waits for one of the pool's connections before it gives up (a temporary error:
#: the task retries later).
DEFAULT_POOL_WAIT_S = 30.0
#: ``lock_timeout`` of every connection: no lock wait (a row, an advisory lock) lasts longer; the
#: threads pool has no time limit to cut a stuck task, so qtrain bounds its own waits.
LOCK_TIMEOUT_S = 120.0


class PoolExhausted(ServiceUnavailable):
    """Raised when a thread waited ``DEFAULT_POOL_WAIT_S`` for one of the process's connections."""


class LockTimeout(ServiceUnavailable):
    """Raised when a statement waited ``LOCK_TIMEOUT_S`` for a lock held by another transaction."""


#: The one text of a missing table (a database never initialised, or older than a migration).
SCHEMA_MISSING = "the qtrain schema is missing or old: run `qtrain db init`"


class SchemaMissing(BadInput):
    """Raised when a qtrain table is missing: the database was never initialised or predates a
    migration (a ``BadInput``, as the candle reads always raised: retrying cannot help, `db init` can)."""

    def __init__(self, message: str = SCHEMA_MISSING) -> None:
        super().__init__(message)


def map_error(exc: BaseException) -> QtrainError | None:
    """The qtrain error a PostgreSQL error stands for, or None when it is not one qtrain explains:
    the one place driver errors become qtrain's (a missing table, a lock wait cut by
    ``lock_timeout``, a lost connection), like httpx's ``map_httpcore_exceptions``."""
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return SchemaMissing()
    if isinstance(exc, psycopg2.errors.LockNotAvailable):
        return LockTimeout(f"waited {LOCK_TIMEOUT_S:g} s for a PostgreSQL lock; will retry")
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return ServiceUnavailable(f"lost the PostgreSQL connection: {exc}".strip())
    return None


_limits = {"max": DEFAULT_POOL_MAX, "wait_s": DEFAULT_POOL_WAIT_S}


def configure_pool(*, max_size: int | None = None, wait_s: float | None = None) -> None:
    """Set this process's pool bounds (the worker does at start, from ``QTRAIN_DB_POOL``)."""
    if max_size is not None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        _limits["max"] = int(max_size)
    if wait_s is not None:
        _limits["wait_s"] = float(wait_s)


class _Pool:
    """The connections of one process for one URL: at most ``max_size`` open, reused (~3 ms to open).

    A thread asks for one per transaction and waits (up to ``wait_s``) while all are in use. A
    thread that already holds one (a nested transaction: the reducer reads candles inside its
    locked transaction) is never made to wait, so nesting cannot deadlock the pool; that overdraft
    is closed when returned.
    """

    def __init__(self, url: str, max_size: int, wait_s: float) -> None:
        self.url = url
        self.max_size = max_size
        self.wait_s = wait_s
        self.idle: list[psycopg2.extensions.connection] = []
        self.open = 0  # idle + handed out
        self.peak = 0  # most ever open at once (tests, bench)
        self.cond = threading.Condition()
        self.held = threading.local()

    def get(self) -> psycopg2.extensions.connection:
        depth = getattr(self.held, "depth", 0)
        deadline: float | None = None
        with self.cond:
            while True:
                while self.idle:
                    conn = self.idle.pop()
                    if not conn.closed and not _server_hung_up(conn):
                        self.held.depth = depth + 1
                        return conn
                    conn.close()
                    self.open -= 1
                if self.open < self.max_size or depth > 0:
                    self.open += 1
                    self.peak = max(self.peak, self.open)
                    break
                now = time.monotonic()
                deadline = now + self.wait_s if deadline is None else deadline
                if now >= deadline:
                    raise PoolExhausted(
                        f"all {self.max_size} PostgreSQL connections of this process stayed busy for"
                        f" {self.wait_s:g} s: raise QTRAIN_DB_POOL or lower the worker's concurrency"
                    )
                self.cond.wait(deadline - now)
        try:
            conn = connect(self.url)
        except BaseException:
            with self.cond:
                self.open -= 1
                self.cond.notify()
            raise
        self.held.depth = depth + 1
        return conn

    def put(self, conn: psycopg2.extensions.connection, *, discard: bool) -> None:
        self.held.depth = max(0, getattr(self.held, "depth", 1) - 1)
        ok = not discard and not conn.closed
        ok = ok and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with self.cond:
            if ok and self.open <= self.max_size:
                self.idle.append(conn)
                self.cond.notify()
                return
            self.open -= 1
            self.cond.notify()
        if not conn.closed:
            conn.close()

    def close(self) -> None:
        with self.cond:
            for conn in self.idle:
                conn.close()
            self.open -= len(self.idle)
            self.idle.clear()


class Cursor(Protocol):
    """The part of psycopg2's cursor that qtrain's storage uses, typed (psycopg2 ships no stubs).

    Rows stay ``Any``: each query decodes its own columns.
    """

    rowcount: int
    description: Any

    def execute(self, query: Any, vars: Sequence[Any] | Mapping[str, Any] | None = None) -> None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def copy_expert(self, sql: Any, file: IO[str], size: int = ...) -> None: ...


def named(cur: Cursor, row: Sequence[Any]) -> dict[str, Any]:
    """A row as column name -> value (from ``cur.description``): rows are decoded by name, never by
    position, so a column added to a query cannot shift the others."""
    return {col[0]: value for col, value in zip(cur.description, row, strict=True)}


def _server_hung_up(conn: psycopg2.extensions.connection) -> bool:
    """True when an idle connection has something to read: the server closed it (restart,
    ``pg_terminate_backend``, idle timeout) and sent its FATAL notice or EOF. Without this check
    the next transaction on it fails, which costs a task its work (an LLM answer) and an attempt.
    A zero-timeout poll, no round trip. qtrain never LISTENs, so nothing else arrives unasked; at
    worst a needless reconnect.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


_pools: dict[tuple[int, str], _Pool] = {}
_pools_lock = threading.Lock()


def database_name(url: str) -> str:
    """The database name in a ``postgresql://`` URL (``qtrain`` in ``.../qtrain``)."""
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise ServiceUnavailable(f"DATABASE_URL {redact(url)} names no database: add /qtrain")
    return name


def connect(url: str, **kwargs: object) -> psycopg2.extensions.connection:
    """Open one connection; an unreachable server or database becomes ``ServiceUnavailable``."""
    options = f"-c lock_timeout={int(LOCK_TIMEOUT_S * 1000)}"
    try:
        return psycopg2.connect(url, connect_timeout=5, options=options, **kwargs)
    except psycopg2.OperationalError as exc:
        raise connect_error(url, exc) from exc


def connect_error(url: str, exc: BaseException) -> ServiceUnavailable:
    """The one-line error of a refused connection, naming its real cause and what to do."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "does not exist" in first:
        return ServiceUnavailable(f"PostgreSQL database missing ({first}): run `qtrain db init`")
    if any(s in first for s in TOO_MANY_CLIENTS):
        why = first.rsplit("FATAL:", 1)[-1].strip()
        return ServiceUnavailable(
            f"PostgreSQL at {redact(url)} is running but refused a connection: {why}"
            " (max_connections reached): lower the workers' concurrency or number, or QTRAIN_DB_POOL"
            " (connections per worker process), or raise max_connections in postgresql.conf"
        )
    return ServiceUnavailable(f"cannot reach PostgreSQL at {redact(url)} ({first}); {START_HINT}")


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if missing; True when it was created."""
    name = database_name(url)
    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    conn = connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # created concurrently by another process
            return True
    finally:
        conn.close()


def _pool(url: str) -> _Pool:
    key = (os.getpid(), url)  # a forked child must never reuse its parent's sockets
    with _pools_lock:
        p = _pools.get(key)
        if p is None:
            p = _pools[key] = _Pool(url, int(_limits["max"]), float(_limits["wait_s"]))
        return p


def pool_peak(url: str) -> int:
    """The most connections this process's pool for ``url`` had open at once."""
    return _pool(url).peak


@contextmanager
def transaction(url: str, *, durable: bool = True) -> Iterator[Cursor]:
    """A cursor from this process's pool inside one transaction: commit on success, else rollback.

    ``durable=False`` commits without waiting for the WAL flush (``synchronous_commit = off``):
    0.4 ms instead of ~4 ms here. A PostgreSQL crash may then lose the last fraction of a second
    of such commits, never corrupt anything; use it only for writes that are cheap to redo (a
    window's claim or status: the task is idempotent and ``qtrain resume`` re-runs it).
    A connection the server closed (PostgreSQL restart) is discarded, and the error surfaces as
    ``ServiceUnavailable`` so that callers may retry.
    """
    p = _pool(url)
    conn = p.get()
    broken = False
    try:
        with conn.cursor() as cur:
            if not durable:
                cur.execute("SET LOCAL synchronous_commit TO OFF")
            yield cur
        conn.commit()
    except BaseException as exc:
        mapped = map_error(exc)
        # lock_timeout (LockNotAvailable is an OperationalError) and a missing table leave the
        # connection itself fine; any other OperationalError or InterfaceError means it is gone
        broken = isinstance(mapped, ServiceUnavailable) and not isinstance(mapped, LockTimeout)
        if not broken and not conn.closed:
            conn.rollback()
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        p.put(conn, discard=broken)


def try_advisory_xact_lock(cur: Cursor, key: str) -> bool:
    """Take the transaction-scoped advisory lock named ``key`` (hashed with ``hashtext``) without
    waiting: False when another transaction holds it (a second reaper or retrain tick then skips)."""
    cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (key,))
    return bool(cur.fetchone()[0])


def close_pools() -> None:
    """Close every pooled connection of this process (tests, worker shutdown)."""
    with _pools_lock:
        for key, p in list(_pools.items()):
            if key[0] == os.getpid():  # never touch sockets inherited from a parent process
                p.close()
                del _pools[key]
