"""The Celery app: JSON only, acks late, prefetch 1, events on, queues ``analyze`` and ``reduce``.

Pools: prefork (the default: one process per slot) or threads (many LLM calls in flight in one
process, for continuous-batching servers; README "Scaling"). The threads pool ignores the time
limits below, so qtrain bounds every call and wait itself (``worker.runtime.tasks``). Each
process keeps one bounded PostgreSQL pool (``QTRAIN_DB_POOL``) and one httpx client. Starts::

    celery -A worker worker -Q analyze,reduce -c <Ollama parallel slots> --prefetch-multiplier 1
    celery -A worker worker -Q analyze,reduce --pool threads -c 256 --prefetch-multiplier 1

Brokers: Redis (``redis://``) or RabbitMQ (``amqp://``), chosen by ``CELERY_BROKER_URL``.
On RabbitMQ the queues and exchanges are durable, messages persistent, publishes confirmed
(``confirm_publish``: ``qtrain train`` returns once the broker holds every message), and a dead
consumer's unacknowledged messages are redelivered as soon as its connection drops (heartbeat
30 s for a host that vanished without closing its socket). Classic queues, not quorum queues:
on one node a quorum queue replicates nothing, Celery's countdown retries on quorum queues need
its native delayed delivery (a different exchange layout), and the delivery limit a quorum queue
would add is enforced in PostgreSQL for both brokers (a window whose worker is lost
``QTRAIN_MAX_ATTEMPTS`` times ends ``failed``, see ``worker.runtime.reaper``). RabbitMQ closes a channel
whose message stays unacknowledged longer than its ``consumer_timeout`` (30 min by default): give
it at least the reducer's hard limit (docker-compose.rabbitmq.yml sets 2 h). On Redis an
unacknowledged message comes back only after ``VISIBILITY_TIMEOUT_S``; the reaper running inside
every worker takes back a dead worker's windows after ``QTRAIN_LEASE_S`` instead.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    worker_init,
    worker_ready,
)
from kombu import Exchange, Queue

from worker.pipeline import names, schedule
from worker.redact import install_log_redaction
from worker.runtime import housekeeping, reaper
from worker.settings import (
    ANALYZE_QUEUE,
    REDUCE_QUEUE,
    Settings,
    analyze_hard_limit_s,
    analyze_soft_limit_s,
)
from worker.store import db

SETTINGS = Settings.from_env()
db.configure_pool(max_size=SETTINGS.db_pool)

#: Soft time limit of one analyse task: one Ollama call with its in-client retries, plus margin.
ANALYZE_SOFT_LIMIT_S = analyze_soft_limit_s(SETTINGS.llm_timeout_s)
ANALYZE_HARD_LIMIT_S = analyze_hard_limit_s(SETTINGS.llm_timeout_s)
REDUCE_SOFT_LIMIT_S = 1800.0
REDUCE_HARD_LIMIT_S = REDUCE_SOFT_LIMIT_S + 120
#: Redis redelivers an unacknowledged message after this many seconds. Acks-late tasks must
#: finish well before it, or they run twice: 4x the longest task, at least 2 hours.
VISIBILITY_TIMEOUT_S = int(max(7200, 4 * max(ANALYZE_HARD_LIMIT_S, REDUCE_HARD_LIMIT_S)))
#: True when the broker is RabbitMQ (``amqp://``, ``amqps://``, ``pyamqp://``).
AMQP = SETTINGS.broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")
#: Seconds between AMQP heartbeats: RabbitMQ drops (and redelivers for) a silent consumer after 2.
AMQP_HEARTBEAT_S = 30


def broker_options() -> dict[str, object]:
    """The broker-specific Celery settings: Redis's visibility timeout, or RabbitMQ's guarantees."""
    if AMQP:
        return {
            "broker_transport_options": {"confirm_publish": True},
            "broker_heartbeat": AMQP_HEARTBEAT_S,
            # a running task goes on when the connection drops; if its message is redelivered
            # meanwhile, the claim's fencing keeps only one outcome (worker.store.batches.finish_window)
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        }
    # The three places Celery reads the Redis visibility timeout (broker, result backend, and the
    # top-level key the Redis result backend consults for chords/unacked restores).
    return {
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
    }


app = Celery(
    "qtrain",
    broker=SETTINGS.broker_url,
    backend=SETTINGS.result_backend,
    include=["worker.runtime.tasks", "worker.runtime.retrain_task", "worker.runtime.paper_task"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    task_default_delivery_mode="persistent",
    task_queues=(
        Queue(ANALYZE_QUEUE, Exchange(ANALYZE_QUEUE, durable=True), routing_key=ANALYZE_QUEUE, durable=True),
        Queue(REDUCE_QUEUE, Exchange(REDUCE_QUEUE, durable=True), routing_key=REDUCE_QUEUE, durable=True),
    ),
    task_default_queue=ANALYZE_QUEUE,
    task_routes={
        names.ANALYZE_WINDOW: {"queue": ANALYZE_QUEUE, "routing_key": ANALYZE_QUEUE},
        names.REDUCE_SYMBOL: {"queue": REDUCE_QUEUE, "routing_key": REDUCE_QUEUE},
        names.RETRAIN: {"queue": REDUCE_QUEUE, "routing_key": REDUCE_QUEUE},
        names.PAPER_TICK: {"queue": REDUCE_QUEUE, "routing_key": REDUCE_QUEUE},
    },
    **broker_options(),
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_max_memory_per_child=SETTINGS.worker_max_memory_mb * 1024 or None,  # KiB
    worker_hijack_root_logger=False,
    timezone="UTC",
)

app.conf.beat_schedule = schedule.beat_schedule_from_env(SETTINGS.retrain_env)
# Every worker reaps (at start, then every QTRAIN_REAP_INTERVAL_S); one at a time (worker.runtime.reaper).
app.steps["worker"].add(reaper.reaper_step(SETTINGS))
# Memory stays flat over long batches: dead time-limit timers purged, heavy tasks' heap trimmed.
app.steps["worker"].add(housekeeping.timer_purge_step())
task_postrun.connect(housekeeping.after_task, weak=False)
housekeeping.register_inspect()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(logger: object = None, **_: object) -> None:
    """Every record the worker writes has its URL passwords masked (httpx's request lines, task
    failures that quote an LLM URL, the start-up line): a filter on each handler Celery set up."""
    import logging

    handlers = logger.handlers if isinstance(logger, logging.Logger) else []
    install_log_redaction(*handlers, *logging.getLogger().handlers)


@worker_init.connect
def _lower_priority(sender: object = None, **_: object) -> None:
    """Batch work yields the CPU to interactive commands (``QTRAIN_WORKER_NICE``)."""
    housekeeping.lower_priority(SETTINGS.worker_nice)


@worker_ready.connect
def _announce(sender: object = None, **_: object) -> None:
    """Log which Ollama hosts and model this worker will use, and whether they answer."""
    from worker.runtime.startup import log_startup

    log_startup(SETTINGS)
