"""The reducer pools a batch's symbols under a pooled recipe: each version waits for the whole batch,
is trained across every symbol's training candles cut at the earliest training end, and nothing
later of any symbol reaches it. A batch of one symbol pools with the other symbols stored over its
training range (their candles up to its training end, unshaped), through real worker processes
too; ``--pool none`` trains it alone; a bad ``--pool`` is one line. (Real worker processes run a
pooled batch of two symbols in tests/test_pipeline.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pytest

from model.candles import Candles
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.learning.training import train_pooled, train_qtable
from tests.pipeline_support import query, seed_candles
from worker.errors import BadInput
from worker.pipeline import completion, dispatch
from worker.pipeline.analyze import analyze
from worker.settings import DEFAULT_HOLDOUT, Settings
from worker.store import analyses, batches
from worker.store.candles import load_candles

SYMBOLS = {"BTC-USDT": (11, 30_000.0), "ETH-USDT": (12, 2_000.0)}


def _analyse(settings: Settings, batch_id: int, symbol: str) -> None:
    for sym, idx in batches.unfinished_windows(settings.database_url, batch_id):
        if sym == symbol:
            window, _ = batches.claim_window(settings.database_url, batch_id, sym, idx)
            analyze(settings.database_url, window, None)


def _stored(url: str, symbol: str) -> tuple[FastQLearning, dict]:
    ((blob,),) = query(url, "SELECT npz FROM agent_state WHERE symbol = %s", (symbol,))
    return FastQLearning.from_bytes(bytes(blob))


def test_a_pooled_batch_trains_each_symbol_across_all_of_them(database_url: str, tmp_path: Path) -> None:
    seed_candles(database_url, n=420, symbols={"BTC-USDT": SYMBOLS["BTC-USDT"]})
    seed_candles(database_url, n=300, symbols={"ETH-USDT": SYMBOLS["ETH-USDT"]})  # ends earlier
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    req = dispatch.TrainRequest(
        symbols=("BTC-USDT", "ETH-USDT"), analyst="heuristic", recipe="pooled", seed=1
    )
    batch_id = dispatch.create(settings, req).batch_id

    _analyse(settings, batch_id, "BTC-USDT")
    waiting = completion.complete_symbol(settings, batch_id, "BTC-USDT")
    assert waiting["waiting"] and waiting["version"] is None  # ETH's windows are not final yet

    _analyse(settings, batch_id, "ETH-USDT")
    for symbol in SYMBOLS:
        assert completion.complete_symbol(settings, batch_id, symbol)["version"] == 1
    assert query(database_url, "SELECT state FROM batches WHERE id = %s", (batch_id,)) == [("done",)]

    # recomputed here from candles before the common cut only: ETH's training end (the earlier one)
    full = {s: load_candles(database_url, s, "1h") for s in SYMBOLS}
    n_train = {s: int(round(len(c) * (1.0 - DEFAULT_HOLDOUT))) for s, c in full.items()}
    cut = int(full["ETH-USDT"].ts[n_train["ETH-USDT"] - 1]) + 3600
    trains = {s: c.slice(0, int(np.searchsorted(c.ts, cut))) for s, c in full.items()}
    assert len(trains["BTC-USDT"]) < n_train["BTC-USDT"]  # BTC's own training part was longer
    every = {s: analyses.batch_analyses(database_url, batch_id, s) for s in SYMBOLS}
    # only windows that end before the cut: one running into the held-out tail was analysed from it
    shaped = {s: [a for a in every[s] if a.end_ts < cut] for s in SYMBOLS}
    assert any(len(shaped[s]) < len(every[s]) for s in SYMBOLS)  # some window crossed the cut
    space = StateSpace.default()
    expected = {
        "on": train_pooled(trains, shaped, space=space, recipe="pooled"),
        "off": train_pooled(trains, {}, space=space, recipe="pooled"),
    }
    for symbol in SYMBOLS:
        table, meta = _stored(database_url, symbol)
        assert meta["pooled"] == {"symbols": sorted(SYMBOLS), "train_until": cut}
        assert meta["train_until"] == cut and meta["n_train_candles"] == len(trains[symbol])
        want = expected[meta.get("shaping", "on")][symbol][0]
        assert table.q.tobytes() == want.q.tobytes(), symbol
    alone, _, _ = train_qtable(trains["BTC-USDT"], shaped["BTC-USDT"], space=space, recipe="pooled")
    assert alone.q.tobytes() != expected["on"]["BTC-USDT"][0].q.tobytes()  # ETH's data did count


def _expected_one(url: str, batch_id: int, peers: dict[str, Candles]) -> tuple[int, dict[str, Any]]:
    """BTC-USDT's training end, and its tables (shaped, unshaped) pooled with ``peers``' candles,
    recomputed here from BTC's training part and the peers' given candles."""
    btc = load_candles(url, "BTC-USDT", "1h")
    n_train = int(round(len(btc) * (1.0 - DEFAULT_HOLDOUT)))
    cut = int(btc.ts[n_train - 1]) + 3600
    trains = {"BTC-USDT": btc.slice(0, n_train), **peers}
    shaped = {"BTC-USDT": [a for a in analyses.batch_analyses(url, batch_id, "BTC-USDT") if a.end_ts < cut]}
    space = StateSpace.default()
    return cut, {
        "on": train_pooled(trains, shaped, space=space)["BTC-USDT"][0],
        "off": train_pooled(trains, {}, space=space)["BTC-USDT"][0],
    }


def test_a_one_symbol_batch_pools_with_a_stored_peer_up_to_its_training_end(
    database_url: str, tmp_path: Path
) -> None:
    """ETH-USDT is stored (no windows, not in the batch): BTC's version pools ETH's candles of BTC's
    training range and none later (ETH's candles after the cut are then made wild: same table),
    does not wait for ETH, and ETH gets no version. The record and the pool line say so."""
    seed_candles(database_url, n=300)  # BTC-USDT and ETH-USDT, the same hours
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    req = dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="heuristic", seed=1)  # the default recipe
    created = dispatch.create(settings, req)
    assert created.recipe == "pooled" and created.pool == ["ETH-USDT"]
    assert "BTC-USDT pooled with the stored ETH-USDT" in dispatch.pool_line(
        req.symbols, created.recipe, created.pool
    )
    btc = load_candles(database_url, "BTC-USDT", "1h")
    cut = int(btc.ts[int(round(len(btc) * (1.0 - DEFAULT_HOLDOUT))) - 1]) + 3600
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:  # ETH after the cut: wild prices
        cur.execute(
            "UPDATE btc.candles SET close = close * 7, high = high * 7 WHERE symbol = 'ETH-USDT'"
            " AND ts >= to_timestamp(%s)",
            (cut,),
        )
    _analyse(settings, created.batch_id, "BTC-USDT")
    assert completion.complete_symbol(settings, created.batch_id, "BTC-USDT")["version"] == 1
    assert query(database_url, "SELECT DISTINCT symbol FROM agent_state") == [("BTC-USDT",)]

    eth = load_candles(database_url, "ETH-USDT", "1h", until=cut)  # nothing at or after the cut
    want_cut, want = _expected_one(database_url, created.batch_id, {"ETH-USDT": eth})
    table, meta = _stored(database_url, "BTC-USDT")
    assert want_cut == cut and meta["pooled"] == {"symbols": ["BTC-USDT", "ETH-USDT"], "train_until": cut}
    assert table.q.tobytes() == want[meta.get("shaping", "on")].q.tobytes()
    _, alone = _expected_one(database_url, created.batch_id, {})
    assert table.q.tobytes() != alone[meta.get("shaping", "on")].q.tobytes()  # ETH's candles counted


def test_one_stored_symbol_pools_with_none_and_still_trains(database_url: str, tmp_path: Path) -> None:
    """Only BTC-USDT stored: ``qtrain train --symbols BTC-USDT`` pools with nothing and says so."""
    seed_candles(database_url, n=300, symbols={"BTC-USDT": SYMBOLS["BTC-USDT"]})
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    created = dispatch.create(
        settings, dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="heuristic", seed=1)
    )
    assert created.pool == []
    assert "with no other symbol" in dispatch.pool_line(("BTC-USDT",), created.recipe, created.pool)
    _analyse(settings, created.batch_id, "BTC-USDT")
    assert completion.complete_symbol(settings, created.batch_id, "BTC-USDT")["version"] == 1
    table, meta = _stored(database_url, "BTC-USDT")
    _, alone = _expected_one(database_url, created.batch_id, {})
    assert meta["pooled"]["symbols"] == ["BTC-USDT"]
    assert table.q.tobytes() == alone[meta.get("shaping", "on")].q.tobytes()


def test_pool_none_trains_one_symbol_alone_and_a_bad_pool_is_one_line(
    database_url: str, tmp_path: Path
) -> None:
    seed_candles(database_url, n=300)
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    req = dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="heuristic", seed=1, pool=())
    created = dispatch.create(settings, req)
    assert created.pool == "none" and "alone (--pool none)" in dispatch.pool_line(
        ("BTC-USDT",), "pooled", "none"
    )
    _analyse(settings, created.batch_id, "BTC-USDT")
    assert completion.complete_symbol(settings, created.batch_id, "BTC-USDT")["version"] == 1
    table, meta = _stored(database_url, "BTC-USDT")
    _, alone = _expected_one(database_url, created.batch_id, {})
    assert meta["pooled"]["symbols"] == ["BTC-USDT"]
    assert table.q.tobytes() == alone[meta.get("shaping", "on")].q.tobytes()
    for bad, says in (
        (dict(pool=("XRP-USDT",)), "--pool XRP-USDT: no 1h candles"),
        (dict(pool=("ETH-USDT",), recipe="sweep"), "--pool applies to the pooled recipe only"),
    ):
        with pytest.raises(BadInput, match=says):
            dispatch.create(settings, dataclasses.replace(req, **bad))


@pytest.mark.integration
def test_one_symbol_through_real_workers_pools_with_the_stored_peer(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """``qtrain train --symbols BTC-USDT --wait`` with ETH-USDT stored, through real Celery worker
    processes and the fake LLM over HTTP: the summary names the recipe and the stored peer, BTC's
    version pools ETH up to its training end, ETH gets none; ``--epochs`` says it is ignored."""
    from tests.fake_ollama import FakeOllama
    from tests.pipeline_support import pipeline_env, qtrain
    from worker.cluster.local import start_workers

    seed_candles(database_url)
    with FakeOllama(latency_s=0.01, num_parallel=4) as fake:
        env = pipeline_env(database_url, redis_url, fake.url, tmp_path / "models")
        with start_workers(1, concurrency=2, env=env, log_dir=tmp_path, loglevel="INFO"):
            proc = qtrain(
                env,
                "train",
                "--symbols",
                "BTC-USDT",
                "--seed",
                "7",
                "--epochs",
                "2",
                "--wait",
                "--timeout",
                "180",
            )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recipe pooled: BTC-USDT pooled with the stored ETH-USDT" in proc.stdout
    assert "--epochs is ignored by recipe pooled" in proc.stderr
    assert query(database_url, "SELECT DISTINCT symbol FROM agent_state") == [("BTC-USDT",)]
    (batch_id,) = query(database_url, "SELECT max(id) FROM batches")[0]
    cut, _ = _expected_one(database_url, batch_id, {})
    eth = load_candles(database_url, "ETH-USDT", "1h", until=cut)
    _, want = _expected_one(database_url, batch_id, {"ETH-USDT": eth})
    table, meta = _stored(database_url, "BTC-USDT")
    assert meta["pooled"] == {"symbols": ["BTC-USDT", "ETH-USDT"], "train_until": cut}
    assert table.q.tobytes() == want[meta.get("shaping", "on")].q.tobytes()
