"""Shared fixtures: a fresh migrated PostgreSQL database and a private Redis db per test.

Databases are cloned from a template migrated once per session (fast ``CREATE DATABASE ...
TEMPLATE``); Redis tests use a db pair of their session (8/9, 10/11 or 12/13), never 0/1 (the defaults).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.services import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, require
from tests.sql import execute

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


def shared_csv(name: str) -> Path:
    """Path of a file in ``../shared/data``; skips (fails under CI) when the folder is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{path} missing: CI runs with ../shared beside the repo")
        pytest.skip(f"{path} missing")
    return path


def _admin(statement: str) -> None:
    execute(ADMIN_URL, statement)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated template database, created once per test session."""
    require("PostgreSQL", PG_HOST, PG_PORT)
    from worker import migrate

    name = f"qtrain_tmpl_{uuid.uuid4().hex[:8]}"
    migrate.migrate(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}")
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_factory(pg_template: str) -> Iterator[Callable[[], str]]:
    """Call it for the URL of another fresh, migrated database; all are dropped afterwards."""
    from worker import db

    names: list[str] = []

    def make() -> str:
        name = f"qtrain_t_{uuid.uuid4().hex[:10]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        names.append(name)
        # per-database settings are not copied from a template: set what `db init` sets
        _admin(f'ALTER DATABASE "{name}" SET search_path TO btc, public')
        return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"

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
    require("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    locks = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_LOCK_DB)
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

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_base}"
    clients = [
        redis.Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/{n}") for n in (redis_base, redis_base + 1)
    ]
    for c in clients:
        c.flushdb()
    yield url
    for c in clients:
        c.flushdb()
        c.close()
