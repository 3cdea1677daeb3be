"""The bounded PostgreSQL pool of a process (issue 30): at most N connections whatever the number of
threads, bounded waits, nested transactions that cannot deadlock it, and "too many clients" and
lock timeouts reported as what they are. Real PostgreSQL; only "too many clients" is simulated
(exhausting the shared server's max_connections would disturb every other test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest

from worker.errors import ServiceUnavailable
from worker.store import db


@pytest.fixture
def small_pool() -> Iterator[None]:
    """Pools made in this test hold at most 3 connections and wait at most 0.3 s."""
    db.close_pools()
    db.configure_pool(max_size=3, wait_s=0.3)
    yield
    db.close_pools()
    db.configure_pool(max_size=db.DEFAULT_POOL_MAX, wait_s=db.DEFAULT_POOL_WAIT_S)


def _backends(url: str) -> int:
    """Connections to the test's database other than this helper's own."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_many_threads_share_a_few_connections(database_url: str, small_pool: None) -> None:
    pids: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()
    peak_seen = [0]

    def work() -> None:
        try:
            for _ in range(5):
                with db.transaction(database_url) as cur:
                    cur.execute("SELECT pg_backend_pid() FROM pg_sleep(0.01)")
                    with lock:
                        pids.add(int(cur.fetchone()[0]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch(stop: threading.Event) -> None:
        while not stop.wait(0.02):
            peak_seen[0] = max(peak_seen[0], _backends(database_url))

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    db.configure_pool(wait_s=10)  # 32 threads queue for 3 connections: no one may give up here
    threads = [threading.Thread(target=work) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    watcher.join(5)
    assert not errors, errors[:3]
    assert 1 <= len(pids) <= 3, pids
    assert db.pool_peak(database_url) <= 3
    assert peak_seen[0] <= 3, peak_seen


def test_a_thread_waits_for_a_connection_then_gives_up_in_one_line(
    database_url: str, small_pool: None
) -> None:
    db.configure_pool(max_size=1, wait_s=0.3)
    db.close_pools()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction(database_url) as cur:
            cur.execute("SELECT 1")
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    t0 = time.monotonic()
    with pytest.raises(db.PoolExhausted) as got:
        with db.transaction(database_url) as cur:
            cur.execute("SELECT 1")
    waited = time.monotonic() - t0
    release.set()
    t.join(10)
    assert 0.25 <= waited < 3, waited
    msg = str(got.value)
    assert "\n" not in msg and "QTRAIN_DB_POOL" in msg and "concurrency" in msg
    assert isinstance(got.value, ServiceUnavailable)  # temporary: the task retries later
    with db.transaction(database_url) as cur:  # the connection came back: the next one gets it at once
        cur.execute("SELECT 1")


def test_a_nested_transaction_never_waits_for_its_own_thread(database_url: str, small_pool: None) -> None:
    db.configure_pool(max_size=1, wait_s=0.3)
    db.close_pools()
    with db.transaction(database_url) as outer:
        outer.execute("SELECT pg_backend_pid()")
        with db.transaction(database_url) as inner:  # the reducer reads candles inside its lock
            inner.execute("SELECT pg_backend_pid()")
            assert inner.fetchone() != outer.fetchone()
    assert db.pool_peak(database_url) == 2
    # the overdraft connection was closed when returned: one idle connection is kept
    assert _backends(database_url) == 1


def test_too_many_clients_is_reported_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise psycopg2.OperationalError(
            'connection to server at "127.0.0.1", port 5432 failed: FATAL:  sorry, too many clients already\n'
        )

    monkeypatch.setattr(psycopg2, "connect", refuse)
    with pytest.raises(ServiceUnavailable) as got:
        db.connect("postgresql://postgres:secret@127.0.0.1:5432/qtrain")
    msg = str(got.value)
    assert "\n" not in msg
    assert "too many clients already" in msg and "max_connections" in msg
    assert "concurrency" in msg and "QTRAIN_DB_POOL" in msg
    assert "cannot reach" not in msg and "pg_ctlcluster" not in msg  # it is running: no "start it"
    assert "secret" not in msg


def test_a_lock_wait_is_bounded(database_url: str, small_pool: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "LOCK_TIMEOUT_S", 0.3)
    holder = psycopg2.connect(database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('qtrain.test'))")
        t0 = time.monotonic()
        with pytest.raises(db.LockTimeout), db.transaction(database_url) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('qtrain.test'))")
        assert time.monotonic() - t0 < 5
        with db.transaction(database_url) as cur:  # the connection survived the timeout
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        holder.close()


def test_a_missing_table_is_one_error_with_one_text_and_the_connection_stays(
    database_url: str, small_pool: None
) -> None:
    """``db.map_error``: the status read, the candle read and the train preflight all say the schema
    is missing in the same words (a ``BadInput``: retrying cannot help, `db init` can), and the
    connection goes back to the pool usable."""
    from worker.errors import BadInput
    from worker.store import batches, migrate
    from worker.store.candles import stored_counts

    with db.transaction(database_url) as cur:
        cur.execute("DROP SCHEMA btc CASCADE")
    for read in (
        lambda: batches.latest_batch_id(database_url),
        lambda: stored_counts(database_url, "1h"),
        lambda: migrate.require_schema(database_url),
    ):
        with pytest.raises(BadInput) as caught:  # the candle reads' own excepts raise BadInput(NO_SCHEMA)
            read()
        assert str(caught.value) == db.SCHEMA_MISSING
    assert db.SCHEMA_MISSING == "the qtrain schema is missing or old: run `qtrain db init`"
    with db.transaction(database_url) as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert db.pool_peak(database_url) == 1  # the same connection throughout, never discarded
