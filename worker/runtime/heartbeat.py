"""Lease heartbeat: a live worker keeps its windows, a dead one's come back within about a minute.

A claim gives its window a short lease (``QTRAIN_LEASE_S``, default 60 s). While the task runs
(its LLM call may take minutes), one thread per worker process renews the leases of every window
the process holds, every third of the lease, in one UPDATE (``batches.renew_leases``): 256 calls
in flight cost one statement every 20 s. When the process dies (``kill -9``, OOM, power cut) the
renewals stop, the lease expires and any worker's reaper takes the window back (lease + reaper
interval, about two minutes at the defaults, instead of the 18 minutes a lease covering the longest
possible task used to take).

Bounded: a claim is renewed only until its own deadline (the analyse task's hard limit), so a
thread stuck for good (the threads pool enforces no time limit) loses its window like a dead
worker, and its late write is fenced off by the claim's attempt number.

The heartbeat opens its own short-lived connection for each beat (not one of the pool's): a pool
busy with hundreds of tasks never delays it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from worker.store import batches, db

log = logging.getLogger("qtrain.heartbeat")


class Heartbeat:
    """The claims this process holds and the thread that renews their leases."""

    def __init__(self, database_url: str, lease_s: float) -> None:
        self.database_url = database_url
        self.lease_s = float(lease_s)
        self.interval_s = self.lease_s / 3
        self._held: dict[batches.WindowClaim, float] = {}  # claim -> monotonic deadline
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = -1
        self._thread: threading.Thread | None = None
        self.beats = 0

    def held(self) -> list[batches.WindowClaim]:
        """The claims whose deadline has not passed (what the next beat renews)."""
        now = time.monotonic()
        with self._lock:
            for claim in [c for c, d in self._held.items() if d <= now]:
                del self._held[claim]
                log.warning("heartbeat: %s/%s/%s outlived its deadline; its lease will expire", *claim[:3])
            return list(self._held)

    @contextmanager
    def holding(self, claim: batches.WindowClaim, deadline_s: float) -> Iterator[None]:
        """Keep ``claim``'s lease renewed for the duration of the block, ``deadline_s`` at most."""
        self._ensure_thread()
        with self._lock:
            self._held[claim] = time.monotonic() + deadline_s
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(claim, None)

    def beat(self) -> int:
        """Renew every held claim's lease now; how many rows were renewed."""
        claims = self.held()
        if not claims:
            return 0
        conn = db.connect(self.database_url)
        try:
            with conn, conn.cursor() as cur:
                n = batches.renew_leases(cur, claims, self.lease_s)
        finally:
            conn.close()
        self.beats += 1
        return n

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == pid and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != pid:  # a forked pool child: the parent's claims and thread are not ours
                self._held.clear()
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name="qtrain-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # the database may be away: the next beat tries again
                log.warning("heartbeat: renewal skipped (%s: %s)", type(exc).__name__, str(exc)[:200])

    def stop(self) -> None:
        """Stop the thread (tests)."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self._wake = threading.Event()
