"""One vocabulary for the LLM: the model's one resolution order, ``--analyst llm`` stored as before,
the attempt loop owned by ``HttpLLM`` (a backend gives only its wire format), and no Ollama name
in the OpenAI-compatible client."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.clients.llm import ChatResult, HttpLLM
from worker.errors import BadInput, LLMBusy, LLMServerError, LLMTimeout, TemporaryError
from worker.pipeline import dispatch, schedule
from worker.settings import DEFAULT_LLM_MODEL, LLM_ANALYST, Settings, stored_analyst

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("env", "model"),
    [
        ({}, DEFAULT_LLM_MODEL),
        ({"OLLAMA_MODEL": "llama3:8b"}, "llama3:8b"),
        ({"QTRAIN_LLM_MODEL": "smollm2", "OLLAMA_MODEL": "llama3:8b"}, "smollm2"),
        ({"QTRAIN_LLM_MODEL": "  ", "OLLAMA_MODEL": " llama3:8b "}, "llama3:8b"),
        ({"QTRAIN_LLM_MODEL": "smollm2", "QTRAIN_LLM_API": "openai"}, "smollm2"),
        ({"OLLAMA_MODEL": "", "QTRAIN_LLM_MODEL": ""}, DEFAULT_LLM_MODEL),
    ],
)
def test_the_model_has_one_resolution_order(env: dict[str, str], model: str) -> None:
    from worker.clients.factory import chat_client

    s = Settings.from_env(env)
    assert s.llm_model == model
    with chat_client(s) as client:
        assert client.model == model


def test_the_timeout_is_read_from_ollama_timeout_for_either_api() -> None:
    for api in ("ollama", "openai"):
        s = Settings.from_env({"OLLAMA_TIMEOUT": "12.5", "QTRAIN_LLM_API": api})
        assert s.llm_timeout_s == 12.5


def test_analyst_llm_is_stored_as_ollama_and_ollama_still_reads() -> None:
    assert stored_analyst("llm") == stored_analyst("ollama") == LLM_ANALYST == "ollama"
    assert stored_analyst("heuristic") == "heuristic"
    for name in ("llm", "ollama"):
        req = dispatch.TrainRequest(symbols=("BTC-USDT",), analyst=name)
        req.check()
        assert req.analyst == "ollama"
        cfg = schedule.RetrainConfig.from_env(
            {
                "QTRAIN_RETRAIN_SYMBOLS": "BTC-USDT",
                "QTRAIN_RETRAIN_EVERY_S": "60",
                "QTRAIN_RETRAIN_ANALYST": name,
            }
        )
        assert cfg.analyst == "ollama"
    with pytest.raises(BadInput, match="--analyst must be one of llm, ollama, heuristic, got 'gpt'"):
        dispatch.TrainRequest(symbols=("BTC-USDT",), analyst="gpt").check()


def test_train_cli_takes_analyst_llm() -> None:
    from click.testing import CliRunner

    from producer.cli import cli

    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    choices = re.search(r"--analyst \[([a-z|]+)\]", out)
    assert choices is not None and set(choices.group(1).split("|")) == {"llm", "ollama", "heuristic"}, out
    assert "default: llm" in out


class Echo(HttpLLM):
    """A backend of a few lines: its wire format only (the body it sends, the answer it reads)."""

    api = "echo"
    num_ctx = 4096
    max_tokens = 64

    def _post_chat(self, host: str, messages: Sequence[dict[str, str]], format: Any) -> tuple[Any, str]:
        return self._send("POST", host, "/echo", json={"m": self.model, "n": len(messages)}), ""

    def _result(
        self, body: Any, host: str, attempt: int, constrained: str, estimate: int, elapsed_ms: float
    ) -> ChatResult:
        return ChatResult(str(body["text"]), None, None, elapsed_ms, None, host, attempt)


def echo(answers: list[httpx.Response | Exception], retries: int = 3) -> tuple[Echo, list[str], list[float]]:
    """An ``Echo`` over two hosts whose server gives ``answers`` in order; (client, hosts asked, sleeps)."""
    hosts: list[str] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = Echo(
        ["http://a:1", "http://b:2"],
        "m",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        timeout_s=5,
        max_retries=retries,
        backoff_base_s=0.5,
        backoff_max_s=30,
        sleep=sleeps.append,
        rng=random.Random(1),
        clock=lambda: 0.0,
        max_response_bytes=1 << 20,
    )
    return client, hosts, sleeps


def test_the_base_owns_the_attempt_loop_and_the_shared_statuses() -> None:
    ok = httpx.Response(200, json={"text": "hi"})
    client, hosts, sleeps = echo([httpx.Response(503, text="busy"), httpx.ReadTimeout("slow"), ok])
    result = client.chat([{"role": "user", "content": "x"}])
    assert (result.text, result.attempts, len(sleeps)) == ("hi", 3, 2)
    assert hosts[0] != hosts[1] and hosts[0] == hosts[2]  # rotated host by host
    for answer, kind, text in (
        (httpx.Response(429, text="slow down"), LLMBusy, "echo http://"),
        (httpx.Response(502, text="gateway"), LLMServerError, ": HTTP 502 (gateway)"),
        (httpx.ReadTimeout("slow"), LLMTimeout, "no answer within 5 s"),
    ):
        client, hosts, sleeps = echo([answer], retries=0)
        with pytest.raises(kind, match=re.escape(text)) as info:
            client.chat([{"role": "user", "content": "x"}])
        assert isinstance(info.value, TemporaryError) and "[gave up after 1 attempt]" in str(info.value)


def test_the_openai_compatible_client_names_no_ollama() -> None:
    text = (ROOT / "worker" / "clients" / "openai.py").read_text()
    assert re.search("ollama", text, re.IGNORECASE) is None
