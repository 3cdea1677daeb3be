"""Whether anything is happening: does a worker consume the batch's queue, and how fast has this
run progressed. How ``qtrain status`` and ``train --wait`` say, within seconds, that nothing is
happening (instead of ``0/30 ETA ?`` forever), and why they show an ETA only after progress.

Two ways, both asked of the broker the batch was sent to:

- RabbitMQ (``amqp://``): the queue's consumer count, from a passive ``queue.declare``: one round
  trip, exact, no waiting (a queue not declared yet has no consumer).
- Redis: Redis has no consumers to count (a worker's ``BRPOP`` shows only while it blocks), so the
  workers are asked through Celery's broadcast (``inspect active_queues``, the command Flower uses):
  the first reply ends the wait when it names the queue (tens of milliseconds); with no worker
  the answer is the silence of ``timeout`` seconds. The RabbitMQ path falls back to this one.

Measured on this machine (Redis, one worker, broker connection open): first reply 16-70 ms; no
worker: the full ``CONSUMER_TIMEOUT_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.settings import ANALYZE_QUEUE, REDUCE_QUEUE

#: Seconds a broadcast waits for a worker's reply. A live worker answers in tens of milliseconds
#: (its main process answers even while every pool slot is busy); a loaded machine gets slack.
CONSUMER_TIMEOUT_S = 2.0
#: The command that starts a worker for a batch (README, DESIGN).
START_WORKER = f"celery -A worker worker -Q {ANALYZE_QUEUE},{REDUCE_QUEUE}"


def consumers(
    broker_url: str, queue: str = ANALYZE_QUEUE, *, timeout: float = CONSUMER_TIMEOUT_S
) -> int | None:
    """How many workers consume ``queue`` on ``broker_url`` (at least 1 when any does; 0 when none
    does); None when the broker itself cannot be asked."""
    if broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp"):
        count = _amqp_consumers(broker_url, queue)
        if count is not None:
            return count
    return _broadcast_consumers(broker_url, queue, timeout)


def no_worker_line(broker_url: str, queue: str = ANALYZE_QUEUE) -> str:
    """The one line that says nothing is happening and what to run."""
    from worker.redact import redact

    return (
        f"no worker consumes the queue {queue!r} on {redact(broker_url)}: nothing is happening;"
        f" start one with `{START_WORKER}`"
    )


def _amqp_consumers(broker_url: str, queue: str) -> int | None:
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=3) as conn:
            channel = conn.channel()
            try:
                _, _, count = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors:  # 404 NOT_FOUND: never declared, so nobody consumes it
                return 0
            finally:
                _close(channel)
            return int(count)
    except Exception:  # unreachable broker, refused login, ...: ask the workers instead
        return None


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel closed by the broker's 404 is already gone
        pass


def _broadcast_consumers(broker_url: str, queue: str, timeout: float) -> int | None:
    from worker.cluster.local import _probe

    probe = _probe(broker_url)
    try:
        first = probe.control.inspect(timeout=timeout, limit=1).active_queues()
        if first is None:
            return 0
        if _consuming(first, queue):
            return _consuming(first, queue)
        every = probe.control.inspect(timeout=timeout).active_queues() or {}
        return _consuming(every, queue)
    except Exception:  # the broker cannot be reached: the caller says so its own way
        return None
    finally:
        probe.close()


def _consuming(replies: dict[str, Any], queue: str) -> int:
    """Workers among ``replies`` (``{worker: [queue info, ...]}``) that consume ``queue``."""
    return sum(
        1
        for queues in replies.values()
        if isinstance(queues, list) and any(isinstance(q, dict) and q.get("name") == queue for q in queues)
    )


#: Seconds between two asks while no window finishes (``Watch``): a worker that died mid-batch is
#: noticed within this plus ``CONSUMER_TIMEOUT_S``.
RECHECK_S = 10.0


@dataclass
class Watch:
    """What ``train --wait`` tracks between polls: whether a worker consumes the queue the batch
    waits on (asked at the first poll, then whenever ``RECHECK_S`` passed without a finished
    window), and the rate of this run (windows finished since the watch began), its only ETA."""

    broker_url: str
    ask: Callable[[str, str], int | None] = field(default=lambda url, queue: consumers(url, queue))
    clock: Callable[[], float] = time.monotonic
    _start: tuple[float, int] | None = None
    _last_progress: tuple[float, int] | None = None
    _last_ask: float | None = None
    _idle: bool = False

    def observe(self, finished: int, total: int) -> str | None:
        """Record a poll's count; the no-worker line when that state begins (else None)."""
        now = self.clock()
        if self._start is None:
            self._start = (now, finished)
        if self._last_progress is None or finished > self._last_progress[1]:
            self._last_progress = (now, finished)
            if self._last_ask is not None and finished > self._start[1]:
                self._idle = False  # windows finish: someone consumes
                return None
        due = self._last_ask is None or (now - max(self._last_ask, self._last_progress[0]) >= RECHECK_S)
        if not due:
            return None
        self._last_ask = now
        queue = ANALYZE_QUEUE if finished < total else REDUCE_QUEUE
        count = self.ask(self.broker_url, queue)
        idle, was = count == 0, self._idle
        self._idle = idle
        return no_worker_line(self.broker_url, queue) if idle and not was else None

    @property
    def idle(self) -> bool:
        """Whether the last ask found no worker on the queue."""
        return self._idle

    def rate(self, finished: int) -> float | None:
        """Windows per second finished in this run; None before the first one."""
        if self._start is None or finished <= self._start[1]:
            return None
        elapsed = self.clock() - self._start[0]
        return (finished - self._start[1]) / elapsed if elapsed > 0 else None

    def eta_s(self, finished: int, total: int) -> float | None:
        """Seconds left at this run's rate: None before any progress in this run, or while idle."""
        rate = self.rate(finished)
        if rate is None or self._idle:
            return None
        return max(0.0, (total - finished) / rate)
