"""The reducer pools a batch's symbols under a pooled recipe: each version waits for the whole batch,
is trained across every symbol's training candles cut at the earliest training end, and nothing
later of any symbol reaches it. (Real worker processes run a pooled batch in tests/test_pipeline.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.qlearning import FastQLearning
from model.states import StateSpace
from model.training import train_pooled, train_qtable
from tests.pipeline_support import query, seed_candles
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
    shaped = {s: analyses.batch_analyses(database_url, batch_id, s) for s in SYMBOLS}
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


def test_a_one_symbol_pooled_batch_does_not_wait_for_anything(database_url: str, tmp_path: Path) -> None:
    seed_candles(database_url, n=300)
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    req = dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="heuristic", recipe="pooled", seed=1)
    batch_id = dispatch.create(settings, req).batch_id
    _analyse(settings, batch_id, "BTC-USDT")
    assert completion.complete_symbol(settings, batch_id, "BTC-USDT")["version"] == 1
    _, meta = _stored(database_url, "BTC-USDT")
    assert "pooled" not in meta  # one symbol: its own state means are the pool, as before
