"""Nothing happening is said, within seconds: ``train --wait`` and ``status`` with no worker on the
batch's queue print one line with the command to start one and no ETA; with a real worker they
never do. Real Redis or RabbitMQ (a vhost per test), real worker processes, the real CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import broker_env, broker_fixture, rabbitmq_url_fixture  # noqa: F401
from tests.pipeline_support import ROOT, pipeline_env, qtrain, seed_candles
from tests.services import child_env
from worker.cluster.liveness import CONSUMER_TIMEOUT_S, RECHECK_S, START_WORKER, Watch, consumers
from worker.cluster.local import start_workers

#: Seconds within which ``train --wait`` must say that no worker consumes the queue (the process's
#: start, the enqueue and one ask of at most ``CONSUMER_TIMEOUT_S`` fit well inside).
SAY_WITHIN_S = 15.0
LINE = "no worker consumes the queue"


def _env(database_url: str, redis_url: str, broker: str, tmp_path: Path) -> dict[str, str]:
    seed_candles(database_url, n=120)  # 4 windows per symbol
    return broker_env(
        pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models"), broker
    )


@pytest.mark.integration
def test_no_worker_is_said_within_seconds_with_no_eta(database_url, redis_url, broker, tmp_path) -> None:
    env = _env(database_url, redis_url, broker, tmp_path)
    assert consumers(env["CELERY_BROKER_URL"]) == 0
    cmd = [sys.executable, "-m", "producer", "train", "--symbols", "BTC-USDT,ETH-USDT"]
    cmd += ["--analyst", "heuristic", "--wait", "--timeout", "60"]
    t0 = time.monotonic()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen(cmd, env=child_env(env), cwd=str(ROOT), **pipes)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # off a terminal: the idle line is printed as soon as it is known
            seen.append(line)
            if LINE in line:
                break
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    said = [ln for ln in seen if LINE in ln]
    assert said, "".join(seen)[-2000:]
    assert elapsed < SAY_WITHIN_S, elapsed
    assert START_WORKER in said[0] and "guest:guest" not in said[0]  # the command; the broker redacted
    assert "ETA" not in "".join(seen)

    status = qtrain(env, "status")
    assert status.returncode == 0, status.stderr
    assert (
        LINE in status.stderr and START_WORKER in status.stderr and "ETA" not in status.stdout + status.stderr
    )
    as_json = json.loads(qtrain(env, "status", "--json").stdout)
    assert as_json["eta_s"] is None and LINE in as_json["idle"]


@pytest.mark.integration
def test_a_real_worker_is_never_reported_missing(database_url, redis_url, broker, tmp_path) -> None:
    env = _env(database_url, redis_url, broker, tmp_path)
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, ready_timeout=60):
        t0 = time.monotonic()
        assert consumers(env["CELERY_BROKER_URL"]) >= 1
        assert time.monotonic() - t0 < CONSUMER_TIMEOUT_S + 1.5  # the first reply ends the wait
        args = ("--analyst", "heuristic", "--wait", "--timeout", "120")
        proc = qtrain(env, "train", "--symbols", "BTC-USDT,ETH-USDT", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert LINE not in proc.stdout + proc.stderr


def test_watch_asks_once_then_after_quiet_and_gives_an_eta_only_after_progress() -> None:
    now = [0.0]
    asked: list[str] = []
    answers = iter([0, 0, 1])

    def ask(url: str, queue: str) -> int | None:
        asked.append(queue)
        return next(answers)

    w = Watch("redis://:secret@h:6379/0", ask=ask, clock=lambda: now[0])
    line = w.observe(0, 10)
    assert line is not None and LINE in line and "secret" not in line and START_WORKER in line
    assert w.eta_s(0, 10) is None and w.rate(0) is None  # no ETA without progress
    now[0] = RECHECK_S / 2
    assert w.observe(0, 10) is None and len(asked) == 1  # not asked again before RECHECK_S
    now[0] = RECHECK_S + 1
    assert w.observe(0, 10) is None and len(asked) == 2  # still idle: said once, not repeated
    now[0] = RECHECK_S + 5
    assert w.observe(4, 10) is None and len(asked) == 2 and not w.idle  # windows finish: someone works
    assert w.rate(4) == pytest.approx(4 / (RECHECK_S + 5))
    assert w.eta_s(4, 10) == pytest.approx(6 / w.rate(4))
    now[0] = 3 * RECHECK_S
    assert w.observe(10, 10) is None and w.idle is False
    now[0] = 5 * RECHECK_S
    assert w.observe(10, 10) is None and asked[-1] == "reduce"  # all analysed: the reducers' queue
