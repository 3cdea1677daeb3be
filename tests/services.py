"""Reachability of the real services the integration tests use (dramatiq-style check_*).

Under ``CI=true`` a missing service fails the test; elsewhere it skips with the start command.
"""

from __future__ import annotations

import os
import socket

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

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
    msg = f"{service} not reachable on {host}:{port}; start it with: {START.get(service, '?')}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)
