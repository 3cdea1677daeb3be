"""The distributed pipeline end to end: real Redis, PostgreSQL and Celery worker processes.

Only Ollama is stood in for, by ``tests.fake_ollama`` over real HTTP on loopback. The end-to-end
and determinism tests run on both brokers (``broker``: Redis, or a RabbitMQ vhost of their own).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model.learning.qlearning import FastQLearning
from tests.brokers import broker_env, broker_fixture, rabbitmq_url_fixture  # noqa: F401 - fixtures
from tests.fake_ollama import FakeOllama
from tests.pipeline_support import pipeline_env, qtrain, query, seed_candles, train_json
from worker.cluster.local import start_workers
from worker.pipeline import ablation, promotion, records

pytestmark = pytest.mark.integration


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(latency_s=0.02, num_parallel=4) as server:
        yield server


@pytest.fixture
def env(database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path) -> dict[str, str]:
    seed_candles(database_url)
    return pipeline_env(database_url, redis_url, fake.url, tmp_path / "models")


def _workers(env: dict[str, str], n: int, tmp_path: Path, concurrency: int = 2):
    return start_workers(n, concurrency=concurrency, env=env, log_dir=tmp_path, loglevel="INFO")


def test_end_to_end_two_symbols_two_workers(env, broker, database_url, fake, tmp_path) -> None:
    env = broker_env(env, broker)
    with _workers(env, 2, tmp_path):
        final = train_json(env)
    assert final["state"] == "done"
    for sym, s in final["symbols"].items():
        assert s["total"] > 5, sym
        assert s["done"] + s["cached"] + s["failed"] == s["total"]
        assert s["failed"] == 0 and s["reduced"] and s["q_version"] == 1
    assert fake.stats()["llm_calls"] >= final["total"]  # more only if a call timed out under load
    (rules,) = query(database_url, "SELECT count(*) FROM ollama_trading_rules")[0]
    assert rules > 0
    rows = query(database_url, "SELECT symbol, npz, sha256 FROM agent_state ORDER BY symbol")
    assert [r[0] for r in rows] == ["BTC-USDT", "ETH-USDT"]
    for symbol, blob, _ in rows:
        learner, meta = FastQLearning.from_bytes(bytes(blob))
        assert meta["symbol"] == symbol and np.isfinite(learner.q).all() and learner.visits.sum() > 0
        on_disk, _ = FastQLearning.load(Path(env["QTRAIN_MODELS_DIR"]) / f"fast_model_{symbol}.npz")
        assert on_disk.q.tobytes() == learner.q.tobytes()
    for rec in records.version_records(database_url, None, promotion.PromotionConfig()):
        line, said = records.gate_line(rec), ablation.sentence(rec.ablation)
        print(line, said, sep="\n")  # the report quotes them (pytest -s)
        # a 3-day tail: the line shows no annualised margin, the ablation's sentence has them all
        assert "what the LLM adds not shown" in line and "insufficient evidence" in line, line
        assert "content adds" in said and "(controls: shuffled " in said, said


def test_same_batch_with_one_and_three_workers_gives_identical_tables(
    database_factory, redis_url, broker, fake, tmp_path
) -> None:
    tables = []
    for n_workers in (1, 3):
        url = database_factory()
        seed_candles(url)
        env = broker_env(pipeline_env(url, redis_url, fake.url, tmp_path / f"models{n_workers}"), broker)
        with _workers(env, n_workers, tmp_path):
            train_json(env)
        tables.append(query(url, "SELECT symbol, npz FROM agent_state ORDER BY symbol"))
    assert [(s, bytes(b)) for s, b in tables[0]] == [(s, bytes(b)) for s, b in tables[1]]


def test_rerunning_a_finished_batch_makes_no_llm_call(env, database_url, fake, tmp_path) -> None:
    with _workers(env, 1, tmp_path, concurrency=4):
        first = train_json(env)
        calls = fake.stats()["llm_calls"]
        assert calls >= first["total"]
        second = train_json(env, "--epochs", "3")
    assert fake.stats()["llm_calls"] == calls  # nothing new asked of the LLM
    for s in second["symbols"].values():
        assert s["cached"] == s["total"] and s["done"] == 0 and s["reduced"]
    versions = query(database_url, "SELECT symbol, max(version) FROM agent_state GROUP BY symbol")
    assert {v for _, v in versions} == {2}


def test_a_pooled_batch_reduces_every_symbol_across_both(env, database_url, fake, tmp_path) -> None:
    """The symbol whose windows end first gets its version too: the last one to finish enqueues both."""
    with _workers(env, 2, tmp_path):
        final = train_json(env, "--recipe", "pooled")
    assert final["state"] == "done"
    assert all(s["reduced"] and s["q_version"] == 1 for s in final["symbols"].values())
    for symbol, blob in query(database_url, "SELECT symbol, npz FROM agent_state ORDER BY symbol"):
        _, meta = FastQLearning.from_bytes(bytes(blob))
        assert meta["pooled"]["symbols"] == ["BTC-USDT", "ETH-USDT"], symbol
    # every version's gate names its negative controls (each trained across both symbols, on each
    # symbol's own control): the record, and the line `models list` and the demo print
    cfg = promotion.PromotionConfig()
    for rec in records.version_records(database_url, None, cfg):
        ab = rec.ablation
        assert ab is not None and set(ab["controls"]) == {"shuffled", "constant"}, rec.row.symbol
        assert ab["best_control"] in ab["controls"] and ab["content_margin"] is not None
        line, said = records.gate_line(rec), ablation.sentence(rec.ablation)
        print(line, said, sep="\n")  # the report quotes them (pytest -s)
        assert "what the LLM adds not shown" in line, line  # a 3-day tail
        assert "content adds" in said and "(controls: shuffled " in said and ", constant " in said, said


FAULTS = [
    {"mode": "null_fields", "calls": [1]},
    {"mode": "string_numbers", "calls": [2]},
    {"mode": "code_fence", "calls": [3]},
    {"mode": "truncated", "calls": [4]},
    {"mode": "http_500", "calls": [5]},
    {"mode": "http_404", "calls": [6]},
    {"mode": "hang", "calls": [7]},
    {"mode": "close", "calls": [8]},
    {"mode": "http_503", "calls": [9]},
    {"mode": "not_json", "calls": [10]},
    {"mode": "unknown_feature", "calls": [11]},
    {"mode": "out_of_range", "calls": [12]},
]


def test_every_failure_kind_ends_in_a_recorded_state(env, database_url, fake, tmp_path) -> None:
    fake.configure(faults=FAULTS, hang_s=12.0)
    with _workers(env, 1, tmp_path, concurrency=3):
        final = train_json(env)
    assert final["state"] == "done"
    rows = query(database_url, "SELECT status, error, attempts FROM windows ORDER BY symbol, idx")
    assert {r[0] for r in rows} <= {"done", "cached", "failed"}
    failed = [r for r in rows if r[0] == "failed"]
    assert failed, "the 404 / truncated / not-JSON answers must fail their window"
    assert all(err for _, err, _ in failed)
    assert any("not pulled" in err or "not found" in err for _, err, _ in failed)
    stats = fake.stats()
    assert stats["llm_calls"] > len(rows)  # 500 / 503 / hang / close were retried
    assert stats["faults_applied"] and stats["busy"] >= 1
    assert sum(s["failed"] for s in final["symbols"].values()) == len(failed)
    repaired = query(database_url, "SELECT count(*) FROM ollama_analyses WHERE repairs <> '{}'::jsonb")
    assert repaired[0][0] >= 3


def test_resume_after_broker_loss(env, database_url, redis_url, fake, tmp_path) -> None:
    proc = qtrain(env, "train", "--symbols", "BTC-USDT", "--epochs", "1", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    import redis

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()  # the queued messages are gone
    batch_id = query(database_url, "SELECT max(id) FROM batches")[0][0]
    for _ in range(2):  # safe any number of times
        out = qtrain(env, "resume", str(batch_id))
        assert out.returncode == 0, out.stderr
    with _workers(env, 1, tmp_path):
        done = qtrain(env, "status", str(batch_id), "--json")
        import json
        import time

        deadline = time.monotonic() + 120
        while json.loads(done.stdout)["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.5)
            done = qtrain(env, "status", str(batch_id), "--json")
    st = json.loads(done.stdout)
    assert st["state"] == "done" and st["symbols"]["BTC-USDT"]["q_version"] == 1
    assert query(database_url, "SELECT count(*) FROM agent_state")[0][0] == 1
