"""The lease heartbeat against a real PostgreSQL, without Celery: a held claim keeps its window past
its lease, a released or superseded one does not, and a claim past its deadline is let go.

With real worker processes (kill -9 mid-call, a call longer than the lease): ``test_threads_pool``.
"""

from __future__ import annotations

import time

from tests.pipeline_support import query, seed_candles
from worker.pipeline import dispatch, names
from worker.runtime import reaper
from worker.runtime.heartbeat import Heartbeat
from worker.settings import Settings
from worker.store import batches

SYMBOL = "BTC-USDT"
LEASE_S = 1.5


def _batch(database_url: str) -> int:
    seed_candles(database_url, n=150)
    settings = Settings(database_url=database_url)
    req = dispatch.TrainRequest(symbols=(SYMBOL,), analyst="heuristic", seed=1, epochs=1)
    return dispatch.create(settings, req).batch_id


def _lease_left(database_url: str, batch_id: int, idx: int) -> float:
    ((left,),) = query(
        database_url,
        "SELECT extract(epoch FROM lease_until - now()) FROM windows WHERE batch_id = %s AND idx = %s",
        (batch_id, idx),
    )
    return float(left)


def _sent(settings: Settings) -> list[tuple[str, tuple[object, ...]]]:
    sent: list[tuple[str, tuple[object, ...]]] = []
    reaper.reap(settings, lambda name, args: sent.append((name, args)))
    return sent


def test_a_held_claim_outlives_its_lease_and_a_released_one_expires(database_url: str) -> None:
    batch_id = _batch(database_url)
    settings = Settings(database_url=database_url, lease_s=LEASE_S, max_attempts=3)
    held, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=LEASE_S)
    dropped, _ = batches.claim_window(database_url, batch_id, SYMBOL, 1, lease_s=LEASE_S)
    assert held is not None and dropped is not None
    beat = Heartbeat(database_url, LEASE_S)
    try:
        with beat.holding((batch_id, SYMBOL, 0, held.attempts), deadline_s=60):
            time.sleep(3 * LEASE_S)  # two leases and more: only the heartbeat keeps window 0
            assert beat.beats >= 4
            assert _lease_left(database_url, batch_id, 0) > 0
            assert _lease_left(database_url, batch_id, 1) < 0
            requeued = [args for name, args in _sent(settings) if name == names.ANALYZE_WINDOW]
            assert requeued == [(batch_id, SYMBOL, 1)]  # the unheld window only
        time.sleep(LEASE_S + 0.2)  # released: nobody renews it any more
        assert _lease_left(database_url, batch_id, 0) < 0
    finally:
        beat.stop()


def test_a_heartbeat_never_revives_a_claim_taken_over(database_url: str) -> None:
    batch_id = _batch(database_url)
    old, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=LEASE_S)
    assert old is not None
    new, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=0.5)  # a redelivery
    assert new is not None and new.attempts == old.attempts + 1
    beat = Heartbeat(database_url, 60)
    with beat.holding((batch_id, SYMBOL, 0, old.attempts), deadline_s=60):
        assert beat.beat() == 0  # the old attempt's token no longer matches
    assert _lease_left(database_url, batch_id, 0) < 1


def test_a_claim_past_its_deadline_is_let_go(database_url: str) -> None:
    batch_id = _batch(database_url)
    w, _ = batches.claim_window(database_url, batch_id, SYMBOL, 0, lease_s=LEASE_S)
    assert w is not None
    beat = Heartbeat(database_url, 60)
    try:
        with beat.holding((batch_id, SYMBOL, 0, w.attempts), deadline_s=0.2):
            assert beat.beat() == 1
            assert _lease_left(database_url, batch_id, 0) > 30
            time.sleep(0.3)  # a thread stuck past the task's hard limit
            assert beat.held() == []
            assert beat.beat() == 0
    finally:
        beat.stop()


def test_renewing_many_claims_is_one_statement(database_url: str) -> None:
    batch_id = _batch(database_url)
    claims = []
    for idx in range(4):
        w, _ = batches.claim_window(database_url, batch_id, SYMBOL, idx, lease_s=1)
        assert w is not None
        claims.append((batch_id, SYMBOL, idx, w.attempts))
    from worker.store import db

    with db.transaction(database_url) as cur:
        assert batches.renew_leases(cur, [*claims, (batch_id, SYMBOL, 99, 1)], 90) == 4
    assert all(_lease_left(database_url, batch_id, i) > 80 for i in range(4))
