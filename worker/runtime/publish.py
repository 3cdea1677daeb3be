"""Sending a batch's windows to the workers: one analyse task per window over one connection.

The Celery half of ``qtrain train`` / ``resume`` / the retrain tick, and the one way they send:
planning (``worker.pipeline.dispatch``) decides what to send and takes the sender as its
``enqueue`` argument (it sits below the Celery runtime, so it cannot name this module; tests hand
it stand-ins); ``enqueue_batch`` and ``resume`` here are those calls with ``enqueue`` bound, so a
command never wires the two together itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from worker.pipeline import dispatch
from worker.pipeline.dispatch import PUBLISH_CHUNK, Progress, task_argsrepr
from worker.runtime.app import app
from worker.runtime.tasks import analyze_window, maybe_reduce
from worker.settings import ANALYZE_QUEUE, Settings


def enqueue(
    settings: Settings,
    batch_id: int,
    windows: Sequence[tuple[str, int]],
    symbols: Sequence[str],
    *,
    progress: Progress | None = None,
) -> int:
    """Send one analyse task per window over one broker connection, in pipelined chunks; reduce
    symbols with none left.

    Chunks of ``PUBLISH_CHUNK`` messages go out as one Redis pipeline (kombu's ``Producer.batch``;
    other transports publish one by one). The queue is declared once per call rather than per
    message, and the arguments' repr (shown by Flower) is formatted directly: Celery's
    ``saferepr`` and per-message declare were a fifth of the publishing time. Messages are sent
    with ``ignore_result``: nothing reads an analyse task's return value (PostgreSQL has the
    outcome), so no result key per window is kept in Redis and the result backend needs no
    subscribe/unsubscribe round trip per message.
    """
    total = len(windows)
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(app.amqp.queues[ANALYZE_QUEUE])  # once, not per message (declare=[])
        batch = getattr(producer, "batch", None)  # kombu >= 5.7
        for lo in range(0, total, PUBLISH_CHUNK):
            chunk = windows[lo : lo + PUBLISH_CHUNK]
            with batch(max_size=2 * PUBLISH_CHUNK + 8) if batch is not None else nullcontext():
                for symbol, idx in chunk:
                    analyze_window.apply_async(
                        (batch_id, symbol, idx),
                        producer=producer,
                        ignore_result=True,
                        declare=[],
                        argsrepr=task_argsrepr(batch_id, symbol, idx),
                        kwargsrepr="{}",
                    )
            if progress is not None:
                progress(lo + len(chunk), total)
    pending = {s for s, _ in windows}
    for symbol in symbols:
        if symbol not in pending:
            maybe_reduce(batch_id, symbol)  # nothing to analyse (or all final): reduce now
    return total


def enqueue_batch(
    settings: Settings, batch_id: int, symbols: Sequence[str], *, progress: Progress | None = None
) -> int:
    """Enqueue every window of a batch that is not final (``dispatch.enqueue_batch`` sending with
    ``enqueue``); how many were sent. What ``qtrain train`` and ``demo`` call."""
    return dispatch.enqueue_batch(settings, batch_id, symbols, enqueue=enqueue, progress=progress)


def resume(settings: Settings, batch_id: int) -> dispatch.Resumed:
    """Re-enqueue what is not finished (``dispatch.resume`` sending with ``enqueue``): ``qtrain resume``."""
    return dispatch.resume(settings, batch_id, enqueue=enqueue)
