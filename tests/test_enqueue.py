"""Batch creation without Celery: window hashes match what the worker will see."""

from __future__ import annotations

from model.synthetic import DEFAULT_START
from tests.pipeline_support import query, seed_candles
from worker.pipeline import dispatch
from worker.pipeline.analyze import analyze
from worker.settings import Settings
from worker.store import batches


def test_windows_of_a_range_starting_mid_history_analyse_cleanly(database_url: str) -> None:
    seed_candles(database_url, n=400)
    settings = Settings(database_url=database_url)
    since = DEFAULT_START + 200 * 3600  # history before --since feeds the first windows' warm-up
    req = dispatch.TrainRequest(symbols=("BTC-USDT",), since=since, analyst="heuristic", seed=1)
    created = dispatch.create(settings, req)
    batch_id = created.batch_id
    assert created.windows == (200 - 48) // 24 + 1
    for symbol, idx in batches.unfinished_windows(database_url, batch_id):
        window, _ = batches.claim_window(database_url, batch_id, symbol, idx)
        assert window is not None and window.start_ts >= since
        assert analyze(database_url, window, None) == "done"
    statuses = query(database_url, "SELECT DISTINCT status FROM windows WHERE batch_id = %s", (batch_id,))
    assert statuses == [("done",)]


def test_identical_content_is_analysed_once(database_url: str) -> None:
    seed_candles(database_url, n=200)
    settings = Settings(database_url=database_url)
    req = dispatch.TrainRequest(symbols=("ETH-USDT",), analyst="heuristic", seed=1)
    outcomes: list[list[str]] = []
    for _ in range(2):
        batch_id = dispatch.create(settings, req).batch_id
        outcomes.append([])
        for symbol, idx in batches.unfinished_windows(database_url, batch_id):
            window, _ = batches.claim_window(database_url, batch_id, symbol, idx)
            assert window is not None
            outcomes[-1].append(analyze(database_url, window, None))
    first, second = outcomes
    assert len(first) == len(second) > 0
    assert set(first) == {"done"} and set(second) == {"cached"}
    assert query(database_url, "SELECT count(*) FROM ollama_analyses")[0][0] == len(first)
