"""Self-healing batches: leases, the reaper, poison windows.

A claimed window carries a lease (``QTRAIN_LEASE_S``, default 60 s), renewed every third of it by
its worker's heartbeat while the task runs (``worker.runtime.heartbeat``), so a long LLM call
keeps its window and a dead worker's windows come back after the lease plus the reaper's interval
(about two minutes at the defaults). When a whole worker dies (power cut, OOM killer, ``kill -9`` of the main
process), its windows stay ``running`` and, on Redis, their unacknowledged messages come back only
after the visibility timeout (2 h or more). The reaper takes such windows back on its own:

- a window ``running`` (or ``pending`` with a delayed retry) whose lease expired goes back to
  ``pending`` and is re-enqueued; a ``running`` one counts one more ``lost`` worker, and at
  ``QTRAIN_MAX_ATTEMPTS`` losses it ends ``failed`` with "worker lost N times" (a poison window
  whose task kills its worker is not retried forever);
- a symbol whose windows are all final but whose reducer never ran (its last task died between
  the window and the reducer) gets its reducer enqueued, unless a live reducer of it holds its
  lock (a long one is not sent a duplicate every run); a batch whose symbols are all gated but
  which is still ``running`` is marked done.

A late original that finishes after its window was reaped changes nothing: the claim's attempt
number fences every write (``batches.finish_window``), and the analysis it would have stored is
rolled back with it.

Where it runs: inside every worker, on the worker's own timer (at start, then every
``QTRAIN_REAP_INTERVAL_S``, default 60 s), with a PostgreSQL advisory lock so that one worker
reaps at a time. Why not a beat entry: beat is a separate process that a homelab user has to
remember to run (and exactly one of it); a worker is what is always running when there is work to
recover, and a deployment with any live worker heals itself. The advisory lock makes N workers
as safe as one, and the lock dies with its connection, so a reaper killed mid-run blocks nobody.
The reaper re-enqueues inside its transaction: a worker that claims a re-enqueued window before
the commit waits on the row lock and then sees the committed ``pending`` state; a reaper that dies
before its commit leaves the lease expired, so the next run re-enqueues again (harmless: claims
are fenced, duplicates end as no-ops).

On RabbitMQ the broker itself redelivers a dead consumer's unacknowledged messages as soon as its
connection drops; the redelivered claim finds the window still ``running`` and counts the loss,
so the same poison limit applies, and the reaper only covers what the broker cannot see (the
reducer that never ran, a power cut detected by heartbeat only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.pipeline import names
from worker.settings import Settings
from worker.store import batches, db, versions

log = logging.getLogger("qtrain.reaper")

LOCK_KEY = "qtrain.reaper"

Send = Callable[[str, tuple[Any, ...]], None]
"""How the reaper enqueues a task: ``send(task name, args)`` (the Celery app's ``send_task``)."""


@dataclass(frozen=True)
class Reaped:
    """What one reaper run did; ``locked`` False when another worker was reaping."""

    locked: bool = True
    requeued: list[tuple[int, str, int]] = field(default_factory=list)
    failed: list[tuple[int, str, int]] = field(default_factory=list)
    reducers: list[tuple[int, str]] = field(default_factory=list)
    batches_done: list[int] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        """True when this run changed something."""
        return bool(self.requeued or self.failed or self.reducers or self.batches_done)


def reap(settings: Settings, send: Send) -> Reaped:
    """One reaper run: re-enqueue windows whose lease expired, fail poison windows, enqueue missed
    reducers, finish fully gated batches. Skipped (``locked=False``) while another worker reaps."""
    conn = db.connect(settings.database_url)  # not pooled: the worker's main process forks children
    try:
        with conn, conn.cursor() as cur:
            if not db.try_advisory_xact_lock(cur, LOCK_KEY):
                return Reaped(locked=False)
            rows = batches.reap_expired(cur, settings.max_attempts)
            requeued = sorted((b, s, i) for b, s, i, st in rows if st == "pending")
            failed = sorted((b, s, i) for b, s, i, st in rows if st == "failed")
            for args in requeued:
                send(names.ANALYZE_WINDOW, args)
            touched = {(b, s) for b, s, _ in failed}
            due = [
                (b, s)
                for b, s, idle in batches.unreduced_symbols(cur)
                if (b, s) in touched or idle >= settings.lease_s
            ]
            reducers = sorted(k for k in due if not versions.reducer_running(cur, *k))
            for args2 in reducers:
                send(names.REDUCE_SYMBOL, args2)
            gated = batches.finish_gated_batches(cur)
    finally:
        conn.close()
    return Reaped(requeued=requeued, failed=failed, reducers=reducers, batches_done=gated)


def reap_and_log(settings: Settings, send: Send) -> Reaped | None:
    """``reap`` for the worker's timer: logs one line per kind of action; never raises."""
    try:
        done = reap(settings, send)
    except Exception as exc:  # the database may be away: the next tick tries again
        log.warning("reaper: skipped this run (%s: %s)", type(exc).__name__, str(exc).splitlines()[0:1])
        return None
    if done.requeued:
        log.warning(
            "reaper: re-enqueued %d window(s) whose worker was lost (lease expired): %s",
            len(done.requeued),
            _names(done.requeued),
        )
    if done.failed:
        log.warning(
            "reaper: %d poison window(s) failed after losing %d workers: %s",
            len(done.failed),
            settings.max_attempts,
            _names(done.failed),
        )
    if done.reducers:
        log.warning(
            "reaper: enqueued %d reducer(s) that never ran: %s",
            len(done.reducers),
            ", ".join(f"{b}/{s}" for b, s in done.reducers),
        )
    if done.batches_done:
        log.warning("reaper: marked batch(es) %s done (every symbol gated)", done.batches_done)
    return done


def _names(windows: list[tuple[int, str, int]]) -> str:
    shown = ", ".join(f"{b}/{s}/{i}" for b, s, i in windows[:10])
    return shown + (f" (+{len(windows) - 10} more)" if len(windows) > 10 else "")


def reaper_step(settings: Settings) -> type:
    """A Celery worker bootstep running ``reap`` on the worker's timer: shortly after start, then
    every ``settings.reap_interval_s`` (``app.steps['worker'].add(reaper_step(SETTINGS))``)."""
    from celery import bootsteps

    class Reaper(bootsteps.StartStopStep):
        """Runs the reaper inside this worker (see ``worker.runtime.reaper``)."""

        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.trefs: list[Any] = []

        def start(self, parent: Any) -> None:
            app = parent.app

            def send(name: str, args: tuple[Any, ...]) -> None:
                app.send_task(name, args)

            def tick() -> None:
                reap_and_log(settings, send)

            self.trefs = [
                parent.timer.call_after(1.0, tick),
                parent.timer.call_repeatedly(settings.reap_interval_s, tick),
            ]
            log.info("reaper: every %ss, lease %ss", settings.reap_interval_s, settings.lease_s)

        def stop(self, parent: Any) -> None:
            for tref in self.trefs:
                tref.cancel()
            self.trefs = []

    return Reaper
