"""A long-running worker keeps its memory flat (issue 14): dead time-limit timers are purged from
the main process's timer heap, heavy tasks hand their heap back, workers run niced.

The purge is checked on a real kombu timer (property test) and in real worker processes running a
batch of time-limited analyse tasks (real Redis, PostgreSQL and Celery; heuristic analyst).
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.asynchronous.timer import Timer

from tests.pipeline_support import pipeline_env, seed_candles, train_json, wait_for
from worker.cluster.local import start_workers
from worker.errors import BadInput
from worker.runtime import housekeeping
from worker.settings import Settings


def _fire_order(timer: Timer) -> list[int]:
    """The tags of the entries the timer would fire, in firing order (all are due: etas in the past)."""
    fired: list[int] = []
    for _, entry in timer:
        if entry is None:
            break
        entry()
        fired.append(entry.args[0])
    return fired


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, -1.0), st.booleans()), max_size=60))
def test_purge_drops_cancelled_entries_keeps_live_ones_in_order(items: list[tuple[float, bool]]) -> None:
    timer, reference = Timer(), Timer()
    for tag, (eta, cancel) in enumerate(items):
        for t in (timer, reference):
            entry = t.call_at(eta, lambda tag: None, (tag,))
            if cancel:
                entry.cancel()
    queue = timer._queue
    dropped = housekeeping.purge_cancelled(timer)
    assert timer._queue is queue  # the iterator holds this list: purged in place
    assert dropped == sum(cancel for _, cancel in items)
    assert not any(item.entry.canceled for item in timer._queue)
    fired = _fire_order(timer)
    assert sorted(fired) == sorted(_fire_order(reference))  # the same live entries fire
    etas = [items[tag][0] for tag in fired]
    assert etas == sorted(etas)  # still a heap: earliest first


def test_release_memory_runs_on_glibc() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    assert housekeeping.release_memory() is True


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("QTRAIN_WORKER_NICE", "40", "from 0 to 19"),
        ("QTRAIN_WORKER_NICE", "-5", "from 0 to 19"),
        ("QTRAIN_WORKER_MAX_MEMORY_MB", "lots", "a whole number >= 0"),
        ("QTRAIN_MAX_ATTEMPTS", "0", "a whole number >= 1"),
        ("QTRAIN_MAX_ATTEMPTS", "2.5", "a whole number"),
        ("OLLAMA_TIMEOUT", "nan", "a number >= 0.001"),
        ("QTRAIN_LEASE_S", "soon", "a number >= 1"),
    ],
)
def test_bad_numbers_in_the_environment_are_one_line_errors(name: str, value: str, words: str) -> None:
    with pytest.raises(BadInput) as err:
        Settings.from_env({name: value})
    message = str(err.value)
    assert name in message and repr(value) in message and words in message and "\n" not in message


def test_empty_numbers_mean_the_default() -> None:
    env = {"QTRAIN_WORKER_NICE": "", "QTRAIN_LEASE_S": " ", "QTRAIN_WORKER_MAX_MEMORY_MB": "0"}
    s = Settings.from_env(env)
    assert (s.worker_nice, s.lease_s, s.worker_max_memory_mb) == (10, Settings().lease_s, 0)


@pytest.mark.integration
def test_workers_purge_dead_time_limit_timers_and_run_niced(database_url, redis_url, tmp_path) -> None:
    """About 600 analyse tasks, each arming a 75 s time limit (OLLAMA_TIMEOUT 5 s): without the
    purge their cancelled timers stay in the main process's heap for 75 s; with it, none is left
    one purge interval (30 s) after the batch."""
    from celery import Celery

    seed_candles(database_url)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    probe = Celery(broker=env["CELERY_BROKER_URL"])
    probe.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    base_nice = os.nice(0)
    with start_workers(2, concurrency=2, env=env, log_dir=tmp_path) as workers:
        final = train_json(env, "--analyst", "heuristic", "--stride", "1")
        assert final["state"] == "done" and final["total"] >= 500

        def stats() -> dict[str, dict[str, int]]:
            replies = probe.control.inspect(timeout=2.0)._request("qtrain_housekeeping") or {}
            return replies if len(replies) == 2 else {}

        def purged() -> dict[str, dict[str, int]] | None:
            got = stats()
            return got if got and all(s["timer_cancelled"] == 0 for s in got.values()) else None

        procs = list(zip(workers.procs, workers.logs, strict=True))
        after = wait_for("cancelled timers purged", purged, procs=procs, timeout=45.0, poll_s=2.0)
        for s in after.values():
            assert s["timer_entries"] < 20, s  # only the live periodic entries are left
            assert s["nice"] == min(19, base_nice + 10), s
        for p in workers.procs:  # pool children inherit the main process's niceness
            for child in _children(p.pid):
                assert os.getpriority(os.PRIO_PROCESS, child) == min(19, base_nice + 10)
    probe.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]
