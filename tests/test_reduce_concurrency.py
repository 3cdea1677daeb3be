"""Reducers (and gates) of two symbols finishing at the same moment still finish their batch."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.pipeline_support import query, seed_candles
from worker.pipeline import completion, dispatch
from worker.pipeline.analyze import analyze
from worker.settings import Settings
from worker.store import batches


def _analysed_batch(settings: Settings, seed: int) -> int:
    req = dispatch.TrainRequest(symbols=("BTC-USDT", "ETH-USDT"), analyst="heuristic", seed=seed, epochs=1)
    batch_id = dispatch.create(settings, req).batch_id
    for symbol, idx in batches.unfinished_windows(settings.database_url, batch_id):
        window, _ = batches.claim_window(settings.database_url, batch_id, symbol, idx)
        analyze(settings.database_url, window, None)
    return batch_id


def test_concurrent_reducers_mark_the_batch_done(database_url: str, tmp_path: Path) -> None:
    seed_candles(database_url, n=200)
    settings = Settings(database_url=database_url, models_dir=str(tmp_path))
    for seed in range(6):
        batch_id = _analysed_batch(settings, seed)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(
            symbol: str, batch_id: int = batch_id, start: threading.Barrier = start, errors: list = errors
        ) -> None:
            try:
                start.wait()
                completion.complete_symbol(settings, batch_id, symbol)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in ("BTC-USDT", "ETH-USDT")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert query(database_url, "SELECT state FROM batches WHERE id = %s", (batch_id,)) == [("done",)]
