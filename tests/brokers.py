"""Both brokers for the integration tests: Redis (the session's db pair) or RabbitMQ (a vhost per test).

``broker`` is a fixture parametrised over ``redis`` and ``amqp``; a test module imports it
(``from tests.brokers import broker_fixture, rabbitmq_url_fixture``) and each test that asks
for ``broker`` runs on both. On RabbitMQ every
test gets a vhost of its own (``rabbitmqctl add_vhost``, deleted afterwards with its queues): two
test sessions on one machine never share a queue, and a test never sees the previous test's
messages. Purging instead would leave the pidbox exchanges and a killed worker's unacknowledged
messages shared between tests. ``rabbitmqctl`` needs root (CI runs as root); without it, or
without RabbitMQ on 127.0.0.1:5672, the amqp cases skip (fail under ``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
BROKERS = ("redis", "amqp")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl ARGS`` (fails the test with its output on error)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    proc = subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {proc.stdout}{proc.stderr}")


def _can_manage_vhosts() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("rabbitmqctl") or os.path.exists("/usr/sbin/rabbitmqctl"))


def _unavailable(msg: str) -> None:
    if _ci():
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(name="rabbitmq_url")
def rabbitmq_url_fixture() -> Iterator[str]:
    """``amqp://guest:guest@127.0.0.1:5672/<a fresh vhost>``, deleted (with its queues) afterwards."""
    try:
        socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2).close()
    except OSError:
        where = f"{RABBITMQ_HOST}:{RABBITMQ_PORT}"
        _unavailable(f"RabbitMQ not reachable on {where}; start it: rabbitmq-server -detached")
    if not _can_manage_vhosts():
        _unavailable("RabbitMQ tests need rabbitmqctl as root (a vhost per test)")
    vhost = f"qtrain-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(name="broker", params=BROKERS)
def broker_fixture(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The broker URL of this test: the session's Redis db, or a RabbitMQ vhost of its own."""
    if request.param == "redis":
        return redis_url
    return str(request.getfixturevalue("rabbitmq_url"))


def broker_env(env: dict[str, str], broker_url: str) -> dict[str, str]:
    """``env`` (from ``pipeline_env``) with ``broker_url`` as the broker; results stay on Redis."""
    return {**env, "CELERY_BROKER_URL": broker_url}
