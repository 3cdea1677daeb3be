"""Batch creation without Celery: window hashes match what the worker will see."""

from __future__ import annotations

from model.market.synthetic import DEFAULT_START
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


def test_the_prompt_style_travels_with_the_batch_and_splits_the_cache(database_url: str) -> None:
    """QTRAIN_PROMPT at `train` time is stored in the batch: its workers build that prompt, the cache
    never hands an analysis made under one style to the other, and the status names the style."""
    import pytest

    from tests.fake_ollama import FakeOllama
    from worker.clients.factory import chat_client
    from worker.errors import InvalidModelOutput

    seed_candles(database_url, n=200)
    # The fake answers garbage to any prompt that names the pair: only a named prompt can meet it.
    with FakeOllama(faults=[{"mode": "not_json", "match": "ETH-USDT"}]) as fake:
        for style in ("anonymous", "named"):
            settings = Settings(database_url=database_url, ollama_hosts=(fake.url,), prompt_style=style)
            req = dispatch.TrainRequest(symbols=("ETH-USDT",), seed=1)
            batch_id = dispatch.create(settings, req).batch_id
            spec, _ = batches.load_batch(database_url, batch_id) or (None, None)
            assert spec is not None and spec.params["prompt"] == style
            assert spec.prompt_version == (4 if style == "anonymous" else 3)
            client = chat_client(settings)
            for symbol, idx in batches.unfinished_windows(database_url, batch_id):
                window, _ = batches.claim_window(database_url, batch_id, symbol, idx)
                assert window is not None and window.prompt_style == style
                if style == "anonymous":
                    assert analyze(database_url, window, client) == "done"
                else:  # not served from the anonymous analyses: asked, with the name in the prompt
                    with pytest.raises(InvalidModelOutput):
                        analyze(database_url, window, client)
            status = batches.batch_status(database_url, batch_id)
            assert status is not None and status.prompt == style and status.to_json()["prompt"] == style
            client.close()
