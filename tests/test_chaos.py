"""Failure injection against the real pipeline: killed pool children, a killed worker, lost connections.

Real Redis, PostgreSQL and ``celery worker`` processes; the fake Ollama answers after 1.5 s so
that calls are in flight when the fault is injected. Each test waits for the batch by polling
PostgreSQL with a deadline, then checks the promises: the batch is ``done``, every window is
final, each distinct window content was analysed exactly once, and every symbol has its
Q-table version. Faults: a SIGKILLed pool child (acks late + reject on worker lost requeue its
task), a SIGKILLed worker (``qtrain resume`` with a new worker), terminated PostgreSQL connections
(the pool drops them before use), a database refusing connections for a while (tasks retry, no
window stays ``running``), and a duplicate task that fails after its twin finished the window.
(Redis flushed mid-batch is ``test_pipeline::test_resume_after_broker_loss``.)

Self-healing (issue 13), on both brokers (``tests.brokers``: Redis, or a RabbitMQ vhost per test):
a whole worker SIGKILLed mid-batch with nobody typing a command afterwards (the reaper inside the
surviving worker, or RabbitMQ's redelivery, takes its windows back; the Q-tables equal an
undisturbed run's byte for byte), and a window whose task kills its worker every time (it ends
``failed`` after ``QTRAIN_MAX_ATTEMPTS`` losses and the batch finishes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.brokers import broker_env, broker_fixture, rabbitmq_url_fixture  # noqa: F401 - fixtures
from tests.chaos_support import (
    active_task_pid,
    agent_tables,
    alive,
    allow_connections,
    assert_batch_complete,
    child_pids,
    reclaimed_windows,
    sigkill,
    start_batch,
    terminate_backends,
    wait_batch_finished,
    wait_until,
    window_counts,
)
from tests.fake_ollama import FakeOllama
from tests.pipeline_support import pipeline_env, qtrain, query, seed_candles
from worker.cluster.local import LocalWorkers, start_workers
from worker.pipeline import dispatch
from worker.pipeline.analyze import analyze
from worker.settings import Settings
from worker.store import batches, db

pytestmark = pytest.mark.integration

LATENCY_S = 1.5
SYMBOLS = ("BTC-USDT", "ETH-USDT")
N_CANDLES = 150  # (150 - 48) // 24 + 1 = 5 windows per symbol
FINISH_TIMEOUT_S = 60.0


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(latency_s=LATENCY_S, num_parallel=4) as server:
        yield server


@pytest.fixture
def env(database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path) -> dict[str, str]:
    seed_candles(database_url, n=N_CANDLES)
    return pipeline_env(database_url, redis_url, fake.url, tmp_path / "models")


def _worker(env: dict[str, str], tmp_path: Path, prefix: str = "chaos") -> LocalWorkers:
    return start_workers(1, concurrency=2, env=env, log_dir=tmp_path, prefix=prefix, loglevel="INFO")


def _in_flight(fake: FakeOllama, n: int) -> bool:
    return int(fake.stats()["in_flight"]) >= n


def test_sigkilled_pool_child_has_its_task_requeued(env, database_url, fake, tmp_path) -> None:
    with _worker(env, tmp_path) as workers:
        main = workers.procs[0].pid
        children = wait_until(
            lambda: len(child_pids(main)) == 2 and child_pids(main),
            timeout=10,
            what="two prefork pool children",
        )
        batch_id = start_batch(env, ",".join(SYMBOLS))
        # one worker, two children, one task each: two calls in flight means each child is in one
        wait_until(lambda: _in_flight(fake, 2), timeout=30, what="both pool children in an LLM call")
        victim = children[0]
        sigkill(victim)
        wait_until(lambda: not alive(victim), timeout=10, what="the killed child to be gone")
        assert wait_batch_finished(database_url, batch_id, timeout=FINISH_TIMEOUT_S) == "done"
        replacement = set(child_pids(main)) - set(children)
        log = workers.logs[0].read_text(errors="replace")
    rows = assert_batch_complete(database_url, batch_id, SYMBOLS)
    assert not [r for r in rows if r[2] == "failed"], rows
    rerun = [r for r in rows if r[3] >= 2]
    assert rerun, "the killed child's window must have been claimed again (attempts >= 2)"
    assert fake.stats()["llm_calls"] >= len(rows) + 1  # the killed call was made again
    assert replacement, "the pool replaces its killed child"
    assert "WorkerLostError" in log or "SIGKILL" in log, log[-2000:]


def test_sigkilled_worker_is_recovered_by_resume_with_a_new_worker(
    env, database_url, redis_url, fake, tmp_path
) -> None:
    first = _worker(env, tmp_path, prefix="doomed")
    try:
        main = first.procs[0]
        children = wait_until(
            lambda: len(child_pids(main.pid)) == 2 and child_pids(main.pid),
            timeout=10,
            what="two prefork pool children",
        )
        batch_id = start_batch(env, ",".join(SYMBOLS))

        def mid_batch() -> bool:
            counts = window_counts(database_url, batch_id)
            return counts.get("done", 0) + counts.get("cached", 0) >= 2 and _in_flight(fake, 2)

        wait_until(mid_batch, timeout=30, what="two windows done and two calls in flight")
        for pid in (main.pid, *children):  # the main process first: it could fork a replacement
            sigkill(pid)
        main.wait(10)
        wait_until(lambda: not any(alive(p) for p in children), timeout=10, what="the children to die")
    finally:
        first.stop(5)
    running = query(
        database_url,
        "SELECT symbol, idx FROM windows WHERE batch_id = %s AND status = 'running'",
        (batch_id,),
    )
    assert running, "the worker died in the middle of LLM calls: their windows stay 'running'"
    queue = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    try:  # their messages are unacknowledged: Redis would hand them out only after the visibility timeout
        assert queue.hlen("unacked") >= 1
    finally:
        queue.close()
    with _worker(env, tmp_path, prefix="rescuer"):
        out = qtrain(env, "resume", str(batch_id), "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        assert wait_batch_finished(database_url, batch_id, timeout=FINISH_TIMEOUT_S) == "done"
    rows = assert_batch_complete(database_url, batch_id, SYMBOLS)
    assert not [r for r in rows if r[2] == "failed"], rows
    by_key = {(r[0], r[1]): r for r in rows}
    for symbol, idx in running:  # re-run from 'running', not left behind
        assert by_key[(symbol, idx)][2] in ("done", "cached") and by_key[(symbol, idx)][3] >= 2


def test_terminated_database_connections_do_not_stop_the_batch(env, database_url, fake, tmp_path) -> None:
    ended = 0
    with _worker(env, tmp_path) as workers:
        batch_id = start_batch(env, ",".join(SYMBOLS))
        for _ in range(3):  # while both children wait for Ollama: their pooled connections sit idle
            wait_until(lambda: _in_flight(fake, 2), timeout=30, what="two LLM calls in flight")
            calls = fake.stats()["llm_calls"]
            ended += terminate_backends(database_url)
            wait_until(
                lambda calls=calls: fake.stats()["llm_calls"] >= calls + 2,
                timeout=30,
                what="two more LLM calls after the connections were terminated",
            )
        assert wait_batch_finished(database_url, batch_id, timeout=FINISH_TIMEOUT_S) == "done"
        log = workers.logs[0].read_text(errors="replace")
    assert ended >= 3, "every injection must have ended at least one worker connection"
    rows = assert_batch_complete(database_url, batch_id, SYMBOLS)
    failed = [r for r in rows if r[2] == "failed"]
    assert not failed, f"a lost connection must not fail a window: {failed}\n{log[-3000:]}"
    # A connection the server closed while it sat in the pool is dropped before use: no answer
    # is thrown away (6 would be without that check; 1 of slack for a termination that lands
    # inside a running transaction, which must fail and retry).
    redone = fake.stats()["llm_calls"] - len(rows)
    assert redone <= 1, f"{redone} LLM answers lost to stale pooled connections\n{log[-3000:]}"


REFUSED = "not currently accepting connections"


def test_database_outage_mid_batch_leaves_no_window_stuck(env, database_url, fake, tmp_path) -> None:
    with _worker(env, tmp_path) as workers:
        batch_id = start_batch(env, ",".join(SYMBOLS))
        wait_until(lambda: _in_flight(fake, 2), timeout=30, what="both pool children in an LLM call")
        allow_connections(database_url, False)  # like a PostgreSQL restart, for this database only
        try:
            terminate_backends(database_url)
            # both answers come back while the database is away: recording them must fail, twice
            wait_until(
                lambda: workers.logs[0].read_text(errors="replace").count(REFUSED) >= 2,
                timeout=30,
                what="both tasks to meet the outage",
            )
        finally:
            allow_connections(database_url, True)
        assert wait_batch_finished(database_url, batch_id, timeout=FINISH_TIMEOUT_S) == "done"
        log = workers.logs[0].read_text(errors="replace")
    rows = assert_batch_complete(database_url, batch_id, SYMBOLS)
    assert not [r for r in rows if r[2] == "failed"], f"{rows}\n{log[-3000:]}"


def test_a_pooled_connection_the_server_closed_is_replaced_before_use(database_url) -> None:
    with db.transaction(database_url) as cur:
        cur.execute("SELECT pg_backend_pid()")
        (old_pid,) = cur.fetchone()
    assert terminate_backends(database_url) >= 1  # the idle pooled connection among them
    wait_until(
        lambda: not query(database_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (old_pid,)),
        timeout=10,
        what="the terminated backend to go away",
    )
    with db.transaction(database_url) as cur:  # no ServiceUnavailable: the dead one was dropped
        cur.execute("SELECT pg_backend_pid()")
        (new_pid,) = cur.fetchone()
    assert new_pid != old_pid


def test_a_slower_duplicate_that_fails_does_not_undo_a_finished_window(database_url) -> None:
    """Acks late and ``qtrain resume`` may run one window twice at once: only the newest claim writes
    (the fencing token is the claim's attempt number), and the loser's outcome is moot."""
    seed_candles(database_url, n=N_CANDLES)
    settings = Settings(database_url=database_url)
    req = dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="heuristic", seed=1, epochs=1)
    batch_id = dispatch.create(settings, req).batch_id
    first, _ = batches.claim_window(database_url, batch_id, "BTC-USDT", 0)
    second, _ = batches.claim_window(database_url, batch_id, "BTC-USDT", 0)  # the duplicate
    assert first is not None and second is not None and second.attempts == 2
    assert analyze(database_url, second, None) == "done"
    with pytest.raises(batches.Superseded):  # the stale copy's answer writes nothing
        analyze(database_url, first, None)
    for status in ("pending", "failed"):  # what a copy records after a timeout / its last attempt
        for attempt in (1, 2, None):  # stale, current, unfenced: a finished window keeps its analysis
            batches.set_window_status(
                database_url, batch_id, "BTC-USDT", 0, status, "attempt failed: timeout", attempt=attempt
            )
            row = query(
                database_url,
                "SELECT status, error, analysis_id IS NOT NULL FROM windows WHERE batch_id = %s AND idx = 0",
                (batch_id,),
            )
            assert row == [("done", None, True)], (status, attempt)
    assert query(database_url, "SELECT count(*) FROM ollama_analyses")[0][0] == 1
    # not a window that is still open: a failure there is recorded as before
    batches.claim_window(database_url, batch_id, "BTC-USDT", 1)
    assert batches.set_window_status(
        database_url, batch_id, "BTC-USDT", 1, "failed", "gave up after 3 attempts", attempt=1
    )
    assert query(database_url, "SELECT status FROM windows WHERE batch_id = %s AND idx = 1", (batch_id,)) == [
        ("failed",)
    ]


HEAL_CANDLES = 240  # (240 - 48) // 24 + 1 = 9 windows per symbol
HEAL_SETTINGS = {"QTRAIN_LEASE_S": "30", "QTRAIN_REAP_INTERVAL_S": "5"}
HEAL_TIMEOUT_S = 180.0


def _heal_env(url: str, redis_url: str, broker_url: str, fake: FakeOllama, models: Path) -> dict[str, str]:
    return {**broker_env(pipeline_env(url, redis_url, fake.url, models), broker_url), **HEAL_SETTINGS}


def test_sigkilled_worker_heals_without_a_command(
    broker, database_factory, redis_url, fake, tmp_path
) -> None:
    """Two workers, one SIGKILLed whole (main process and pool) mid-batch; nobody types anything."""
    symbols = ",".join(SYMBOLS)
    calm = database_factory()
    seed_candles(calm, n=HEAL_CANDLES)
    env = _heal_env(calm, redis_url, broker, fake, tmp_path / "calm")
    with start_workers(2, concurrency=2, env=env, log_dir=tmp_path, prefix="calm", loglevel="INFO"):
        calm_batch = start_batch(env, symbols)
        assert wait_batch_finished(calm, calm_batch, timeout=HEAL_TIMEOUT_S) == "done"
    undisturbed = agent_tables(calm)

    url = database_factory()
    seed_candles(url, n=HEAL_CANDLES)
    env = _heal_env(url, redis_url, broker, fake, tmp_path / "heal")
    workers = start_workers(2, concurrency=2, env=env, log_dir=tmp_path, prefix="heal", loglevel="INFO")
    try:
        victim = workers.procs[0]
        children = wait_until(
            lambda: len(child_pids(victim.pid)) == 2 and child_pids(victim.pid),
            timeout=10,
            what="the victim's two pool children",
        )
        batch_id = start_batch(env, symbols)

        def mid_batch() -> bool:
            counts = window_counts(url, batch_id)
            return counts.get("done", 0) + counts.get("cached", 0) >= 2 and _in_flight(fake, 4)

        wait_until(mid_batch, timeout=60, what="two windows done and all four slots in a call")
        for pid in (victim.pid, *children):  # the main process first: it could fork a replacement
            sigkill(pid)
        killed_at = time.monotonic()
        victim.wait(10)
        wait_until(lambda: not any(alive(p) for p in children), timeout=10, what="the children to die")
        wait_until(
            lambda: reclaimed_windows(url, batch_id) >= 1,
            timeout=HEAL_TIMEOUT_S,
            what="the dead worker's windows to be taken back",
        )
        reclaimed_at = time.monotonic()
        wait_until(
            lambda: not {"pending", "running"} & set(window_counts(url, batch_id)),
            timeout=HEAL_TIMEOUT_S,
            what="every window final",
        )
        final_at = time.monotonic()
        assert wait_batch_finished(url, batch_id, timeout=HEAL_TIMEOUT_S) == "done"
        done_at = time.monotonic()
        survivor_log = workers.logs[1].read_text(errors="replace")
    finally:
        workers.stop(10)
    rows = assert_batch_complete(url, batch_id, SYMBOLS)
    assert not [r for r in rows if r[2] == "failed"], f"{rows}\n{survivor_log[-3000:]}"
    reclaimed = reclaimed_windows(url, batch_id)
    assert 1 <= reclaimed <= 2, reclaimed  # the victim was in two calls
    assert agent_tables(url) == undisturbed, "the Q-tables must equal the undisturbed run's, byte for byte"
    status = qtrain(env, "status", str(batch_id), "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    shown = json.loads(status.stdout)["symbols"]
    assert sum(s["reclaimed"] for s in shown.values()) == reclaimed
    to_reclaim, to_final, to_done = (t - killed_at for t in (reclaimed_at, final_at, done_at))
    kind = broker.split(":", 1)[0]
    print(
        f"\nRECOVERY broker={kind} lease_s={HEAL_SETTINGS['QTRAIN_LEASE_S']}"
        f" reap_interval_s={HEAL_SETTINGS['QTRAIN_REAP_INTERVAL_S']} reclaimed={reclaimed}"
        f" kill->reclaim={to_reclaim:.1f}s kill->all-final={to_final:.1f}s"
        f" kill->batch-done={to_done:.1f}s"
    )
    if kind == "amqp":  # RabbitMQ redelivers when the connection drops, long before the lease ends
        assert to_reclaim < float(HEAL_SETTINGS["QTRAIN_LEASE_S"]) - 5, to_reclaim
    else:  # Redis: the surviving worker's reaper, once the lease expired
        assert "reaper: re-enqueued" in survivor_log, survivor_log[-3000:]


def test_a_window_that_always_kills_its_worker_ends_failed(
    broker, database_url, redis_url, fake, tmp_path
) -> None:
    """Its pool process is SIGKILLed every time it runs (as an OOM kill or a segfault would): after
    ``QTRAIN_MAX_ATTEMPTS`` lost workers the window is ``failed`` and the batch finishes."""
    seed_candles(database_url, n=N_CANDLES)
    env = {
        **broker_env(pipeline_env(database_url, redis_url, fake.url, tmp_path / "m"), broker),
        "QTRAIN_MAX_ATTEMPTS": "3",
    }
    batch_id = start_batch(env, "ETH-USDT")  # no worker yet: the messages wait in the queue
    poison = 2
    (start,) = query(
        database_url, "SELECT start_ts FROM windows WHERE batch_id = %s AND idx = %s", (batch_id, poison)
    )[0]
    # the poison window's call hangs, so that its task is surely running when the test kills it
    fake.configure(faults=[{"mode": "hang", "match": f"ETH-USDT 1h, 48 candles, {start:%Y-%m-%d %H:%M}"}])

    def poison_state() -> tuple[str, int]:
        status, attempts = query(
            database_url,
            "SELECT status, attempts FROM windows WHERE batch_id = %s AND idx = %s",
            (batch_id, poison),
        )[0]
        return str(status), int(attempts)

    kills = 0
    with start_workers(1, concurrency=2, env=env, log_dir=tmp_path, prefix="poison", loglevel="INFO") as w:
        while True:

            def running_or_failed(kills: int = kills) -> str | int | None:
                status, attempts = poison_state()
                if status == "failed":
                    return "failed"
                if status != "running" or attempts != kills + 1:  # not yet claimed again
                    return None
                pid = active_task_pid(env["CELERY_BROKER_URL"], [batch_id, "ETH-USDT", poison])
                return pid if pid is not None and alive(pid) else None  # not the one just killed

            found = wait_until(running_or_failed, timeout=60, what="the poison task to run (or be failed)")
            if found == "failed":
                break
            log = w.logs[0].read_text(errors="replace")
            assert kills < 3, f"the window ran a 4th time after 3 lost workers\n{log[-3000:]}"
            sigkill(int(found))
            kills += 1
            wait_until(lambda pid=int(found): not alive(pid), timeout=10, what="the killed process to go")
        assert wait_batch_finished(database_url, batch_id, timeout=FINISH_TIMEOUT_S) == "done"
    rows = assert_batch_complete(database_url, batch_id, ("ETH-USDT",))
    by_idx = {r[1]: r for r in rows}
    assert kills == 3
    assert by_idx[poison][2] == "failed" and by_idx[poison][4] == "worker lost 3 times", by_idx[poison]
    assert all(r[2] in ("done", "cached") for i, r in by_idx.items() if i != poison), rows
