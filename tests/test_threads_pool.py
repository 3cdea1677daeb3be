"""One worker process with many calls in flight (``--pool threads``, issue 30), real parts throughout:
Celery worker processes, Redis, PostgreSQL, the fake Ollama over HTTP.

- a threads-pool worker runs a batch to completion with dozens of calls in flight, on at most
  ``QTRAIN_DB_POOL`` (+ heartbeat and reaper) PostgreSQL connections;
- its leases are renewed while a call longer than the lease runs (nobody reclaims it), and once
  the worker is SIGKILLed its windows are re-run after about the lease plus the reaper interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.chaos_support import (
    alive,
    assert_batch_complete,
    reclaimed_windows,
    sigkill,
    start_batch,
    wait_batch_finished,
    wait_until,
    window_counts,
)
from tests.fake_ollama import FakeOllama
from tests.pipeline_support import pipeline_env, query, seed_candles
from worker.cluster.local import start_workers

pytestmark = pytest.mark.integration

APP_NAME = "qtrain-test-threads"
SYMBOLS = ("BTC-USDT", "ETH-USDT")


class PgConnections:
    """The most ``pg_stat_activity`` rows of processes started with ``PGAPPNAME=APP_NAME``."""

    def __init__(self, url: str) -> None:
        self.url, self.peak = url, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(0.05):
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
                    )
                    self.peak = max(self.peak, int(cur.fetchone()[0]))
        finally:
            conn.close()

    def __enter__(self) -> PgConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_threads_pool_worker_runs_a_batch_with_many_calls_in_flight(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    seed_candles(database_url, n=240)  # window 48, stride 2: 97 windows per symbol
    with FakeOllama(latency_s=1.0, num_parallel=64) as fake:
        env = {
            **pipeline_env(database_url, redis_url, fake.url, tmp_path / "models"),
            "PGAPPNAME": APP_NAME,
            "QTRAIN_DB_POOL": "4",
        }
        with (
            start_workers(1, concurrency=32, env=env, log_dir=tmp_path, prefix="thr", pool="threads") as w,
            PgConnections(database_url) as pg,
        ):
            batch_id = start_batch(env, ",".join(SYMBOLS), "--stride", "2")
            assert wait_batch_finished(database_url, batch_id, timeout=180) == "done"
            log = w.logs[0].read_text(errors="replace")
        stats = fake.stats()
    rows = assert_batch_complete(database_url, batch_id, SYMBOLS)
    assert len(rows) == 194 and all(r[2] == "done" for r in rows), log[-3000:]
    assert stats["llm_calls"] == len(rows)  # each window called once
    assert stats["max_in_flight"] >= 24, stats["max_in_flight"]  # one process, dozens of calls at once
    # 4 pooled + the heartbeat's and the reaper's short-lived ones (and a nested one in a reducer)
    assert 1 <= pg.peak <= 4 + 3, pg.peak


LEASE_S, REAP_S, LONG_CALL_S = 4.0, 1.0, 9.0


@pytest.fixture
def slow_fake() -> Iterator[FakeOllama]:
    with FakeOllama(latency_s=LONG_CALL_S, num_parallel=16) as server:
        yield server


def test_a_long_call_keeps_its_window_and_a_killed_worker_loses_it_within_a_lease(
    database_url: str, redis_url: str, slow_fake: FakeOllama, tmp_path: Path
) -> None:
    seed_candles(database_url, n=240)  # window 48, stride 24: 9 windows of ETH-USDT
    env = {
        **pipeline_env(database_url, redis_url, slow_fake.url, tmp_path / "models"),
        "QTRAIN_LEASE_S": str(LEASE_S),
        "QTRAIN_REAP_INTERVAL_S": str(REAP_S),
        "OLLAMA_TIMEOUT": "60",
    }
    victim = start_workers(
        1, concurrency=4, env=env, log_dir=tmp_path, prefix="victim", pool="threads", loglevel="INFO"
    )
    try:
        batch_id = start_batch(env, "ETH-USDT")
        wait_until(lambda: slow_fake.stats()["in_flight"] >= 4, timeout=60, what="four calls in flight")
        started = time.monotonic()
        # calls of 9 s against a 4 s lease: the victim's own reaper (every second) would take the
        # windows back after ~5 s if nothing renewed their leases
        wait_until(lambda: time.monotonic() - started > LONG_CALL_S - 1.5, timeout=30, what="most of a call")
        assert reclaimed_windows(database_url, batch_id) == 0
        assert slow_fake.stats()["llm_calls"] == 4  # nobody started a second copy of a running window
        wait_until(
            lambda: window_counts(database_url, batch_id).get("done", 0) >= 4,
            timeout=30,
            what="the first four long calls to finish",
        )
        wait_until(lambda: slow_fake.stats()["in_flight"] >= 4, timeout=30, what="the next four calls")
        pid = victim.procs[0].pid
        sigkill(pid)
        killed_at = time.monotonic()
        wait_until(lambda: not alive(pid) or victim.procs[0].poll() is not None, timeout=10, what="the kill")
        victim.procs[0].wait(10)
    finally:
        victim.stop(5)
    assert reclaimed_windows(database_url, batch_id) == 0
    slow_fake.configure(latency_s=0.05)
    with start_workers(
        1, concurrency=4, env=env, log_dir=tmp_path, prefix="survivor", pool="threads", loglevel="INFO"
    ) as survivor:
        wait_until(
            lambda: reclaimed_windows(database_url, batch_id) >= 4,
            timeout=60,
            what="the killed worker's four windows to be taken back",
        )
        reclaimed_after = time.monotonic() - killed_at
        assert wait_batch_finished(database_url, batch_id, timeout=60) == "done"
        log = survivor.logs[0].read_text(errors="replace")
    rows = assert_batch_complete(database_url, batch_id, ("ETH-USDT",))
    assert all(r[2] == "done" for r in rows), rows
    assert "reaper: re-enqueued" in log, log[-3000:]
    print(
        f"\nRECOVERY threads pool lease_s={LEASE_S} reap_interval_s={REAP_S} call={LONG_CALL_S}s"
        f" kill->reclaimed={reclaimed_after:.1f}s"
    )
    # the lease ran out at most LEASE_S after the last renewal, and the survivor reaps every REAP_S
    # (plus its start-up, a few seconds on a busy machine)
    assert reclaimed_after < LEASE_S + REAP_S + 15, reclaimed_after
    (lost,) = query(database_url, "SELECT sum(lost) FROM windows WHERE batch_id = %s", (batch_id,))[0]
    assert lost == 4
