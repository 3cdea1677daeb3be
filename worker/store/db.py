"""PostgreSQL connections: one small pool per process and URL, errors translated at the edge."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from worker.errors import ServiceUnavailable
from worker.redact import redact

START_HINT = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

#: Idle connections kept per process and URL (enough for a threaded caller; prefork uses 1-2).
POOL_IDLE_MAX = 8


class _Pool:
    """Idle connections of one process for one URL: reuse instead of reconnecting (~3 ms each)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.idle: list[psycopg2.extensions.connection] = []
        self.lock = threading.Lock()

    def get(self) -> psycopg2.extensions.connection:
        with self.lock:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed and not _server_hung_up(conn):
                    return conn
                conn.close()
        return connect(self.url)

    def put(self, conn: psycopg2.extensions.connection, *, discard: bool) -> None:
        ok = not discard and not conn.closed
        ok = ok and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with self.lock:
            if ok and len(self.idle) < POOL_IDLE_MAX:
                self.idle.append(conn)
                return
        if not conn.closed:
            conn.close()

    def close(self) -> None:
        with self.lock:
            for conn in self.idle:
                conn.close()
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
    try:
        return psycopg2.connect(url, connect_timeout=5, **kwargs)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "does not exist" in first:
            raise ServiceUnavailable(f"PostgreSQL database missing ({first}): run `qtrain db init`") from exc
        raise ServiceUnavailable(f"cannot reach PostgreSQL at {redact(url)} ({first}); {START_HINT}") from exc


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
            p = _pools[key] = _Pool(url)
        return p


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
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        broken = True
        raise ServiceUnavailable(f"lost the PostgreSQL connection: {exc}".strip()) from exc
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    finally:
        p.put(conn, discard=broken)


def close_pools() -> None:
    """Close every pooled connection of this process (tests, worker shutdown)."""
    with _pools_lock:
        for key, p in list(_pools.items()):
            if key[0] == os.getpid():  # never touch sockets inherited from a parent process
                p.close()
                del _pools[key]
