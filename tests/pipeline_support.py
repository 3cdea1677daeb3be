"""Helpers for the pipeline tests: candles in a test database, the CLI as a subprocess, workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.services import child_env
from tests.sql import query  # noqa: F401 - re-exported for the tests that import it from here
from worker.ingest.synthetic import insert_synthetic

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = {"BTC-USDT": (11, 30_000.0), "ETH-USDT": (12, 2_000.0)}


def seed_candles(database_url: str, n: int = 360, symbols: dict[str, tuple[int, float]] = SYMBOLS) -> None:
    """Insert ``n`` seeded synthetic hourly candles per symbol."""
    insert_synthetic(database_url, n, symbols)


def pipeline_env(database_url: str, redis_url: str, ollama_url: str, models_dir: Path) -> dict[str, str]:
    """Every qtrain setting of one test's CLI and worker processes: its own database, Redis dbs, models.

    Complete on purpose: with ``child_env`` nothing else reaches those processes, so the shell's
    DATABASE_URL, CELERY_*, OLLAMA_* or QTRAIN_* cannot change what a test exercises.
    """
    base = redis_url.rsplit("/", 1)[0]
    number = int(redis_url.rsplit("/", 1)[1])
    return {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": f"{base}/{number}",
        "CELERY_RESULT_BACKEND": f"{base}/{number + 1}",
        "OLLAMA_HOST": ollama_url,
        "OLLAMA_TIMEOUT": "5",
        "QTRAIN_MODELS_DIR": str(models_dir),
        "QTRAIN_RETRY_BASE_S": "0.1",
        "QTRAIN_MAX_ATTEMPTS": "3",
    }


def qtrain(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``python -m producer ARGS`` with ``env`` on top of the OS basics (nothing else of the shell)."""
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def train_json(env: dict[str, str], *extra: str, symbols: str = "BTC-USDT,ETH-USDT") -> dict[str, Any]:
    """``qtrain train ... --wait --json`` and its final status (fails the test on a non-zero exit)."""
    proc = qtrain(
        env,
        "train",
        "--symbols",
        symbols,
        "--epochs",
        "2",
        "--seed",
        "7",
        "--wait",
        "--timeout",
        "180",
        "--json",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for(
    what: str,
    check: Callable[[], Any],
    *,
    procs: Sequence[tuple[Any, Path]] = (),
    timeout: float = 40.0,
    poll_s: float = 0.1,
) -> Any:
    """Poll ``check()`` until it returns something truthy (returned); fail early, with its log, when a
    process of ``procs`` (``(Popen, log path)``) exits, and with their logs after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        for p, log in procs:
            assert p.poll() is None, f"{log.name} exited: {log.read_text(errors='replace')[-1500:]}"
        if time.monotonic() > deadline:
            logs = "\n".join(log.read_text(errors="replace")[-1500:] for _, log in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(poll_s)
