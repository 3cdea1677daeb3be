"""Leases, fencing and the reaper against a real PostgreSQL, without Celery (``send`` is recorded).

The whole-worker SIGKILL on both brokers is ``test_chaos::test_sigkilled_worker_heals_without_a_command``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline_support import query, seed_candles
from worker.pipeline import dispatch
from worker.pipeline.analyze import analyze
from worker.runtime import reaper
from worker.settings import Settings
from worker.store import batches

SYMBOL = "BTC-USDT"


def _batch(database_url: str, n: int = 150) -> tuple[Settings, int]:
    seed_candles(database_url, n=n)
    settings = Settings(database_url=database_url, max_attempts=3, lease_s=30.0)
    req = dispatch.TrainRequest(symbols=(SYMBOL,), analyst="heuristic", seed=1, epochs=1)
    return settings, dispatch.create(settings, req).batch_id


def _expire(database_url: str, batch_id: int, idx: int) -> None:
    """Move the window's lease into the past, as if its worker had died lease_s ago."""
    from worker.store import db

    with db.transaction(database_url) as cur:
        cur.execute(
            "UPDATE btc.windows SET lease_until = now() - interval '1 second'"
            " WHERE batch_id = %s AND idx = %s",
            (batch_id, idx),
        )


def _row(database_url: str, batch_id: int, idx: int) -> tuple[Any, ...]:
    return tuple(
        query(
            database_url,
            "SELECT status, attempts, lost, error, lease_until IS NOT NULL FROM windows"
            " WHERE batch_id = %s AND idx = %s",
            (batch_id, idx),
        )[0]
    )


class Sent(list[tuple[str, tuple[Any, ...]]]):
    def __call__(self, name: str, args: tuple[Any, ...]) -> None:
        self.append((name, args))


def test_a_claim_carries_a_lease_and_an_unexpired_one_is_left_alone(database_url: str) -> None:
    settings, batch_id = _batch(database_url)
    window, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=30)
    assert window is not None and window.attempts == 1
    (secs,) = query(
        database_url,
        "SELECT extract(epoch FROM lease_until - now()) FROM windows WHERE batch_id = %s AND idx = 0",
        (batch_id,),
    )[0]
    assert 25 < float(secs) <= 30
    sent = Sent()
    assert not reaper.reap(settings, sent).anything and sent == []


def test_an_expired_lease_is_reenqueued_counted_and_the_late_original_is_fenced(database_url: str) -> None:
    settings, batch_id = _batch(database_url)
    original, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=30)
    assert original is not None
    _expire(database_url, batch_id, 0)
    sent = Sent()
    done = reaper.reap(settings, sent)
    assert done.requeued == [(batch_id, SYMBOL, 0)]
    assert sent == [("qtrain.analyze_window", (batch_id, SYMBOL, 0))]
    assert _row(database_url, batch_id, 0)[:3] == ("pending", 1, 1)
    # the late original finishes after its window was reaped: it changes nothing
    with pytest.raises(batches.Superseded):
        analyze(database_url, original, None)
    assert not batches.set_window_status(database_url, batch_id, SYMBOL, 0, "failed", "late", attempt=1)
    assert _row(database_url, batch_id, 0)[:3] == ("pending", 1, 1)
    assert query(database_url, "SELECT count(*) FROM ollama_analyses")[0][0] == 0
    # the re-enqueued copy claims it (a pending window: no second loss counted) and finishes it
    current, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0)
    assert current is not None and current.attempts == 2
    assert analyze(database_url, current, None) == "done"
    assert _row(database_url, batch_id, 0) == ("done", 2, 1, None, False)
    st = batches.batch_status(database_url, batch_id)
    assert st is not None and st.symbols[SYMBOL].reclaimed == 1
    assert st.to_json()["symbols"][SYMBOL]["reclaimed"] == 1


def test_a_window_that_keeps_losing_its_worker_ends_failed(database_url: str) -> None:
    settings, batch_id = _batch(database_url)
    # redeliveries after killed workers: each claim finds the window still running
    for attempt in (1, 2, 3):
        window, final = batches.claim_window(database_url, batch_id, SYMBOL, 1, max_lost=3)
        assert window is not None and window.attempts == attempt, (attempt, final)
    window, final = batches.claim_window(database_url, batch_id, SYMBOL, 1, max_lost=3)
    assert (window, final) == (None, "failed")
    status, attempts, lost, error, leased = _row(database_url, batch_id, 1)
    assert (status, lost, error, leased) == ("failed", 3, "worker lost 3 times", False)
    # the reaper counts a loss the same way: window 2 loses its worker twice by redelivery, then
    # its lease expires once more
    for _ in range(3):
        batches.claim_window(database_url, batch_id, SYMBOL, 2, max_lost=3)
    _expire(database_url, batch_id, 2)
    done = reaper.reap(settings, Sent())
    assert done.failed == [(batch_id, SYMBOL, 2)]
    assert _row(database_url, batch_id, 2)[0:3:2] == ("failed", 3)
    assert _row(database_url, batch_id, 2)[3] == "worker lost 3 times"


def test_a_handover_after_a_database_outage_is_not_a_lost_worker(database_url: str) -> None:
    _, batch_id = _batch(database_url)
    first, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0)
    assert first is not None
    again, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, handover=first.attempts)
    assert again is not None and _row(database_url, batch_id, 0)[2] == 0


def test_missed_reducers_are_enqueued_and_gated_batches_finished(database_url: str) -> None:
    settings, batch_id = _batch(database_url)
    for symbol, idx in batches.unfinished_windows(database_url, batch_id):
        window, _ = batches.claim_window(database_url, batch_id, symbol, idx)
        assert window is not None
        analyze(database_url, window, None)
    # the last task died before enqueueing the reducer: the reaper does it once the symbol is idle
    assert reaper.reap(settings, Sent()).reducers == []  # not idle for lease_s yet
    idle = Settings(database_url=database_url, lease_s=0.0)
    sent = Sent()
    assert reaper.reap(idle, sent).reducers == [(batch_id, SYMBOL)]
    assert sent == [("qtrain.reduce_symbol", (batch_id, SYMBOL))]


def test_one_reaper_at_a_time(database_url: str) -> None:
    from worker.store import db

    settings, _ = _batch(database_url)
    with db.transaction(database_url) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (reaper.LOCK_KEY,))
        assert reaper.reap(settings, Sent()).locked is False
    assert reaper.reap(settings, Sent()).locked is True


def test_a_running_reducer_gets_no_duplicate_and_a_duplicate_never_waits(database_url: str) -> None:
    """With a 60 s lease a reducer may outlive the idle threshold: while it holds its lock the
    reaper sends no copy, and a copy sent anyway (two last windows at once) returns at once."""
    import psycopg2

    from worker.pipeline import reduce
    from worker.store import versions

    settings, batch_id = _batch(database_url)
    for symbol, idx in batches.unfinished_windows(database_url, batch_id):
        window, _ = batches.claim_window(database_url, batch_id, symbol, idx)
        assert window is not None
        analyze(database_url, window, None)
    idle = Settings(database_url=database_url, lease_s=0.0)
    running = psycopg2.connect(database_url)  # stands for the live reducer's transaction
    try:
        key = versions.reducer_lock_key(batch_id, SYMBOL)
        with running.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        assert reaper.reap(idle, Sent()).reducers == []
        made = reduce.make_version(settings, batch_id, SYMBOL)
        assert made.busy and made.version is None
    finally:
        running.close()  # the reducer died: its lock went with its connection
    sent = Sent()
    assert reaper.reap(idle, sent).reducers == [(batch_id, SYMBOL)]
