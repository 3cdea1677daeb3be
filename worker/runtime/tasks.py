"""Celery tasks, kept thin: decode ids, call the step, record the outcome, maybe start the reducer.

Completion: no chord. Each analyse task, once its window is final, counts the symbol's unfinished
windows in PostgreSQL and enqueues ``qtrain.reduce_symbol`` when none is left. A chord on the
Redis backend can fire its callback early when a header task is redelivered (celery issues 4207,
6358); the PostgreSQL count cannot, because it reads committed window states. Two tasks finishing
at once may both enqueue the reducer: it is idempotent (advisory lock + one version per batch).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from worker.errors import PermanentError, ServiceUnavailable, TemporaryError
from worker.pipeline import completion, names, reduce
from worker.pipeline.analyze import HEURISTIC, analyze
from worker.redact import redact_text
from worker.retry import backoff_s
from worker.runtime.app import (
    ANALYZE_HARD_LIMIT_S,
    ANALYZE_SOFT_LIMIT_S,
    REDUCE_HARD_LIMIT_S,
    REDUCE_SOFT_LIMIT_S,
    SETTINGS,
    app,
)
from worker.runtime.heartbeat import Heartbeat
from worker.settings import MAX_RETRY_DELAY_S
from worker.store import batches

log = logging.getLogger("qtrain.tasks")
_clients: dict[tuple[int, str], Any] = {}
#: Renews the leases of the windows this process is analysing (one thread per process, lazily).
HEARTBEAT = Heartbeat(SETTINGS.database_url, SETTINGS.lease_s)


def llm_client(model: str) -> Any:
    """This process's LLM client for QTRAIN_LLM_API and ``model`` (the batch's, as stored), one httpx
    connection pool per process and model, reused; a batch's ``--model`` is the model it is sent."""
    from worker.clients.factory import chat_client

    key = (os.getpid(), model)
    if key not in _clients:
        if any(k[0] != key[0] for k in _clients):
            _clients.clear()  # a forked child: the parent's pools are not ours
        _clients[key] = chat_client(replace(SETTINGS, llm_model=model))
    return _clients[key]


#: Jitter of the retry delays (a process-wide generator: delays need spread, not reproducibility).
_RNG = random.Random()


def retry_delay(attempt: int, base: float) -> float:
    """Delay before a window's next attempt: ``worker.retry.backoff_s``, at most ``MAX_RETRY_DELAY_S``."""
    return backoff_s(attempt, base_s=base, cap_s=MAX_RETRY_DELAY_S, rng=_RNG)


def maybe_reduce(batch_id: int, symbol: str) -> bool:
    """Enqueue the symbol's reducer when none of its windows is pending or running; in a pooled
    batch (``reduce.pool_peers``) every symbol's, once none of the batch's windows is left."""
    url = SETTINGS.database_url
    if not batches.reducer_due(url, batch_id, (symbol,)):
        return False
    loaded = batches.load_batch(url, batch_id)
    peers = reduce.pool_peers(loaded[0]) if loaded is not None else ()
    if peers and not batches.reducer_due(url, batch_id, peers):
        return False  # the last symbol to finish enqueues them all
    for s in peers or (symbol,):
        reduce_symbol.apply_async((batch_id, s))
    return True


@app.task(
    name=names.ANALYZE_WINDOW,
    bind=True,
    ignore_result=True,  # nobody reads it from the backend (Flower shows it from the task events)
    max_retries=None,
    soft_time_limit=ANALYZE_SOFT_LIMIT_S,
    time_limit=ANALYZE_HARD_LIMIT_S,
)
def analyze_window(
    self: Any, batch_id: int, symbol: str, idx: int, handover: int | None = None
) -> dict[str, Any]:
    """Analyse window ``idx`` of ``symbol`` in ``batch_id``; the result is a tiny status dict.

    PostgreSQL unreachable (a restart) while claiming or recording the outcome: the task is retried
    later, handing over its attempt number (``handover``) so that the retry's claim does not count
    the window's still-``running`` state as a lost worker. The window is then still ``pending`` or
    ``running``, both claimable, so it is never left behind by a task that gave up; and a window
    already final only gets its reducer check redone.
    """
    claimed: list[int] = []
    try:
        return _analyze_window(self, batch_id, symbol, idx, handover, claimed)
    except ServiceUnavailable as exc:
        after = claimed[-1] if claimed else handover
        raise self.retry(
            exc=exc, countdown=retry_delay(self.request.retries + 1, 2.0), kwargs={"handover": after}
        ) from exc


@dataclass(frozen=True)
class Outcome:
    """What a failed attempt leaves: the window's next status, the reason recorded, and the delay
    before the retry (``pending`` only)."""

    status: str
    reason: str
    delay: float | None = None


def failed_attempt(exc: BaseException, attempt: int, max_attempts: int, base_s: float) -> Outcome:
    """A temporary failure (or the soft time limit) retries until ``max_attempts``; a permanent
    one, and any other exception (a bug, recorded as an internal error), fails the window now."""
    if isinstance(exc, (TemporaryError, SoftTimeLimitExceeded)):
        reason = redact_text(str(exc)) or type(exc).__name__
        if attempt < max_attempts:
            return Outcome("pending", f"attempt {attempt} failed: {reason}", retry_delay(attempt, base_s))
        return Outcome("failed", f"gave up after {attempt} attempts: {reason}")
    if isinstance(exc, PermanentError):
        return Outcome("failed", redact_text(str(exc)))
    return Outcome("failed", f"internal error: {redact_text(repr(exc))}")


SUPERSEDED = {"status": "superseded"}
"""What a copy whose claim was taken over returns: it wrote nothing (see ``batches.finish_window``)."""


def _analyze_window(
    self: Any, batch_id: int, symbol: str, idx: int, handover: int | None, claimed: list[int]
) -> dict[str, Any]:
    url = SETTINGS.database_url
    window, final = batches.claim_window(
        url,
        batch_id,
        symbol,
        idx,
        lease_s=SETTINGS.lease_s,
        max_lost=SETTINGS.max_attempts,
        handover=handover,
    )
    if window is None:
        if final is not None:
            maybe_reduce(batch_id, symbol)  # a redelivery (or a poison window): the reducer may be due
        return {"status": final or "missing", "redelivered": final is not None}
    claimed.append(window.attempts)
    attempt = window.attempts
    try:
        client = None if window.analyst == HEURISTIC else llm_client(window.model)
        with HEARTBEAT.holding((batch_id, symbol, idx, attempt), ANALYZE_HARD_LIMIT_S):
            status = analyze(url, window, client)
    except batches.Superseded:
        return SUPERSEDED
    except Exception as exc:  # every failure ends in a recorded state; a bug must not leave the batch stuck
        if not isinstance(exc, (TemporaryError, PermanentError, SoftTimeLimitExceeded)):
            log.exception("analyse %s/%s/%s crashed", batch_id, symbol, idx)
        out = failed_attempt(exc, attempt, SETTINGS.max_attempts, SETTINGS.retry_base_s)
        lease = {} if out.delay is None else {"lease_s": out.delay + SETTINGS.lease_s}
        recorded = batches.set_window_status(
            url, batch_id, symbol, idx, out.status, out.reason, attempt=attempt, **lease
        )
        if not recorded:
            return SUPERSEDED
        if out.delay is not None:
            raise self.retry(countdown=out.delay, kwargs={}) from exc
        status = out.status
    maybe_reduce(batch_id, symbol)
    return {"status": status}


@app.task(
    name=names.REDUCE_SYMBOL,
    bind=True,
    max_retries=5,
    soft_time_limit=REDUCE_SOFT_LIMIT_S,
    time_limit=REDUCE_HARD_LIMIT_S,
)
def reduce_symbol(self: Any, batch_id: int, symbol: str) -> dict[str, Any]:
    """Reduce, gate and export ``symbol``'s version, then maybe mark the batch done (see
    ``worker.pipeline.completion`` for the order and why)."""
    url = SETTINGS.database_url
    try:
        return completion.complete_symbol(SETTINGS, batch_id, symbol)
    except TemporaryError as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=retry_delay(self.request.retries + 1, 5.0)) from exc
        batches.fail_batch(url, batch_id, f"reducer {symbol}: {exc}")
        raise
    except Exception as exc:  # recorded, so that `--wait` and `status` stop waiting for it
        log.exception("reduce %s/%s crashed", batch_id, symbol)
        batches.fail_batch(url, batch_id, f"reducer {symbol} failed: {exc!r}")
        raise


@app.task(name=names.PING)
def ping() -> str:
    """A no-op health check (``celery -A worker call qtrain.ping``); also the benchmark baseline."""
    return "pong"
