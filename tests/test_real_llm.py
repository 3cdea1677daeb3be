"""A real model end to end: SmolLM2-135M in the embedded ``llama_cpp.server`` (worker/embedded/llm.py).

Real Celery worker processes, Redis and PostgreSQL, and a real LLM over the OpenAI-compatible
API (QTRAIN_LLM_API=openai): no stand-in anywhere. Small on purpose (2 windows per symbol after
the indicators' warm-up, ~20-40 s a window on 2 CPU cores). Skipped with its reason when the
``llm`` extra is not installed, except under CI=true, where it must run (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.pipeline_support import ROOT, pipeline_env, qtrain, query, seed_candles
from worker.cluster.local import start_workers
from worker.embedded import llm
from worker.embedded.servers import free_port

pytestmark = pytest.mark.integration

#: Candles per symbol, warm-up left before the first window, stride: windows at 60 and 84 (2 per symbol).
CANDLES, SKIP, STRIDE = 140, 60, 24


def _need_extra() -> None:
    if llm.extra_installed():
        return
    msg = f"the llm extra is not installed ({llm.EXTRA_HINT})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + "; CI installs it")
    pytest.skip(msg)


class Engine(NamedTuple):
    """The running engine and the directory of its server logs."""

    servers: llm.LLMServers
    logs: Path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Two ``llama_cpp.server`` processes (1 thread each) serving the default weights."""
    _need_extra()
    gguf = llm.ensure_gguf(ROOT / ".qtrain")  # fetched once per checkout (CI: before going offline)
    base = tmp_path_factory.mktemp("llm")
    servers = llm.start_llm(base, gguf, llm.DEFAULT_ALIAS, processes=2, free_port=free_port)
    try:
        yield Engine(servers, base / "llm")
    finally:
        llm.stop_llm(servers)
    assert llm.running_llm(servers.to_json()) is None


def _calls(engine: Engine) -> int:
    """Chat completions the engine has answered so far (its access log, one line per request)."""
    return sum(
        log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')
        for log in sorted(engine.logs.glob("server*.log"))
    )


@pytest.fixture
def env(database_url: str, redis_url: str, engine: Engine, tmp_path: Path) -> dict[str, str]:
    seed_candles(database_url, n=CANDLES)
    e = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    e.update(
        {
            "QTRAIN_LLM_API": "openai",
            "OPENAI_BASE_URL": ",".join(engine.servers.base_urls),
            "QTRAIN_LLM_MODEL": engine.servers.model,
            "QTRAIN_LLM_MAX_TOKENS": "512",
            "OLLAMA_TIMEOUT": "600",  # a call's timeout, either API: a loaded 2-core box is slow
            "QTRAIN_MAX_ATTEMPTS": "2",
        }
    )
    return e


def _since(database_url: str) -> str:
    ((ts,),) = query(
        database_url,
        "SELECT ts FROM candles WHERE symbol = 'BTC-USDT' ORDER BY ts OFFSET %s LIMIT 1",
        (SKIP,),
    )
    return str(ts.isoformat())


def _train(env: dict[str, str], since: str, *extra: str) -> dict[str, object]:
    proc = qtrain(
        env,
        "train",
        "--symbols",
        "BTC-USDT,ETH-USDT",
        "--epochs",
        "1",
        "--since",
        since,
        "--stride",
        str(STRIDE),
        "--seed",
        "7",
        "--wait",
        "--timeout",
        "1200",
        "--json",
        *extra,
        timeout=1300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(1500)
def test_a_real_batch_through_the_embedded_model(
    env: dict[str, str], database_url: str, engine: Engine, tmp_path: Path
) -> None:
    since = _since(database_url)
    with start_workers(2, concurrency=1, env=env, log_dir=tmp_path, loglevel="INFO"):
        before = _calls(engine)
        final = _train(env, since)
        calls = _calls(engine) - before
        assert final["state"] == "done", final
        symbols = final["symbols"]
        assert isinstance(symbols, dict)
        for sym, s in symbols.items():
            assert s["total"] == 2, (sym, s)
            assert s["failed"] == 0 and s["done"] == s["total"], (sym, s)
            assert s["reduced"] and s["q_version"] == 1, (sym, s)
        assert calls >= 4
        rows = query(
            database_url,
            "SELECT a.model, a.analyst, a.prompt_tokens, a.completion_tokens, a.host, a.raw_text, a.regime"
            " FROM windows w JOIN ollama_analyses a ON a.id = w.analysis_id WHERE w.batch_id = %s",
            (final["batch_id"],),
        )
        assert len(rows) == 4
        for model, analyst, p_tok, a_tok, host, raw, regime in rows:
            assert model == llm.DEFAULT_ALIAS and analyst == "ollama"
            assert 500 < p_tok < 4096 and 0 < a_tok < 512, (p_tok, a_tok)
            assert host in engine.servers.base_urls
            assert json.loads(raw)["regime"] == regime  # the model's own JSON, stored as written

        # the same windows again (more epochs, a new batch): all cached, not one call to the model
        again = _train(env, since, "--epochs", "2")
        assert _calls(engine) - before == calls
        assert again["state"] == "done"
        again_symbols = again["symbols"]
        assert isinstance(again_symbols, dict)
        assert all(s["cached"] == s["total"] == 2 for s in again_symbols.values()), again_symbols


def test_a_model_the_engine_does_not_serve_is_refused_before_any_window(
    env: dict[str, str], database_url: str, engine: Engine
) -> None:
    proc = qtrain(
        env,
        "train",
        "--symbols",
        "BTC-USDT",
        "--model",
        "qwen2.5:7b-nowhere",
        "--since",
        _since(database_url),
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "qwen2.5:7b-nowhere" in lines[0] and re.search(r"smollm2-135m", lines[0]), lines[0]
    assert query(database_url, "SELECT count(*) FROM batches") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM windows") == [(0,)]
