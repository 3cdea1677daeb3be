"""OllamaClient against httpx.MockTransport: payload, retries, backoff, hosts, error mapping."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from model.analyst.answer import ANSWER_SCHEMA
from worker.clients.llm import AnswerCut, ContextExceeded, LLMBadRequest, PromptTruncated
from worker.clients.ollama import ChatResult, OllamaClient
from worker.errors import (
    LLMBusy,
    LLMServerError,
    LLMTimeout,
    ModelNotFound,
    PermanentError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.settings import Settings

MODEL = "qwen2.5-coder:7b"
MSGS = [{"role": "user", "content": "hello"}]


def chat_body(content: str = '{"regime":"bull"}') -> dict[str, Any]:
    return {
        "model": MODEL,
        "created_at": "2025-01-01T00:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done_reason": "stop",
        "done": True,
        "total_duration": 5_000_000_000,
        "load_duration": 10_000_000,
        "prompt_eval_count": 321,
        "prompt_eval_duration": 400_000_000,
        "eval_count": 123,
        "eval_duration": 4_500_000_000,
    }


class Recorder:
    """A MockTransport handler that plays a script of responses and records requests.

    With ``version`` set, ``GET /api/version`` (which chat asks once per host) answers it without
    using up the script or being recorded."""

    def __init__(
        self,
        script: list[Callable[[httpx.Request], httpx.Response] | httpx.Response],
        version: str | None = None,
    ) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.version = version
        self.version_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.version is not None and request.url.path == "/api/version":
            self.version_calls += 1
            return httpx.Response(200, json={"version": self.version})
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return step(request) if callable(step) else step

    @property
    def hosts(self) -> list[str]:
        return [f"{r.url.scheme}://{r.url.host}:{r.url.port}" for r in self.requests]


def make(
    script: list[Any], hosts: tuple[str, ...] = ("http://h1:11434",), version: str | None = "0.6.2", **kw: Any
) -> tuple[OllamaClient, Recorder, list[float]]:
    rec = Recorder(script, version)
    sleeps: list[float] = []
    kw.setdefault("rng", random.Random(0))
    client = OllamaClient(
        hosts, MODEL, client=httpx.Client(transport=httpx.MockTransport(rec)), sleep=sleeps.append, **kw
    )
    return client, rec, sleeps


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


BUSY = httpx.Response(
    503, json={"error": "server busy, please try again.  maximum pending requests exceeded"}
)
NOT_FOUND = httpx.Response(404, json={"error": f'model "{MODEL}" not found, try pulling it first'})


def test_chat_payload_and_result() -> None:
    client, rec, sleeps = make([httpx.Response(200, json=chat_body("ANSWER"))], temperature=0.0, seed=7)
    res = client.chat(MSGS)
    assert res == ChatResult(
        text="ANSWER",
        prompt_tokens=321,
        completion_tokens=123,
        total_duration_ms=5000.0,
        eval_duration_ms=4500.0,
        host="http://h1:11434",
        attempts=1,
        done_reason="stop",
        constrained="format",
    )
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/api/chat"
    body = json.loads(req.content)
    assert body == {
        "model": MODEL,
        "messages": MSGS,
        "format": ANSWER_SCHEMA,
        "stream": False,
        "options": {"temperature": 0.0, "seed": 7, "num_ctx": 4096, "num_predict": 1024},
        "keep_alive": "30m",
    }
    assert sleeps == [] and rec.version_calls == 1  # 0.6.2 takes no "truncate"


def test_busy_retried_then_success_with_backoff() -> None:
    client, rec, sleeps = make([BUSY, BUSY, httpx.Response(200, json=chat_body())], backoff_base_s=1.0)
    res = client.chat(MSGS)
    assert res.attempts == 3 and len(rec.requests) == 3
    # Exponential with equal jitter: retry k waits within [cap/2, cap], cap = base * 2**(k-1).
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        (BUSY, LLMBusy),
        (httpx.Response(429, json={"error": "too many requests"}), LLMBusy),
        (httpx.Response(500, json={"error": "llama runner process has terminated"}), LLMServerError),
        (httpx.Response(502, text="bad gateway"), LLMServerError),
        (raise_(httpx.ReadTimeout("timed out")), LLMTimeout),
        (raise_(httpx.ConnectTimeout("timed out")), ServiceUnavailable),
        (raise_(httpx.ConnectError("connection refused")), ServiceUnavailable),
        (raise_(httpx.RemoteProtocolError("server disconnected")), ServiceUnavailable),
        (httpx.Response(200, text="<html>proxy</html>"), LLMServerError),
    ],
)
def test_temporary_errors_exhaust_retries(step: Any, exc: type[Exception]) -> None:
    client, rec, sleeps = make([step], max_retries=3, backoff_base_s=0.5, backoff_max_s=1.0)
    with pytest.raises(exc) as info:
        client.chat(MSGS)
    assert isinstance(info.value, TemporaryError)
    assert len(rec.requests) == 4 and len(sleeps) == 3
    assert all(0.25 <= s <= 1.0 for s in sleeps) and sleeps[-1] >= 0.5  # capped at backoff_max_s
    msg = str(info.value)
    assert "\n" not in msg and "http://h1:11434" in msg and "4 attempts" in msg
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        (NOT_FOUND, ModelNotFound),
        (httpx.Response(400, json={"error": "invalid format"}), LLMBadRequest),
        (httpx.Response(422, json={"error": "bad"}), LLMBadRequest),
    ],
)
def test_permanent_errors_are_not_retried(step: httpx.Response, exc: type[Exception]) -> None:
    client, rec, sleeps = make([step])
    with pytest.raises(exc) as info:
        client.chat(MSGS)
    assert isinstance(info.value, PermanentError)
    assert len(rec.requests) == 1 and sleeps == []


def test_model_not_found_message() -> None:
    client, _, _ = make([NOT_FOUND])
    with pytest.raises(
        ModelNotFound, match=rf"model {MODEL} is not pulled on http://h1:11434: run ollama pull {MODEL}"
    ):
        client.chat(MSGS)


def test_200_without_content_is_server_error() -> None:
    client, rec, _ = make([httpx.Response(200, json={"done": True})])
    with pytest.raises(LLMServerError, match="message.content"):
        client.chat(MSGS)
    assert len(rec.requests) == 1


def test_round_robin_across_hosts_and_retry_moves_on() -> None:
    hosts = ("http://a:1", "http://b:2", "http://c:3")
    client, rec, _ = make([httpx.Response(200, json=chat_body())], hosts=hosts, rng=random.Random(5))
    for _ in range(6):
        client.chat(MSGS)
    seen = rec.hosts
    start = hosts.index(seen[0])
    assert seen == [hosts[(start + i) % 3] for i in range(6)]
    # A failure on one host: the retry goes to the next one.
    client2, rec2, _ = make([BUSY, httpx.Response(200, json=chat_body())], hosts=hosts, rng=random.Random(5))
    res = client2.chat(MSGS)
    assert rec2.hosts == [seen[0], hosts[(start + 1) % 3]] and res.host == rec2.hosts[1] and res.attempts == 2


def test_rotation_start_depends_on_rng() -> None:
    hosts = tuple(f"http://h{i}:1" for i in range(8))
    starts = set()
    for seed in range(20):
        client, rec, _ = make([httpx.Response(200, json=chat_body())], hosts=hosts, rng=random.Random(seed))
        client.chat(MSGS)
        starts.add(rec.hosts[0])
    assert len(starts) > 2


def tags(*names: str) -> httpx.Response:
    return httpx.Response(
        200, json={"models": [{"name": n, "model": n, "size": 1, "details": {}} for n in names]}
    )


def route(
    version: str = "0.6.2", models: tuple[str, ...] = (MODEL,)
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": version})
        if request.url.path == "/api/tags":
            return tags(*models)
        return httpx.Response(404, text="404 page not found")

    return handler


def test_version_and_has_model() -> None:
    client, rec, _ = make([route()], version=None)
    assert client.version() == "0.6.2"
    assert client.has_model() is True
    assert [r.url.path for r in rec.requests] == ["/api/version", "/api/tags"]
    assert make([route(models=("llama3:latest",))], version=None)[0].has_model() is False


@pytest.mark.parametrize(
    ("wanted", "pulled", "ok"),
    [
        ("qwen2.5-coder:7b", ("qwen2.5-coder:7b",), True),
        ("llama3", ("llama3:latest",), True),
        ("llama3:latest", ("llama3",), True),
        ("qwen2.5-coder:7b", ("qwen2.5-coder:latest",), False),
        ("qwen2.5-coder", ("qwen2.5-coder:7b",), False),
    ],
)
def test_has_model_latest_defaulting(wanted: str, pulled: tuple[str, ...], ok: bool) -> None:
    client = OllamaClient(
        ["http://h:1"], wanted, client=httpx.Client(transport=httpx.MockTransport(route(models=pulled)))
    )
    assert client.has_model() is ok


def test_preflight_checks_every_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b":
            return route(models=("other:1b",))(request)
        return route()(request)

    ok = OllamaClient(["http://a:1"], MODEL, client=httpx.Client(transport=httpx.MockTransport(route())))
    assert ok.preflight() == {"http://a:1": "0.6.2"}
    bad = OllamaClient(
        ["http://a:1", "http://b:1"], MODEL, client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(
        ModelNotFound, match=rf"^model {MODEL} is not pulled on http://b:1: run ollama pull {MODEL}$"
    ):
        bad.preflight()


def test_preflight_unreachable_names_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("connection refused")
        return route()(request)

    client = OllamaClient(
        ["http://up:1", "http://down:2"], MODEL, client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(ServiceUnavailable, match="http://down:2"):
        client.preflight()


def test_from_settings_and_validation() -> None:
    s = Settings(ollama_hosts=("http://x:1", "http://y:2/"), llm_model="m:1", llm_timeout_s=12.0)
    with OllamaClient.from_settings(s) as c:
        assert c.hosts == ("http://x:1", "http://y:2") and c.model == "m:1" and c.timeout_s == 12.0
    with pytest.raises(ValueError, match="hosts"):
        OllamaClient([], MODEL)
    with pytest.raises(ValueError, match="timeout_s"):
        OllamaClient(["http://x:1"], MODEL, timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        OllamaClient(["http://x:1"], MODEL, max_retries=-1)


def test_zero_retries_one_attempt() -> None:
    client, rec, sleeps = make([BUSY], max_retries=0)
    with pytest.raises(LLMBusy, match=r"after 1 attempt\]"):
        client.chat(MSGS)
    assert len(rec.requests) == 1 and sleeps == []


def test_404_on_a_preflight_path_is_not_model_not_found() -> None:
    client, _, _ = make([httpx.Response(404, text="404 page not found")], version=None)
    with pytest.raises(LLMBadRequest, match="is this an Ollama server"):
        client.version()


# -- the budget --------------------------------------------------------------------------------

LONG = [{"role": "user", "content": "x" * 8000}]  # about 2,000 tokens


@pytest.mark.parametrize(
    ("version", "sent"),
    [("0.12.4", True), ("0.13.1", True), ("0.0.0", True), ("0.12.3", False), ("0.6.2", False)],
)
def test_truncate_false_goes_to_ollama_from_0_12_4(version: str, sent: bool) -> None:
    client, rec, _ = make(
        [httpx.Response(200, json=chat_body())], version=version, num_ctx=8192, max_tokens=256
    )
    client.chat(MSGS)
    client.chat(MSGS)
    bodies = [json.loads(r.content) for r in rec.requests]
    assert all(("truncate" in b) is sent for b in bodies) and rec.version_calls == 1  # asked once per host
    assert bodies[0]["options"]["num_ctx"] == 8192 and bodies[0]["options"]["num_predict"] == 256
    if sent:
        assert bodies[0]["truncate"] is False


def test_done_reason_length_is_an_answer_cut() -> None:
    body = {**chat_body('{"regime": "bu'), "done_reason": "length", "eval_count": 1024}
    client, _, _ = make([httpx.Response(200, json=body)])
    with pytest.raises(AnswerCut, match=r"answer cut at 1024 tokens \(QTRAIN_LLM_MAX_TOKENS=1024\)"):
        client.chat(MSGS)


def test_a_silently_cut_prompt_fails_unless_the_cache_explains_it() -> None:
    cut = {**chat_body(), "prompt_eval_count": 2048 // 4}
    client, _, _ = make([httpx.Response(200, json=cut)])
    with pytest.raises(PromptTruncated, match=r"prompt truncated by the server \(512 of about 2004 tokens\)"):
        client.chat(LONG)
    # a server reporting only the newly evaluated part, and the cached rest beside it, is whole
    cached = {**cut, "prompt_eval_cached_count": 1500}
    ok, _, _ = make([httpx.Response(200, json=cached)])
    assert ok.chat(LONG).prompt_tokens == 512


def test_ollamas_context_error_is_permanent_with_both_numbers() -> None:
    inner = {
        "error": {
            "code": 400,
            "message": "request (5001 tokens) exceeds the available context size"
            " (4096 tokens), try increasing it",
            "type": "exceed_context_size_error",
        }
    }
    client, rec, sleeps = make([httpx.Response(400, json={"error": json.dumps(inner)})], version="0.12.4")
    with pytest.raises(ContextExceeded, match=r"\(5001 tokens\) exceeds the context \(4096 tokens\)"):
        client.chat(MSGS)
    assert len(rec.requests) == 1 and sleeps == []
    too_big, rec2, _ = make([httpx.Response(200, json=chat_body())], num_ctx=2048)
    with pytest.raises(ContextExceeded, match="plus the answer cap"):
        too_big.chat(LONG)
    assert rec2.requests == []
