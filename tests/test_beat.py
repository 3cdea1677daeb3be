"""Scheduled retraining: configuration, cron ticks, and a real ``celery beat`` + worker run.

The integration tests use real PostgreSQL, Redis and Celery processes, the loopback KuCoin of
``tests.fake_exchange`` (its clock releases new candles) and the heuristic analyst (no Ollama).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.market.synthetic import make_candles
from tests.fake_exchange import FakeKucoin, serve
from tests.pipeline_support import ROOT, pipeline_env, query, seed_candles, wait_for
from tests.services import child_env
from worker.cluster.local import start_workers
from worker.errors import BadInput
from worker.pipeline import retrain, schedule
from worker.settings import Settings
from worker.store import db
from worker.store.candles import insert_candles

BASE_ENV = {"QTRAIN_RETRAIN_SYMBOLS": "BTC-USDT", "QTRAIN_RETRAIN_ANALYST": "heuristic"}


# ----------------------------------------------------------------------------- configuration


def test_no_schedule_without_cron_or_every() -> None:
    assert schedule.RetrainConfig.from_env({}) is None
    assert schedule.beat_schedule_from_env({"QTRAIN_RETRAIN_SYMBOLS": "BTC-USDT"}) == {}


def test_cron_entry_from_env() -> None:
    env = {**BASE_ENV, "QTRAIN_RETRAIN_CRON": "0 3 * * 1-5", "QTRAIN_RETRAIN_SYMBOLS": "btc/usdt, ETH-USDT"}
    entry = schedule.beat_schedule_from_env(env)[schedule.ENTRY_NAME]
    assert entry["task"] == "qtrain.retrain"
    cron = entry["schedule"]
    assert cron.minute == {0} and cron.hour == {3} and cron.day_of_week == {1, 2, 3, 4, 5}
    assert cron.day_of_month == set(range(1, 32)) and cron.month_of_year == set(range(1, 13))
    assert entry["options"]["queue"] == "reduce"
    kwargs = json.loads(json.dumps(entry["kwargs"]))  # what travels through the broker
    config = schedule.RetrainConfig.from_kwargs(kwargs)
    assert config.symbols == ("BTC-USDT", "ETH-USDT") and config.exchange == "kucoin"
    assert config.timeframe == "1h" and config.analyst == "heuristic" and config.epochs == 5


def test_every_s_entry_and_options() -> None:
    env = {
        **BASE_ENV,
        "QTRAIN_RETRAIN_EVERY_S": "2",
        "QTRAIN_RETRAIN_EPOCHS": "3",
        "QTRAIN_RETRAIN_EXCHANGE": "binance",
        "QTRAIN_RETRAIN_TIMEFRAME": "4h",
        "QTRAIN_EXCHANGE_API_URL": "http://127.0.0.1:1",
        "QTRAIN_RETRAIN_FETCH": "0",
    }
    entry = schedule.beat_schedule_from_env(env)[schedule.ENTRY_NAME]
    assert entry["schedule"] == timedelta(seconds=2)
    config = schedule.RetrainConfig.from_kwargs(entry["kwargs"])
    assert (config.every_s, config.epochs, config.exchange, config.timeframe) == (2.0, 3, "binance", "4h")
    assert config.api_url == "http://127.0.0.1:1" and config.fetch is False


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"QTRAIN_RETRAIN_CRON": "61 * * * *"}, "QTRAIN_RETRAIN_CRON='61 * * * *'"),
        ({"QTRAIN_RETRAIN_CRON": "0 3 * *"}, "has 4 fields"),
        ({"QTRAIN_RETRAIN_CRON": "every day"}, "has 2 fields"),
        ({"QTRAIN_RETRAIN_CRON": "0 3 * * 8"}, "not a cron expression"),
        ({"QTRAIN_RETRAIN_CRON": "0 3 * * *", "QTRAIN_RETRAIN_EVERY_S": "5"}, "exactly one"),
        ({"QTRAIN_RETRAIN_EVERY_S": "0.1"}, "QTRAIN_RETRAIN_EVERY_S must be >= 1"),
        ({"QTRAIN_RETRAIN_EVERY_S": "soon"}, "QTRAIN_RETRAIN_EVERY_S must be a number"),
        ({"QTRAIN_RETRAIN_EVERY_S": "5", "QTRAIN_RETRAIN_SYMBOLS": ""}, "QTRAIN_RETRAIN_SYMBOLS is empty"),
        ({"QTRAIN_RETRAIN_EVERY_S": "5", "QTRAIN_RETRAIN_ANALYST": "gpt"}, "QTRAIN_RETRAIN_ANALYST"),
        ({"QTRAIN_RETRAIN_EVERY_S": "5", "QTRAIN_RETRAIN_EPOCHS": "x"}, "QTRAIN_RETRAIN_EPOCHS must be an"),
        ({"QTRAIN_RETRAIN_EVERY_S": "5", "QTRAIN_RETRAIN_TIMEFRAME": "7q"}, "QTRAIN_RETRAIN_TIMEFRAME"),
    ],
)
def test_bad_settings_are_one_clear_line(extra: dict[str, str], needle: str, caplog) -> None:
    env = {**BASE_ENV, **extra}
    with pytest.raises(BadInput) as info:
        schedule.RetrainConfig.from_env(env)
    assert needle in str(info.value) and "\n" not in str(info.value)
    caplog.clear()
    assert schedule.beat_schedule_from_env(env) == {}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "scheduled retraining is OFF" in errors[0].getMessage()


def test_bad_cron_at_process_start_prints_one_line() -> None:
    env = child_env({**BASE_ENV, "QTRAIN_RETRAIN_CRON": "0 25 * * *"})
    proc = subprocess.run(
        [sys.executable, "-c", "import worker.runtime.app as a; print(len(a.app.conf.beat_schedule))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "QTRAIN_RETRAIN_CRON='0 25 * * *'" in lines[0] and "OFF" in lines[0]


# ----------------------------------------------------------------------------- cron ticks


def _matches(cron: Any, t: datetime) -> bool:
    return (
        t.minute in cron.minute
        and t.hour in cron.hour
        and t.day in cron.day_of_month
        and t.month in cron.month_of_year
        and t.isoweekday() % 7 in cron.day_of_week
    )


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=3),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    dows=st.sets(st.integers(0, 6), min_size=1, max_size=7),
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
)
def test_previous_fire_is_the_latest_matching_minute(minutes, hours, dows, now) -> None:
    text = " ".join(
        (
            ",".join(map(str, sorted(minutes))),
            ",".join(map(str, sorted(hours))),
            "*",
            "*",
            ",".join(map(str, sorted(dows))),
        )
    )
    cron = schedule.parse_cron(text)
    now = now.replace(tzinfo=UTC)
    got = schedule.previous_fire(cron, now)
    assert got <= now and _matches(cron, got)
    t = now.replace(second=0, microsecond=0)
    while t > got:  # brute force: no matching minute between the answer and now
        assert not _matches(cron, t), (text, now, got, t)
        t -= timedelta(minutes=1)


def test_tick_of_every_s_floors_to_the_interval() -> None:
    config = schedule.RetrainConfig(symbols=("BTC-USDT",), every_s=10, analyst="heuristic")
    t = datetime(2024, 1, 1, 12, 0, 7, 500000, tzinfo=UTC)
    assert schedule.tick_of(config, t) == datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert schedule.tick_of(config, t + timedelta(seconds=3)) == datetime(2024, 1, 1, 12, 0, 10, tzinfo=UTC)


# ----------------------------------------------------------------------------- the retrain step


def _add_candles(url: str, symbol: str, n: int, *, seed: int, price: float, keep: int) -> None:
    """Store the first ``keep`` of ``n`` seeded candles (the same series every call)."""
    c = make_candles(n, seed=seed, price=price, symbol=symbol).slice(0, keep)
    with db.transaction(url) as cur:
        insert_candles(cur, symbol, "1h", c.ts, c.open, c.high, c.low, c.close, c.volume)


def _batches(url: str) -> list[tuple[int, list[str], dict[str, Any]]]:
    return [
        (int(r[0]), list(r[1]), r[2])
        for r in query(url, "SELECT id, symbols, params FROM batches ORDER BY id")
    ]


def _windows(url: str) -> list[tuple[int, str, datetime]]:
    return query(url, "SELECT batch_id, symbol, start_ts FROM windows ORDER BY batch_id, symbol, start_ts")


def test_retrain_direct_lock_tick_in_flight_and_new_windows(database_url: str) -> None:
    settings_ = Settings(database_url=database_url)
    config = schedule.RetrainConfig(
        symbols=("BTC-USDT", "ETH-USDT"), every_s=3600, analyst="heuristic", fetch=False
    )
    for sym, seed, price in (("BTC-USDT", 5, 30_000.0), ("ETH-USDT", 6, 2_000.0)):
        _add_candles(database_url, sym, 400, seed=seed, price=price, keep=300)
    sent: list[tuple[int, int]] = []

    def enqueue(_s: Settings, batch_id: int, windows: Any, _symbols: Any) -> int:
        time.sleep(0.2)  # widen the race: the lock is still held by the creator
        sent.append((batch_id, len(windows)))
        return len(windows)

    now = datetime(2030, 1, 1, 12, 0, 1, tzinfo=UTC)
    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []

    def run() -> None:
        barrier.wait()
        results.append(retrain.retrain(settings_, config, now=now, enqueue=enqueue))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r["status"] for r in results)
    assert statuses.count("created") == 1, statuses
    assert set(statuses) <= {"created", "locked", "duplicate"}
    ((first_id, symbols, params),) = _batches(database_url)
    assert symbols == ["BTC-USDT", "ETH-USDT"] and params["trigger"] == "beat"
    assert params["tick"] == "2030-01-01T12:00:00+00:00"
    assert sent == [(first_id, 22)]  # 11 windows of 48 every 24 in 300 candles, per symbol

    # Same tick again: duplicate. Next tick: the windows are in flight (never run here): nothing new.
    assert retrain.retrain(settings_, config, now=now, enqueue=enqueue)["status"] == "duplicate"
    later = now + timedelta(hours=1)
    assert retrain.retrain(settings_, config, now=later, enqueue=enqueue)["status"] == "nothing_new"

    # 48 more BTC candles: the next tick enqueues exactly the 2 new BTC windows.
    _add_candles(database_url, "BTC-USDT", 400, seed=5, price=30_000.0, keep=348)
    res = retrain.retrain(settings_, config, now=later + timedelta(hours=1), enqueue=enqueue)
    assert res["status"] == "created" and res["per_symbol"] == {"BTC-USDT": 2}
    rows = _windows(database_url)
    keys = [(s, t) for _, s, t in rows]
    assert len(keys) == len(set(keys)) == 24
    new = [t for b, _, t in rows if b == res["batch_id"]]
    old = [t for b, s, t in rows if b == first_id and s == "BTC-USDT"]
    assert min(new) > max(old)
    (_, symbols2, params2) = _batches(database_url)[-1]
    assert symbols2 == ["BTC-USDT"] and params2["skipped"] == {"BTC-USDT": 0}


def test_retrain_survives_a_failing_exchange(database_url: str) -> None:
    seed_candles(database_url, n=120, symbols={"BTC-USDT": (11, 30_000.0)})
    config = schedule.RetrainConfig(
        symbols=("BTC-USDT",), every_s=60, analyst="heuristic", api_url="http://127.0.0.1:9"
    )
    res = retrain.retrain(Settings(database_url=database_url), config, enqueue=lambda *a: len(a[2]))
    assert res["status"] == "created" and res["windows"] == 4
    assert str(res["fetched"]["BTC-USDT"]).startswith("error: ")


# ----------------------------------------------------------------------------- real beat + worker


@pytest.fixture
def exchange() -> Iterator[FakeKucoin]:
    fake = FakeKucoin()
    with serve(fake):
        yield fake


@pytest.mark.integration
def test_beat_makes_one_batch_per_tick_with_new_data(
    database_url: str, redis_url: str, exchange: FakeKucoin, tmp_path: Path
) -> None:
    start = (int(time.time()) // 3600 - 400) * 3600
    for seed, symbol in enumerate(("BTC-USDT", "ETH-USDT"), start=3):
        exchange.add_series(symbol, start=start, count=400, seed=seed)
    exchange.now = start + 299 * 3600  # the exchange shows 300 candles
    env = {
        **pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models"),
        "QTRAIN_RETRAIN_EVERY_S": "2",
        "QTRAIN_RETRAIN_SYMBOLS": "BTC-USDT,ETH-USDT",
        "QTRAIN_RETRAIN_ANALYST": "heuristic",
        "QTRAIN_RETRAIN_EPOCHS": "2",
        "QTRAIN_EXCHANGE_API_URL": exchange.url,
    }
    beat_log = tmp_path / "beat.log"
    with start_workers(1, concurrency=2, env=env, log_dir=tmp_path, loglevel="INFO") as workers:
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
        procs = ((beat, beat_log), *zip(workers.procs, workers.logs, strict=True))
        try:

            def done_batches(n: int) -> Callable[[], bool]:
                # n batches with every symbol reduced (not batches.state: see the report on its race)
                sql = (
                    "SELECT count(*) FROM batches b WHERE (SELECT count(*) FROM agent_state a"
                    " WHERE a.batch_id = b.id) = cardinality(b.symbols)"
                )
                return lambda: len(_batches(database_url)) == n and query(database_url, sql)[0][0] == n

            wait_for("the first retrain batch", done_batches(1), procs=procs)
            first = _windows(database_url)
            assert len(first) == 22
            # Later ticks find nothing new: wait for two more ticks' fetches, still one batch.
            seen = len(exchange.candle_requests())
            wait_for("two more ticks", lambda: len(exchange.candle_requests()) >= seen + 4, procs=procs)
            assert len(_batches(database_url)) == 1

            with exchange.lock:
                exchange.now = start + 347 * 3600  # 48 new candles: 2 new windows per symbol
            wait_for("the second retrain batch", done_batches(2), procs=procs)
            seen = len(exchange.candle_requests())
            wait_for("two more ticks", lambda: len(exchange.candle_requests()) >= seen + 4, procs=procs)
        finally:
            beat.terminate()
            beat.wait(20)
    batches_ = _batches(database_url)
    assert len(batches_) == 2, batches_
    ticks = [p["tick"] for _, _, p in batches_]
    assert len(set(ticks)) == 2 and all(p["trigger"] == "beat" for _, _, p in batches_)
    rows = _windows(database_url)
    keys = [(s, t) for _, s, t in rows]
    assert len(keys) == len(set(keys)) == 26  # no window analysed twice across batches
    second = batches_[1][0]
    for sym in ("BTC-USDT", "ETH-USDT"):
        new = [t for b, s, t in rows if b == second and s == sym]
        assert len(new) == 2 and min(new) > max(t for b, s, t in first if s == sym)
    (analyses,) = query(database_url, "SELECT count(*) FROM ollama_analyses")[0]
    assert analyses == 26
    versions = query(
        database_url, "SELECT symbol, version, batch_id FROM agent_state ORDER BY symbol, version"
    )
    assert [(s, v) for s, v, _ in versions] == [
        ("BTC-USDT", 1),
        ("BTC-USDT", 2),
        ("ETH-USDT", 1),
        ("ETH-USDT", 2),
    ]
    (stored,) = query(database_url, "SELECT count(*) FROM candles WHERE symbol = 'BTC-USDT'")[0]
    assert stored == 348


@pytest.mark.integration
def test_two_retrain_tasks_at_once_make_one_batch(database_url: str, redis_url: str, tmp_path: Path) -> None:
    from celery import Celery

    seed_candles(database_url, n=200)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    config = schedule.RetrainConfig(
        symbols=("BTC-USDT", "ETH-USDT"), every_s=3600, analyst="heuristic", fetch=False, epochs=1
    )
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    client.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    try:
        with start_workers(1, concurrency=2, env=env, log_dir=tmp_path, loglevel="INFO"):
            sent = [
                client.send_task(
                    "qtrain.retrain", kwargs=config.to_kwargs(), queue="reduce", routing_key="reduce"
                )
                for _ in range(2)
            ]
            results = [r.get(timeout=60) for r in sent]
            reduced = "SELECT count(*) FROM agent_state"
            wait_for("the batch's reducers", lambda: query(database_url, reduced)[0][0] == 2)
    finally:
        client.close()
    statuses = sorted(r["status"] for r in results)
    assert statuses in (["created", "locked"], ["created", "duplicate"]), results
    assert len(_batches(database_url)) == 1
