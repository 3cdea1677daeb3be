"""``qtrain demo`` end to end, as the README's main-job command runs it (real workers it starts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.conftest import shared_csv
from tests.pipeline_support import pipeline_env, qtrain, query
from tests.sql import execute
from worker.cluster.local import start_workers

pytestmark = pytest.mark.integration


CHECKSUM = "SELECT count(*), md5(string_agg(c::text, '|' ORDER BY symbol, timeframe, ts)) FROM btc.candles c"
"""Every stored candle, every column as PostgreSQL prints it, in one digest."""


@pytest.fixture
def demo_db(database_url: str) -> Iterator[str]:
    """URL of the demo's own database for ``database_url`` (``<name>_demo``); dropped afterwards."""
    from producer.demo_cmd import demo_database_url

    url = demo_database_url(database_url)
    yield url
    name = url.rsplit("/", 1)[1]
    execute(services.pg_url("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_demo_runs_the_whole_path_offline_and_never_touches_real_candles(
    database_url: str, demo_db: str, redis_url: str, tmp_path: Path
) -> None:
    """Issue 29: the demo used to write synthetic 2024 "BTC-USDT" candles into DATABASE_URL's
    database. Pointed at a database that holds real BTC-USDT candles, it now leaves them
    byte-identical: it works in its own database, under SYNTH symbols, and says so."""
    real = tmp_path / "Binance_BTCUSDT_1h.csv"
    with shared_csv("Binance_BTCUSDT_1h.csv").open() as src:  # its newest 2,000 hours
        real.write_text("".join(line for _, line in zip(range(2002), src, strict=False)))
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    imported = qtrain(env, "candles", "import", str(real), "--symbol", "BTC-USDT", "--json")
    assert imported.returncode == 0, imported.stderr[-2000:]
    before = query(database_url, CHECKSUM)[0]
    assert before[0] >= 1900

    proc = qtrain(env, "demo", "--workers", "1", "--candles", "300", "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert query(database_url, CHECKSUM)[0] == before  # byte-identical, nothing added
    for table in ("batches", "agent_state", "backtests", "ollama_analyses"):
        assert query(database_url, f"SELECT count(*) FROM {table}") == [(0,)], table
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["state"] == "done" and final["analyst"] == "heuristic"
    assert set(final["symbols"]) == {"SYNTH1-USDT", "SYNTH2-USDT"}
    assert final["demo"] == {
        "database": demo_db,
        "synthetic": True,
        "models_dir": str(tmp_path / "models" / "demo"),
    }
    stored = query(demo_db, "SELECT DISTINCT symbol FROM candles ORDER BY 1")
    assert stored == [("SYNTH1-USDT",), ("SYNTH2-USDT",)]  # no real symbol in the demo's database either
    for symbol in final["symbols"]:
        assert (tmp_path / "models" / "demo" / f"fast_model_{symbol}.npz").exists()
    assert not list((tmp_path / "models").glob("fast_model_*"))  # the trader's model files untouched
    assert query(demo_db, "SELECT count(*) FROM agent_state")[0][0] == 2

    # the demo stopped the workers it started: a second run starts its own again and hits the cache;
    # in words, it says where it works and that its data are synthetic
    again = qtrain(
        env, "demo", "--database-url", demo_db, "--workers", "1", "--candles", "300", "--epochs", "1"
    )
    assert again.returncode == 0, again.stderr[-2000:]
    out = again.stdout
    assert (
        f"database ready: {demo_db}\n" in out
        and "synthetic candles (seeded random walks, not market data)" in out
    )
    assert "(synthetic data: SYNTH1-USDT, SYNTH2-USDT are seeded random walks, no market's prices)" in out
    assert f"DATABASE_URL={demo_db} QTRAIN_MODELS_DIR=" in out  # the next commands name the demo's database
    for symbol in ("SYNTH1-USDT", "SYNTH2-USDT"):  # 300 candles hold out 2.5 days: said, and what to do
        assert (
            f"{symbol} v2 (synthetic data, 2.5 days, " in out
            and "-> not promoted: insufficient evidence" in out
        ), out
    assert "`qtrain demo --candles 4000` holds out 33 days" in out
    assert query(database_url, CHECKSUM)[0] == before
    # a backtest of the demo's tables says, in its notes (and its HTML report), that the data are synthetic
    bt = qtrain({**env, "DATABASE_URL": demo_db}, "backtest", "--symbol", "SYNTH1-USDT", "--json")
    assert bt.returncode == 0, bt.stderr[-2000:]
    assert json.loads(bt.stdout)["notes"][0].startswith("synthetic data: SYNTH1-USDT is qtrain demo's seeded")


def test_demo_refuses_workers_that_serve_another_database(
    database_url: str, demo_db: str, redis_url: str, tmp_path: Path
) -> None:
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path):
        proc = qtrain(env, "demo", "--workers", "1", "--candles", "300", "--epochs", "1")
    assert proc.returncode == 2, proc.stdout[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "1 Celery worker(s) already consume this broker's queues and serve another database" in line, line
    assert query(demo_db, "SELECT count(*) FROM batches") == [(0,)]  # nothing enqueued for them to take


def test_demo_database_url() -> None:
    from producer.demo_cmd import demo_database_url
    from worker.errors import BadInput

    assert demo_database_url("postgresql://u:pw@h:5432/qtrain") == "postgresql://u:pw@h:5432/qtrain_demo"
    assert (
        demo_database_url("postgresql://h/qtrain_demo?sslmode=require")
        == "postgresql://h/qtrain_demo?sslmode=require"
    )
    for bad in ("postgresql://h:5432", "postgresql://h/" + "x" * 60):
        with pytest.raises(BadInput):
            demo_database_url(bad)


SERVERS = [("openai", "the OpenAI-compatible server"), ("ollama", "Ollama")]


@pytest.mark.parametrize(("api", "server"), SERVERS)
def test_auto_analyst_names_the_server_it_tried(api: str, server: str) -> None:
    from producer.demo_cmd import choose_analyst
    from worker.settings import Settings

    dead = "http://127.0.0.1:9"  # discard port: nothing answers
    settings = Settings(llm_api=api, openai_base_urls=(dead + "/v1",), ollama_hosts=(dead,))
    analyst, why = choose_analyst(settings, "auto")
    assert analyst == "heuristic" and why.startswith(f"{server} not usable (") and dead in why
