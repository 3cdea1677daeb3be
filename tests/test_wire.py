"""Hostile input on the wire: pickle on the task queue, and Ollama answers that are too big, too deep,
endless, or from an Ollama too old for JSON-schema ``format``.

The client tests drive ``OllamaClient`` against the fake Ollama over real HTTP; the integration
tests use real Celery workers on both brokers (``tests.brokers``).
"""

from __future__ import annotations

import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import broker_env, broker_fixture, rabbitmq_url_fixture  # noqa: F401 - fixtures
from tests.chaos_support import start_batch, wait_batch_finished, wait_until
from tests.fake_ollama import HUGE_BYTES, FakeOllama
from tests.pipeline_support import pipeline_env, qtrain, query, seed_candles
from worker.clients.llm import AnswerRefused
from worker.clients.ollama import (
    MAX_JSON_DEPTH,
    MAX_RESPONSE_BYTES,
    OllamaClient,
    OllamaTooOld,
    json_depth,
)
from worker.cluster.local import start_workers
from worker.errors import InvalidModelOutput

MODEL = "qwen2.5-coder:7b"
MESSAGES = [{"role": "user", "content": "BTC-USDT 1h, 48 candles"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(latency_s=0.0, num_parallel=4) as server:
        yield server


def _client(fake: FakeOllama, timeout_s: float = 3.0) -> OllamaClient:
    return OllamaClient([fake.url], MODEL, timeout_s=timeout_s, max_retries=0)


def test_a_50_mb_answer_is_cut_off_at_the_documented_size(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "huge"}])
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with (
            _client(fake) as client,
            pytest.raises(AnswerRefused, match=r"larger than 4,194,304 bytes"),
        ):
            client.chat(MESSAGES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 10
    assert peak < 4 * MAX_RESPONSE_BYTES < HUGE_BYTES, peak  # bounded: never the whole 50 MB


def test_json_nested_100000_deep_is_refused_before_parsing(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "deep"}])
    with (
        _client(fake) as client,
        pytest.raises(InvalidModelOutput, match=rf"deeper than {MAX_JSON_DEPTH} levels"),
    ):
        client.chat(MESSAGES)


def test_a_body_that_never_ends_is_cut_off_at_the_timeout(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "endless"}])
    t0 = time.monotonic()
    with (
        _client(fake, timeout_s=2.0) as client,
        pytest.raises(AnswerRefused, match=r"still arriving after 2 s"),
    ):
        client.chat(MESSAGES)
    assert 2.0 <= time.monotonic() - t0 < 6


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": "[[[["}]}', 3),
        (b'"x\\" [[["', 0),
        (b"[" * 10 + b"]" * 10, 10),
        (b"7", 0),
    ],
)
def test_json_depth_skips_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize("version", ["0.4.7", "0.1.32", "0.3.14-rc2"])
def test_preflight_refuses_an_ollama_older_than_0_5_by_name_and_version(
    fake: FakeOllama, version: str
) -> None:
    fake.configure(version=version)
    with _client(fake) as client, pytest.raises(OllamaTooOld) as err:
        client.preflight()
    msg = str(err.value)
    assert fake.url in msg and version in msg and "0.5.0" in msg and "\n" not in msg


@pytest.mark.parametrize("version", ["0.5.0", "0.6.2", "0.0.0", "1.0.0"])
def test_preflight_accepts_0_5_and_later(fake: FakeOllama, version: str) -> None:
    fake.configure(version=version)
    with _client(fake) as client:
        assert client.preflight() == {fake.url: version}


# -- integration: real workers ---------------------------------------------------------------------


@pytest.mark.integration
def test_hostile_answers_fail_their_window_with_one_line_and_the_batch_finishes(
    database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path
) -> None:
    seed_candles(database_url, n=150)
    env = {
        **pipeline_env(database_url, redis_url, fake.url, tmp_path / "m"),
        "OLLAMA_TIMEOUT": "2",
        "QTRAIN_MAX_FAILED_SHARE": "1",
    }  # 3 of the few windows fail: the batch still goes on
    fake.configure(
        faults=[
            {"mode": "huge", "calls": [1]},
            {"mode": "deep", "calls": [2]},
            {"mode": "endless", "calls": [3]},
        ]
    )
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, prefix="wire"):
        batch_id = start_batch(env, "BTC-USDT")
        assert wait_batch_finished(database_url, batch_id, timeout=120) == "done"
    failed = query(database_url, "SELECT error FROM windows WHERE status = 'failed' ORDER BY idx")
    reasons = sorted(r[0] for r in failed)
    assert len(reasons) == 3, reasons
    assert all("\n" not in r and "refused" in r for r in reasons), reasons
    assert any("larger than" in r for r in reasons) and any("nested deeper" in r for r in reasons)
    assert any("still arriving" in r for r in reasons)


@pytest.mark.integration
def test_train_and_worker_start_refuse_an_old_ollama(
    database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path
) -> None:
    seed_candles(database_url, n=150)
    fake.configure(version="0.4.7")
    env = pipeline_env(database_url, redis_url, fake.url, tmp_path / "m")
    proc = qtrain(env, "train", "--symbols", "BTC-USDT", "--epochs", "1")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and fake.url in lines[0] and "0.4.7" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert query(database_url, "SELECT count(*) FROM batches")[0][0] == 0
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, prefix="old", loglevel="INFO") as w:
        log = wait_until(
            lambda: "REFUSED" in (t := w.logs[0].read_text(errors="replace")) and t,
            timeout=30,
            what="the worker's start-up line about the old host",
        )
    line = next(ln for ln in log.splitlines() if "REFUSED" in ln)
    assert fake.url in line and "0.4.7" in line


# A protocol-0 pickle that, if anything unpickled it, would run `touch TRACE` (posix.system).
def _evil_pickle(trace: Path) -> bytes:
    return b"cposix\nsystem\n(S'touch " + str(trace).encode() + b"'\ntR."


def test_the_payload_would_leave_a_trace_if_anything_unpickled_it(tmp_path: Path) -> None:
    """The control: unpickled (in a throwaway subprocess), the payload does create its file."""
    import subprocess
    import sys

    trace = tmp_path / "control"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=_evil_pickle(trace),
        check=True,
        timeout=30,
    )
    assert trace.exists()


@pytest.mark.integration
def test_a_pickle_pushed_onto_the_analyze_queue_is_rejected_unexecuted(
    broker: str, database_url: str, redis_url: str, fake: FakeOllama, tmp_path: Path
) -> None:
    from celery import Celery
    from kombu import Connection, Exchange, Queue

    env = broker_env(pipeline_env(database_url, redis_url, fake.url, tmp_path / "m"), broker)
    trace = tmp_path / f"pickle-ran-{uuid.uuid4().hex[:6]}"
    with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, prefix="wire", loglevel="INFO") as w:
        task_id = str(uuid.uuid4())
        headers = {
            "lang": "py",
            "task": "qtrain.analyze_window",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "argsrepr": "(1, 'BTC-USDT', 0)",
            "kwargsrepr": "{}",
            "origin": "test",
        }
        queue = Queue("analyze", Exchange("analyze", durable=True), routing_key="analyze", durable=True)
        with Connection(env["CELERY_BROKER_URL"]) as conn:
            conn.Producer().publish(
                _evil_pickle(trace),
                exchange=queue.exchange,
                routing_key="analyze",
                declare=[queue],
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers=headers,
            )
        log = wait_until(
            lambda: "untrusted content" in (t := w.logs[0].read_text(errors="replace")) and t,
            timeout=60,
            what="the worker to refuse the pickle",
        )
        # the worker is still serving JSON tasks after it
        probe = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
        probe.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
        try:
            assert probe.send_task("qtrain.ping", queue="analyze").get(timeout=60) == "pong"
        finally:
            probe.close()
        with Connection(env["CELERY_BROKER_URL"]) as conn:
            left = queue(conn.default_channel).queue_declare().message_count
    assert not trace.exists(), "the pickle was executed"
    assert left == 0, "the refused message must not stay on the queue (nor come back)"
    assert "pickle" in log
