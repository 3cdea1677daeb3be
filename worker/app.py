"""The Celery app: JSON only, acks late, prefetch 1, events on, queues ``analyze`` and ``reduce``.

Pool: prefork (the default). Time limits only work there (the threads pool ignores them), and
each process keeps its own PostgreSQL pool and httpx client. Recommended start::

    celery -A worker worker -Q analyze,reduce -c <Ollama parallel slots> --prefetch-multiplier 1
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

from worker import schedule
from worker.settings import Settings

SETTINGS = Settings.from_env()

#: Soft time limit of one analyse task: one Ollama call with its in-client retries, plus margin.
ANALYZE_SOFT_LIMIT_S = SETTINGS.ollama_timeout_s * 3 + 60
ANALYZE_HARD_LIMIT_S = ANALYZE_SOFT_LIMIT_S + 60
REDUCE_SOFT_LIMIT_S = 1800.0
REDUCE_HARD_LIMIT_S = REDUCE_SOFT_LIMIT_S + 120
#: Redis redelivers an unacknowledged message after this many seconds. Acks-late tasks must
#: finish well before it, or they run twice: 4x the longest task, at least 2 hours.
VISIBILITY_TIMEOUT_S = int(max(7200, 4 * max(ANALYZE_HARD_LIMIT_S, REDUCE_HARD_LIMIT_S)))

app = Celery(
    "qtrain",
    broker=SETTINGS.broker_url,
    backend=SETTINGS.result_backend,
    include=["worker.tasks", "worker.retrain_task"],
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
    task_queues=(
        Queue("analyze", Exchange("analyze"), routing_key="analyze"),
        Queue("reduce", Exchange("reduce"), routing_key="reduce"),
    ),
    task_default_queue="analyze",
    task_routes={
        "qtrain.analyze_window": {"queue": "analyze", "routing_key": "analyze"},
        "qtrain.reduce_symbol": {"queue": "reduce", "routing_key": "reduce"},
        "qtrain.retrain": {"queue": "reduce", "routing_key": "reduce"},
    },
    # The three places Celery reads the Redis visibility timeout (broker, result backend, and the
    # top-level key the Redis result backend consults for chords/unacked restores).
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    visibility_timeout=VISIBILITY_TIMEOUT_S,
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
)

app.conf.beat_schedule = schedule.beat_schedule_from_env(SETTINGS.retrain_env)


@worker_ready.connect
def _announce(sender: object = None, **_: object) -> None:
    """Log which Ollama hosts and model this worker will use, and whether they answer."""
    from worker.startup import log_startup

    log_startup(SETTINGS)
