"""Start and stop local Celery worker processes (for ``qtrain demo`` and the integration tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ServiceUnavailable


@dataclass
class LocalWorkers:
    """Worker processes this program started; ``stop()`` ends them (warm shutdown, then kill)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every worker (finish current task), wait, then SIGKILL what is left."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_command(
    *,
    name: str,
    concurrency: int,
    queues: str = "analyze,reduce",
    loglevel: str = "WARNING",
    pool: str | None = None,
) -> list[str]:
    """The ``celery -A worker worker`` command line qtrain recommends, for one worker process
    (``pool="threads"``: many calls in flight in one process, README "Scaling")."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--prefetch-multiplier",
        "1",
        "--without-gossip",
        "--without-mingle",
        "-E",
        "--loglevel",
        loglevel,
        *(["--pool", pool] if pool else []),
    ]


def start_workers(
    n: int,
    *,
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    prefix: str = "qtrain",
    ready_timeout: float = 60.0,
    loglevel: str = "WARNING",
    pool: str | None = None,
    queues: str = "analyze,reduce",
) -> LocalWorkers:
    """Start ``n`` worker processes and wait until each answers a ping (never a blind sleep)."""
    full_env = {**os.environ, **(env or {})}
    workers = LocalWorkers()
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    stamp = f"{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    names = [f"{prefix}{i}-{stamp}" for i in range(n)]
    for name in names:
        log = log_dir / f"{name}.log"
        workers.logs.append(log)
        out = log.open("wb")
        workers.procs.append(
            subprocess.Popen(
                worker_command(
                    name=name, concurrency=concurrency, loglevel=loglevel, pool=pool, queues=queues
                ),
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
        )
    probe = _probe(full_env.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
    deadline = time.monotonic() + ready_timeout
    want = set(names)
    try:
        while True:
            for p, log in zip(workers.procs, workers.logs, strict=True):
                if p.poll() is not None:
                    tail = log.read_text(errors="replace")[-600:]
                    raise ServiceUnavailable(f"a worker exited at start (code {p.returncode}): {tail!r}")
            replies = probe.control.ping(timeout=1.0) or []
            seen = {next(iter(r)).split("@", 1)[0] for r in replies}
            if want <= seen:
                return workers
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"workers did not answer a ping within {ready_timeout:.0f} s")
    except BaseException:
        workers.stop(5)
        raise
    finally:
        probe.close()


def _probe(broker_url: str) -> Any:
    """A bare Celery app that pings the workers on ``broker_url`` (JSON only).

    The read and write URLs are set, not only the broker: Celery lets the process's
    ``CELERY_BROKER_URL`` override an app's configured ``broker_url`` (but not these), and the
    caller's broker (a test's, the demo's embedded Redis) must win.
    """
    from celery import Celery

    probe = Celery(broker=broker_url)
    probe.conf.update(
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
    )
    return probe


def running_workers(broker_url: str, timeout: float = 1.0) -> int:
    """How many Celery workers answer a ping on ``broker_url``."""
    probe = _probe(broker_url)
    try:
        return len(probe.control.ping(timeout=timeout) or [])
    except Exception:
        return 0
    finally:
        probe.close()
