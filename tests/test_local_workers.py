"""``worker.cluster.local`` pings the broker it is given, whatever the shell's ``CELERY_BROKER_URL``
says (Celery lets that variable override an app's configured broker; the demo and the tests pass
their own). Real Redis and a real worker process."""

from __future__ import annotations

import pytest

from tests.pipeline_support import pipeline_env
from worker.cluster.local import running_workers, start_workers

pytestmark = pytest.mark.integration

NOWHERE = "redis://127.0.0.1:9/0"


def test_start_and_count_workers_on_the_given_broker(database_url, redis_url, tmp_path, monkeypatch) -> None:
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    monkeypatch.setenv("CELERY_BROKER_URL", NOWHERE)  # the caller's shell points elsewhere
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, ready_timeout=30):
        assert running_workers(env["CELERY_BROKER_URL"], timeout=2.0) == 1
        assert running_workers(NOWHERE, timeout=0.5) == 0
