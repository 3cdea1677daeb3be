"""Where the real services the integration tests use are, whether they answer, and the environment
of every process a test starts.

Under ``CI=true`` a missing service fails the test; elsewhere it skips with the start command.
The addresses are the defaults unless ``pytest --pg HOST:PORT --redis HOST:PORT`` (what
``scripts/test`` passes for embedded servers) says otherwise; they never come from the shell's
``DATABASE_URL`` or ``CELERY_BROKER_URL``: the tests are hermetic.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

#: What a process a test starts takes from the shell: the operating system's basics only.
#: Every qtrain setting (DATABASE_URL, CELERY_*, OLLAMA_*, QTRAIN_*) comes from the test itself,
#: so a user's exported ``.env`` cannot point test workers at another broker or database.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "CI",
    "SYSTEMROOT",
)
#: Prefixes (and names) of the shell variables qtrain, Celery or Ollama clients read: removed from
#: the test process's own environment at start (tests/conftest.py), so in-process code and the
#: processes started with ``{**os.environ, ...}`` (worker/cluster/local.py) see none of them either.
QTRAIN_VARIABLES = ("DATABASE_URL", "CELERY_", "OLLAMA_", "QTRAIN_")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a process a test starts, built from scratch: OS basics plus ``extra``."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(extra or {})
    return env


def scrub_environment() -> list[str]:
    """Remove every qtrain/Celery/Ollama variable from ``os.environ``; returns the names removed."""
    gone = sorted(k for k in os.environ if k.startswith(QTRAIN_VARIABLES))
    for k in gone:
        del os.environ[k]
    return gone


def use_addresses(pg: str | None, redis: str | None) -> None:
    """Point the fixtures at ``HOST:PORT`` servers other than the defaults (``--pg`` / ``--redis``)."""
    global PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT
    if pg:
        host, port = pg.rsplit(":", 1)
        PG_HOST, PG_PORT = host, int(port)
    if redis:
        host, port = redis.rsplit(":", 1)
        REDIS_HOST, REDIS_PORT = host, int(port)


def pg_url(database: str) -> str:
    """URL of ``database`` on the test PostgreSQL (user postgres, trust auth)."""
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{database}"


def redis_url(db: int) -> str:
    """URL of Redis database number ``db`` on the test Redis."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no",
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def require_chromium() -> str:
    """Path of a headless-capable Chromium; fails under CI (which installs it), else skips."""
    import shutil

    for name in CHROMIUM:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is missing: CI installs the Debian package 'chromium'")
    pytest.skip("chromium is not installed")


def require(service: str, host: str, port: int) -> None:
    """Fail (CI) or skip (elsewhere) unless ``service`` answers on ``host:port``."""
    if _reachable(host, port):
        return
    msg = (
        f"{service} not reachable on {host}:{port}; start it with: {START.get(service, '?')}"
        " (or run scripts/test: it starts embedded servers when none answers)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)
