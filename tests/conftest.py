"""Shared fixtures: a fresh migrated PostgreSQL database and a private Redis db per test.

Databases are cloned from a template migrated once per session (fast ``CREATE DATABASE ...
TEMPLATE``); Redis tests use a db pair of their session (8/9, 10/11 or 12/13), never 0/1 (the defaults).

Hermetic: before anything is imported, every qtrain/Celery/Ollama variable of the shell
(``DATABASE_URL``, ``CELERY_*``, ``OLLAMA_*``, ``QTRAIN_*``) is removed from this process's
environment, and processes the tests start get an environment built from scratch
(``tests.services.child_env``). Servers: the defaults, or ``--pg HOST:PORT --redis HOST:PORT``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import services

# Before any test module imports worker.runtime.app (which reads the environment once): Celery lets
# CELERY_BROKER_URL override the broker a test passes to Celery(broker=...), so an exported
# .env made every worker-ping probe of the tests ask the user's broker and time out.
SCRUBBED = services.scrub_environment()

from tests.services import require  # noqa: E402
from tests.sql import execute  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--pg`` / ``--redis``: servers other than the defaults (scripts/test passes embedded ones)."""
    group = parser.getgroup("qtrain services")
    group.addoption("--pg", metavar="HOST:PORT", help="PostgreSQL of the tests [127.0.0.1:5432]")
    group.addoption("--redis", metavar="HOST:PORT", help="Redis of the tests [127.0.0.1:6379]")


def pytest_configure(config: pytest.Config) -> None:
    """Apply ``--pg`` / ``--redis`` before any fixture builds a URL."""
    services.use_addresses(config.getoption("--pg"), config.getoption("--redis"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which servers the tests use and which shell variables they ignore."""
    lines = [
        f"qtrain services: PostgreSQL {services.PG_HOST}:{services.PG_PORT},"
        f" Redis {services.REDIS_HOST}:{services.REDIS_PORT}"
    ]
    if SCRUBBED:
        lines.append(f"qtrain: ignoring the shell's {', '.join(SCRUBBED)} (tests build their own)")
    return lines


def shared_csv(name: str) -> Path:
    """Path of a file in ``../shared/data``; skips (fails under CI) when the folder is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{path} missing: CI runs with ../shared beside the repo")
        pytest.skip(f"{path} missing")
    return path


def _admin(statement: str) -> None:
    execute(services.pg_url("postgres"), statement)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated template database, created once per test session."""
    require("PostgreSQL", services.PG_HOST, services.PG_PORT)
    from worker.store import migrate

    name = f"qtrain_tmpl_{uuid.uuid4().hex[:8]}"
    migrate.migrate(services.pg_url(name))
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_factory(pg_template: str) -> Iterator[Callable[[], str]]:
    """Call it for the URL of another fresh, migrated database; all are dropped afterwards."""
    from worker.store import db

    names: list[str] = []

    def make() -> str:
        name = f"qtrain_t_{uuid.uuid4().hex[:10]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        names.append(name)
        # per-database settings are not copied from a template: set what `db init` sets
        _admin(f'ALTER DATABASE "{name}" SET search_path TO btc, public')
        return services.pg_url(name)

    yield make
    db.close_pools()
    for name in names:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(database_factory: Callable[[], str]) -> str:
    """URL of a fresh, migrated database of this test's own; dropped afterwards."""
    return database_factory()


REDIS_LOCK_DB = 7
REDIS_TEST_DBS = (8, 10, 12)  # broker db N, result backend db N + 1 (14/15 are the benchmarks')


def _owner_is_dead(value: bytes | None) -> bool:
    """True when a lock value names a process of this host that no longer runs."""
    try:
        host, pid, _ = (value or b"").decode().split(":")
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


@pytest.fixture(scope="session")
def redis_base() -> Iterator[int]:
    """A Redis db pair of this test session's own, claimed with a lock key in db 7.

    Two test runs on one machine (two checkouts, CI beside a developer) would otherwise share
    the broker and run each other's tasks.
    """
    require("Redis", services.REDIS_HOST, services.REDIS_PORT)
    import redis

    locks = redis.Redis.from_url(services.redis_url(REDIS_LOCK_DB))
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    for number in REDIS_TEST_DBS:
        key = f"qtrain-test-lock:{number}"
        if locks.set(key, token, nx=True, ex=3 * 3600):
            break
        if _owner_is_dead(locks.get(key)):  # a killed run left its lock: take it over
            locks.set(key, token, ex=3 * 3600)
            break
    else:
        pytest.fail(f"Redis test dbs {REDIS_TEST_DBS} all locked by other runs (keys in db {REDIS_LOCK_DB})")
    yield number
    if locks.get(f"qtrain-test-lock:{number}") == token.encode():
        locks.delete(f"qtrain-test-lock:{number}")
    locks.close()


@pytest.fixture
def redis_url(redis_base: int) -> Iterator[str]:
    """A flushed Redis database (broker; the next number is the result backend) for this test."""
    import redis

    url = services.redis_url(redis_base)
    clients = [redis.Redis.from_url(services.redis_url(n)) for n in (redis_base, redis_base + 1)]
    for c in clients:
        c.flushdb()
    yield url
    for c in clients:
        c.flushdb()
        c.close()
