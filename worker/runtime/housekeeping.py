"""Keeping a long-running worker's memory flat (issue 14).

Two growths were measured on a 30,000-window batch (2 workers x 2 slots, heuristic analyst) and
both are fixed here, not hidden behind recycling:

- **The main process** grew about 600 bytes per task, for as long as the task's soft time limit
  (960 s by default): prefork arms a timer for each task's time limit and, when the task ends,
  only marks that timer cancelled; kombu's timer keeps cancelled entries in its heap until their
  time comes (celery/celery#1129, #5200). At 50 tasks/s a worker held about 50,000 dead entries.
  ``purge_cancelled`` drops them from the heap every ``PURGE_INTERVAL_S`` on the worker's own
  timer (the ``TimerPurge`` bootstep), so the heap holds only live time limits.
- **A pool child** kept the high-water mark of every reducer it ran (numpy buffers freed to
  glibc's heap but not to the system): ``release_memory`` asks glibc to give free pages back
  (``malloc_trim``) after each heavy task (reducer, retrain, paper tick). A no-op where the C
  library has no ``malloc_trim`` (musl, macOS).

``QTRAIN_WORKER_MAX_MEMORY_MB`` (default 512; Celery's ``worker_max_memory_per_child``) is the
backstop for whatever a future task might leak: a child above it is replaced after its current
task. No benchmark run reached it (at 100,000 windows the four children ended at 558 MB together).

CPU, not memory: a worker adds ``QTRAIN_WORKER_NICE`` (default 10) to its niceness at start
(``lower_priority``), inherited by its pool children. Analyses are batch work; when they saturate
the CPU (a fast analyst, or Ollama on the same host), ``qtrain status`` and other interactive
commands still get the CPU at once: ``qtrain status`` took 0.39 s with 2 x 2 busy workers at
nice 0 on 2 cores, 0.20 s at nice 10, for the same batch throughput (85-87 windows/s). Ollama
itself is a separate process and keeps its own priority.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import logging
import os
from typing import Any

from worker.pipeline import names

log = logging.getLogger("qtrain.housekeeping")

#: Seconds between purges of cancelled timer entries in a worker's main process.
PURGE_INTERVAL_S = 30.0
#: Tasks after which a pool child hands its free heap pages back to the system.
HEAVY_TASKS = frozenset({names.REDUCE_SYMBOL, names.RETRAIN, names.PAPER_TICK})


def purge_cancelled(timer: Any) -> int:
    """Drop cancelled entries from a kombu timer's heap, in place; return how many were dropped.

    The heap is a list of ``scheduled(eta, priority, entry)``; the same list object is kept (the
    timer's iterator holds a reference to it) and re-heapified.
    """
    queue: list[Any] = timer._queue
    live = [item for item in queue if not item.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        heapq.heapify(live)
        queue[:] = live
    return dropped


def _load_malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> bool:
    """Give the C heap's free pages back to the system; True when glibc's ``malloc_trim`` ran."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def lower_priority(nice: int) -> int:
    """Add ``nice`` to this process's niceness (children forked later inherit it); the new value."""
    return os.nice(nice) if nice > 0 else os.nice(0)


def after_task(sender: Any = None, **_: Any) -> None:
    """``task_postrun`` handler (runs in the pool child): release memory after a heavy task."""
    if getattr(sender, "name", None) in HEAVY_TASKS:
        release_memory()


def _rss_bytes() -> int | None:
    """This process's resident bytes (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def timer_stats(timer: Any) -> dict[str, Any]:
    """Entries in a worker timer's heap, how many are cancelled, and this process's RSS and nice."""
    queue = getattr(timer, "_queue", [])
    cancelled = sum(1 for item in queue if item.entry.canceled)
    return {
        "timer_entries": len(queue),
        "timer_cancelled": cancelled,
        "rss_bytes": _rss_bytes(),
        "nice": os.nice(0),
    }


def register_inspect() -> None:
    """Add ``celery -A worker inspect qtrain_housekeeping``: ``timer_stats`` of each worker's main
    process, to check on a running worker that its timer heap and memory stay flat."""
    from celery.worker.control import inspect_command

    @inspect_command()
    def qtrain_housekeeping(state: Any) -> dict[str, Any]:
        return timer_stats(state.consumer.timer)


def timer_purge_step(interval_s: float = PURGE_INTERVAL_S) -> type:
    """A worker bootstep purging cancelled timer entries every ``interval_s`` seconds."""
    from celery import bootsteps

    class TimerPurge(bootsteps.StartStopStep):
        """Keeps the worker timer's heap to live entries (see ``worker.runtime.housekeeping``)."""

        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            timer = parent.timer

            def tick() -> None:
                dropped = purge_cancelled(timer)
                if dropped:
                    log.debug("timer purge: %d cancelled entries dropped", dropped)

            if hasattr(timer, "_queue"):  # kombu's event-loop timer (prefork); not the threads pool
                self.tref = timer.call_repeatedly(interval_s, tick)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

    return TimerPurge
