"""A paper account over 48 fake hours with a real Celery worker and beat (issue 11).

The loopback exchange's clock releases one closed candle per fake hour. The beat sends
``qtrain.paper_tick`` every second; the test waits for each candle's decision before the next
hour. Midway the worker is SIGKILLed (the next candle arrives while it is dead) and restarted, and
later a tick is delivered twice at once. The record (decisions, fills, equity) must equal an
undisturbed run of the same ticks in-process on a second database, decision for decision.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.trading.live import AgentConfig
from tests.chaos_support import child_pids
from tests.evaluation_support import insert_version
from tests.fake_exchange import FakeKucoin, serve
from tests.pipeline_support import ROOT, pipeline_env, query, wait_for
from tests.services import child_env
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.cluster.local import start_workers
from worker.pipeline import promotion
from worker.settings import Settings
from worker.trading import paper
from worker.trading.agent import AgentSettings

T0 = 1_704_067_200
STEP = 3600
HISTORY = 120
HOURS = 48
KILL_AT = 16
TWICE_AT = 30


def _setup(url: str, fake: FakeKucoin, models: Path) -> Settings:
    """Candles up to the account's start, one promoted hand-made version, the account."""
    settings = Settings(database_url=url, models_dir=str(models))
    fetch_symbol(make_exchange("kucoin", api_url=fake.url), url, "BTC-USDT", "1h", since=T0)
    space = StateSpace.default()
    learner = FastQLearning(space.n_states, seed=0)
    learner.q[...] = np.random.default_rng(11).normal(size=learner.q.shape)
    learner.visits[...] = 1
    v = insert_version(
        url,
        "BTC-USDT",
        learner,
        space,
        train_since=T0,
        train_until=T0 + 50 * STEP,
        holdout_until=T0 + 100 * STEP,
    )
    promotion.set_promoted(settings, "BTC-USDT", v, by="test")
    # a jumpier agent than the default (the account keeps its configuration): more fills to compare
    agent = AgentSettings(
        config=AgentConfig(buy_threshold=0.05, sell_threshold=-0.05, min_confidence=0.1), api_url=fake.url
    )
    paper.create_account(
        settings,
        agent,
        name="live",
        symbols=("BTC-USDT",),
        capital=10_000.0,
        fee=0.001,
        timeframe="1h",
        exchange="kucoin",
    )
    return settings


def _record(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    decisions = query(
        url,
        "SELECT extract(epoch FROM ts)::bigint, version, action, confidence, score, position, target,"
        " components, missing, close, cash, qty, equity, source FROM paper_decisions ORDER BY ts",
    )
    fills = query(
        url,
        "SELECT extract(epoch FROM ts)::bigint, side, price, qty, fee, version FROM paper_fills ORDER BY ts",
    )
    return decisions, fills


def _decided(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM paper_decisions")[0][0])


def _kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its pool children (no warm shutdown: a crash)."""
    for pid in [*child_pids(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


@pytest.mark.integration
@pytest.mark.slow
def test_paper_48_hours_with_worker_kill_and_double_tick_equals_undisturbed_run(
    database_factory: Callable[[], str], redis_url: str, tmp_path: Path
) -> None:
    from celery import Celery

    fake = FakeKucoin(closed_only=True)
    ts = fake.add_series("BTC-USDT", start=T0, count=HISTORY + HOURS + 2, seed=21)
    disturbed, calm = database_factory(), database_factory()
    with serve(fake):
        # ---- the undisturbed run: the same tick, in-process, one fake hour at a time
        fake.now = float(ts[HISTORY])
        calm_settings = _setup(calm, fake, tmp_path / "m1")
        live = Settings(database_url=calm, agent_env={"QTRAIN_EXCHANGE_API_URL": fake.url})
        for hour in range(1, HOURS + 1):
            fake.now = float(ts[HISTORY + hour])
            paper.tick(live)
        assert _decided(calm) == HOURS
        del calm_settings

        # ---- the disturbed run: real beat + worker, a kill, a double delivery
        fake.now = float(ts[HISTORY])
        _setup(disturbed, fake, tmp_path / "m2")
        env = {
            **pipeline_env(disturbed, redis_url, "http://127.0.0.1:9", tmp_path / "models"),
            "QTRAIN_PAPER_EVERY_S": "1",
            "QTRAIN_EXCHANGE_API_URL": fake.url,
        }
        beat_log = tmp_path / "beat.log"
        client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
        client.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
        workers = start_workers(1, concurrency=2, env=env, log_dir=tmp_path, loglevel="INFO")
        with beat_log.open("wb") as out:
            beat = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "-s",
                    str(tmp_path / "beat-schedule"),
                    "--pidfile",
                    str(tmp_path / "beat.pid"),
                ],
                env=child_env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
            )
        restarted = None
        try:
            procs = [(beat, beat_log), *zip(workers.procs, workers.logs, strict=True)]
            for hour in range(1, HOURS + 1):
                if hour == KILL_AT:
                    _kill_worker(workers.procs[0])  # a crash; the next candle arrives while no worker runs
                with fake.lock:
                    fake.now = float(ts[HISTORY + hour])
                if hour == KILL_AT:
                    time.sleep(2.0)  # the beat keeps sending ticks nobody runs
                    assert _decided(disturbed) == hour - 1
                    restarted = start_workers(1, concurrency=2, env=env, log_dir=tmp_path, loglevel="INFO")
                    procs = [(beat, beat_log), *zip(restarted.procs, restarted.logs, strict=True)]
                if hour == 1:  # the worker runs the task Flower shows (events on: -E)
                    registered = client.control.inspect(timeout=5).registered() or {}
                    assert any("qtrain.paper_tick" in tasks for tasks in registered.values()), registered
                if hour == TWICE_AT:
                    sent = [
                        client.send_task("qtrain.paper_tick", queue="reduce", routing_key="reduce")
                        for _ in range(2)
                    ]
                    for r in sent:
                        r.get(timeout=60)
                decided = lambda h=hour: _decided(disturbed) >= h  # noqa: E731
                wait_for(f"the decision of fake hour {hour}", decided, procs=procs)
                assert _decided(disturbed) == hour  # never two decisions for one candle
        finally:
            beat.terminate()
            beat.wait(20)
            workers.stop(10)
            if restarted is not None:
                restarted.stop(20)
            client.close()
        beat_text = beat_log.read_text(errors="replace")
        assert "qtrain.paper_tick" in beat_text

    got, want = _record(disturbed), _record(calm)
    assert got[0] == want[0]  # every decision: version, action, scores, book, equity, source
    assert got[1] == want[1]  # every fill
    assert len(got[1]) >= 2, "a run without fills would compare nothing"
    assert [d[0] for d in got[0]] == [int(t) for t in ts[HISTORY : HISTORY + HOURS]]
    assert {d[13] for d in got[0]} == {"live"}  # each candle decided while it was the newest
