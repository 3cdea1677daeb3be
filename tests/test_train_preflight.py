"""``qtrain train`` preflight: each problem is one line and exit 2, and nothing is enqueued."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_ollama import FakeOllama
from tests.pipeline_support import pipeline_env, qtrain, query, seed_candles

pytestmark = pytest.mark.integration


@pytest.fixture
def fake():
    with FakeOllama(models=("llama3:8b",)) as server:
        yield server


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_preflight_failures(database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path) -> None:
    env = pipeline_env(database_url, redis_url, fake.url, tmp_path)
    seed_candles(database_url, n=100)
    # the model is not pulled on the Ollama host
    _one_line_error(qtrain(env, "train", "--symbols", "BTC-USDT"), "ollama pull qwen2.5-coder:7b")
    # Ollama not reachable at all
    dead = {**env, "OLLAMA_HOST": "http://127.0.0.1:9"}
    _one_line_error(qtrain(dead, "train", "--symbols", "BTC-USDT"), "127.0.0.1:9")
    # no candles for a symbol / in the range
    _one_line_error(
        qtrain(env, "train", "--symbols", "SOL-USDT", "--analyst", "heuristic"), "SOL-USDT", "import"
    )
    _one_line_error(
        qtrain(env, "train", "--symbols", "BTC-USDT", "--analyst", "heuristic", "--since", "2030-01-01"),
        "no 1h candles",
    )
    # broker down
    broker_down = {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:9/0"}
    _one_line_error(qtrain(broker_down, "train", "--symbols", "BTC-USDT", "--analyst", "heuristic"), "broker")
    # database without the schema, and a bad date
    _one_line_error(
        qtrain(env, "train", "--symbols", "BTC-USDT", "--analyst", "heuristic", "--since", "yesterday"),
        "--since",
    )
    _one_line_error(qtrain(env, "train", "--symbols", "BTC/USDT;DROP TABLE", "--analyst", "heuristic"))
    _one_line_error(qtrain(env, "status", "999"), "999")
    _one_line_error(qtrain(env, "resume", "999"), "999")
    assert query(database_url, "SELECT count(*) FROM batches")[0][0] == 0


def test_a_symbol_without_volume_is_refused(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """Candles imported from a file without volume (stored NULL) cannot train: one line naming volume."""
    import numpy as np

    from model.market.synthetic import make_candles
    from worker.store import db
    from worker.store.candles import insert_candles

    c = make_candles(300, seed=3, symbol="NOVOL-USDT")
    with db.transaction(database_url) as cur:
        insert_candles(cur, c.symbol, "1h", c.ts, c.open, c.high, c.low, c.close, np.full(len(c), np.nan))
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path)
    proc = qtrain(env, "train", "--symbols", "NOVOL-USDT", "--analyst", "heuristic")
    _one_line_error(proc, "NOVOL-USDT", "no volume", "volume_z")
    assert query(database_url, "SELECT count(*) FROM batches")[0][0] == 0


def test_openai_api_end_to_end_with_workers(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """QTRAIN_LLM_API=openai against the fake's llama-cpp-python mode (json_schema refused, unknown
    models answered anyway): a wrong model is refused in one line before any batch; a real batch
    through a real worker ends with every window final and none failed, tokens stored and shown
    per window; the same batch again makes no LLM call."""
    from tests.pipeline_support import train_json
    from worker.cluster.local import start_workers

    seed_candles(database_url, n=150)
    with FakeOllama(models=("smollm2",), flavor="llama-cpp-python") as fake:
        base = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "m")
        env = {
            **base,
            "QTRAIN_LLM_API": "openai",
            "OPENAI_BASE_URL": fake.openai_url,
            "QTRAIN_LLM_MODEL": "smollm2",
        }
        wrong = {**env, "QTRAIN_LLM_MODEL": "qwen2.5-coder:7b"}
        _one_line_error(
            qtrain(wrong, "train", "--symbols", "BTC-USDT"), "not served by", "it serves: smollm2"
        )
        assert (
            query(database_url, "SELECT count(*) FROM batches")[0][0] == 0 and fake.stats()["llm_calls"] == 0
        )
        with start_workers(1, concurrency=2, env=env, log_dir=tmp_path, prefix="openai"):
            final = train_json(env, symbols="BTC-USDT")
            calls = fake.stats()["llm_calls"]
            again = train_json(env, symbols="BTC-USDT")
        s = final["symbols"]["BTC-USDT"]
        assert final["state"] == "done" and s["failed"] == 0 and s["done"] == s["total"] > 3
        # + the json_schema request each worker child sent once (refused; then json_object, remembered)
        assert s["total"] + 1 <= calls <= s["total"] + 2
        assert fake.stats()["llm_calls"] == calls and again["symbols"]["BTC-USDT"]["cached"] == s["total"]
        per = final["per_window"]
        assert per["windows"] == s["total"] and per["prompt_tokens"] > 100 and per["answer_tokens"] > 10
        rows = query(database_url, "SELECT prompt_tokens, completion_tokens, host FROM ollama_analyses")
        assert len(rows) == s["total"] and all(
            p > 100 and c > 10 and h == fake.openai_url for p, c, h in rows
        )
        shown = qtrain(env, "status", str(final["batch_id"]))
        assert shown.returncode == 0 and "per window (median of" in shown.stdout, shown.stdout + shown.stderr
