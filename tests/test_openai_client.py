"""OpenAIClient against httpx.MockTransport, one server shape at a time (llama.cpp's llama-server,
llama-cpp-python, vLLM, LM Studio, Ollama's /v1), from the bodies they document or were seen to send:
payload, structured-output fallback, budget, error mapping, retries, preflight, the key."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from model.analyst.answer import ANSWER_SCHEMA, parse_answer
from worker.clients.factory import chat_client
from worker.clients.llm import (
    AnswerCut,
    AnswerRefused,
    ContextExceeded,
    LLMBadRequest,
    PromptTruncated,
)
from worker.clients.ollama import OllamaClient
from worker.clients.openai import OpenAIClient, error_info
from worker.errors import (
    BadInput,
    InvalidModelOutput,
    LLMBusy,
    LLMServerError,
    LLMTimeout,
    ModelNotFound,
    PermanentError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.settings import Settings

MODEL = "smollm2"
BASE = "http://gpu1:8000/v1"
MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "BTC-USDT window"}]
ANSWER = '{"regime": "bull", "action": "BUY", "confidence": 0.7, "rules": [], "summary": "up"}'


def completion(
    content: str | None = ANSWER, finish: str = "stop", prompt: int = 321, answer: int = 45, **extra: Any
) -> dict[str, Any]:
    """A /v1/chat/completions body as llama-server, llama-cpp-python and vLLM send it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer},
        **extra,
    }


def models_body(*ids: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "me"} for i in ids]}


class Server:
    """A MockTransport handler: ``/models`` lists ``served``; chat answers come from ``script``."""

    def __init__(self, script: list[Any], served: tuple[str, ...] = (MODEL,)) -> None:
        self.script = list(script)
        self.served = served
        self.chats: list[httpx.Request] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=models_body(*self.served))
        self.chats.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return step(request) if callable(step) else step

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.chats]


def make(
    script: list[Any], hosts: tuple[str, ...] = (BASE,), served: tuple[str, ...] = (MODEL,), **kw: Any
) -> tuple[OpenAIClient, Server, list[float]]:
    server = Server(script, served)
    sleeps: list[float] = []
    kw.setdefault("rng", random.Random(0))
    client = OpenAIClient(
        hosts, MODEL, client=httpx.Client(transport=httpx.MockTransport(server)), sleep=sleeps.append, **kw
    )
    return client, server, sleeps


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


# llama-cpp-python 0.3.36, seen against the real server: json_schema is a 500 naming response_format.
LLAMA_CPP_PYTHON_REFUSES_SCHEMA = httpx.Response(
    500,
    json={
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', "
            "'loc': ('body', 'response_format', 'type'),"
            " 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}\n\n  File"
            ' "llama_cpp/server/app.py", line 376, in create_chat_completion\n'
            "    POST /v1/chat/completions",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)
LMSTUDIO_REFUSES_OBJECT = httpx.Response(400, json={"error": "'response_format.type' must be 'json_schema'"})


def test_payload_standard_shape_and_result() -> None:
    body = completion(
        timings={"prompt_n": 300, "prompt_ms": 120.5, "predicted_n": 45, "predicted_ms": 900.25}
    )
    client, server, sleeps = make([httpx.Response(200, json=body)], seed=7, max_tokens=512)
    res = client.chat(MSGS)
    assert (res.text, res.prompt_tokens, res.completion_tokens, res.done_reason) == (ANSWER, 321, 45, "stop")
    assert res.host == BASE and res.attempts == 1 and res.constrained == "json_schema"
    assert res.eval_duration_ms == 900.25 and res.total_duration_ms is not None and res.total_duration_ms >= 0
    (req,) = server.chats
    assert req.method == "POST" and str(req.url) == f"{BASE}/chat/completions"
    assert "authorization" not in req.headers
    assert server.bodies()[0] == {
        "model": MODEL,
        "messages": MSGS,
        "temperature": 0.0,
        "seed": 7,
        "max_tokens": 512,
        "stream": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "qtrain_analysis", "schema": ANSWER_SCHEMA, "strict": True},
        },
    }
    assert sleeps == []


def test_llama_cpp_python_falls_back_to_json_object_once_and_remembers_the_host() -> None:
    client, server, sleeps = make([LLAMA_CPP_PYTHON_REFUSES_SCHEMA, httpx.Response(200, json=completion())])
    first = client.chat(MSGS)
    second = client.chat(MSGS)
    shapes = [b["response_format"]["type"] for b in server.bodies()]
    assert shapes == ["json_schema", "json_object", "json_object"]  # the refusal is not asked again
    assert server.bodies()[1]["response_format"] == {"type": "json_object", "schema": ANSWER_SCHEMA}
    assert first.constrained == second.constrained == "json_object" and first.attempts == 1
    assert sleeps == []  # a refused shape is not a retry with backoff


def test_a_host_that_takes_neither_shape_is_one_permanent_line() -> None:
    client, server, sleeps = make([LLAMA_CPP_PYTHON_REFUSES_SCHEMA, LMSTUDIO_REFUSES_OBJECT])
    with pytest.raises(LLMBadRequest, match="takes neither response_format shape") as info:
        client.chat(MSGS)
    assert "\n" not in str(info.value) and len(server.chats) == 2 and sleeps == []


def test_lm_studio_standard_shape_needs_no_fallback() -> None:
    client, server, _ = make([httpx.Response(200, json=completion())])
    assert client.chat(MSGS).constrained == "json_schema" and len(server.chats) == 1


def test_a_server_that_ignores_the_shape_answers_prose_and_the_parser_counts_it() -> None:
    from model.analyst.answer import note_schema_ignored

    prose = f"Sure! Here is the analysis:\n```json\n{ANSWER}\n```"
    client, _, _ = make([httpx.Response(200, json=completion(prose))])
    res = client.chat(MSGS)
    analysis = note_schema_ignored(parse_answer(res.text))
    assert analysis.repairs["schema_ignored"] == 1 and analysis.regime == "bull"


def test_finish_reason_length_is_an_answer_cut_at_the_cap() -> None:
    client, _, _ = make(
        [httpx.Response(200, json=completion('{"regime": "bu', finish="length", answer=64))], max_tokens=64
    )
    with pytest.raises(AnswerCut, match=r"answer cut at 64 tokens \(QTRAIN_LLM_MAX_TOKENS=64\)"):
        client.chat(MSGS)


def test_a_prompt_the_server_cut_fails_with_both_sizes() -> None:
    long = [{"role": "user", "content": "x" * 8000}]  # about 2,000 tokens
    client, _, _ = make([httpx.Response(200, json=completion(prompt=512))])
    with pytest.raises(PromptTruncated, match=r"prompt truncated by the server \(512 of about 2004 tokens\)"):
        client.chat(long)
    ok, _, _ = make([httpx.Response(200, json=completion(prompt=2300))])
    assert ok.chat(long).prompt_tokens == 2300


def test_a_prompt_that_cannot_fit_is_refused_before_any_request() -> None:
    client, server, _ = make([httpx.Response(200, json=completion())], num_ctx=2048, max_tokens=1024)
    with pytest.raises(ContextExceeded, match=r"about 1254 tokens\) plus the answer cap \(1024\)"):
        client.chat([{"role": "user", "content": "y" * 5000}])
    assert server.requests == []


@pytest.mark.parametrize(
    ("body", "asked", "ctx"),
    [
        # llama.cpp llama-server
        (
            {
                "error": {
                    "code": 400,
                    "message": "request (5012 tokens) exceeds the available context size"
                    " (4096 tokens), try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5012,
                    "n_ctx": 4096,
                }
            },
            "5012",
            "4096",
        ),
        # llama-cpp-python (seen against the real server)
        (
            {
                "error": {
                    "message": "This model's maximum context length is 4096 tokens. However, you"
                    " requested 6034 tokens (6031 in the messages, 3 in the completion). Please reduce the"
                    " length of the messages or completion.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            "6034",
            "4096",
        ),
        # vLLM, flat error body
        (
            {
                "object": "error",
                "message": "This model's maximum context length is 2048 tokens. However, your"
                " request has 3000 input tokens. Please reduce the length of the input messages.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            "3000",
            "2048",
        ),
    ],
)
def test_context_exceeded_is_permanent_with_both_numbers(body: dict[str, Any], asked: str, ctx: str) -> None:
    client, server, sleeps = make([httpx.Response(400, json=body)])
    with pytest.raises(ContextExceeded) as info:
        client.chat(MSGS)
    msg = str(info.value)
    assert f"{asked} tokens asked, context {ctx} tokens" in msg and "\n" not in msg
    assert len(server.chats) == 1 and sleeps == []


@pytest.mark.parametrize(
    "step",
    [
        # vLLM: an unknown model is a 404 with the flat body
        httpx.Response(
            404,
            json={
                "object": "error",
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        ),
        # Ollama's /v1
        httpx.Response(
            404,
            json={
                "error": {
                    "message": 'model "nope" not found, try pulling it first',
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        # LM Studio
        httpx.Response(400, json={"error": "Model 'nope' not found. Load it first."}),
    ],
)
def test_unknown_model_is_permanent_and_names_the_served_ones(step: httpx.Response) -> None:
    client, server, sleeps = make([step], served=("smollm2", "qwen2.5-7b-instruct"))
    with pytest.raises(
        ModelNotFound, match=r"not served by http://gpu1:8000/v1 \(it serves: smollm2, qwen2.5"
    ):
        client.chat(MSGS)
    assert len(server.chats) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        (
            httpx.Response(429, json={"error": {"message": "Too many requests", "type": "rate_limit_error"}}),
            LLMBusy,
        ),
        # llama-server while it loads the model
        (
            httpx.Response(
                503, json={"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
            ),
            LLMBusy,
        ),
        (
            httpx.Response(500, json={"object": "error", "message": "CUDA out of memory", "code": 500}),
            LLMServerError,
        ),
        (httpx.Response(502, text="<html>bad gateway</html>"), LLMServerError),
        (httpx.Response(200, text="<html>proxy</html>"), LLMServerError),
        (raise_(httpx.ReadTimeout("timed out")), LLMTimeout),
        (raise_(httpx.ConnectError("connection refused")), ServiceUnavailable),
    ],
)
def test_temporary_errors_are_retried_then_raised(step: Any, exc: type[Exception]) -> None:
    client, server, sleeps = make([step], max_retries=2, backoff_base_s=0.5, backoff_max_s=1.0)
    with pytest.raises(exc) as info:
        client.chat(MSGS)
    assert isinstance(info.value, TemporaryError) and len(server.chats) == 3 and len(sleeps) == 2
    msg = str(info.value)
    assert "\n" not in msg and BASE in msg and "3 attempts" in msg and msg.startswith("openai ")


def test_a_200_without_choices_is_temporary_for_the_task_to_retry() -> None:
    client, server, _ = make([httpx.Response(200, json={"object": "chat.completion", "choices": []})])
    with pytest.raises(LLMServerError, match="answer has no choices"):
        client.chat(MSGS)
    assert len(server.chats) == 1


def test_busy_then_success_moves_to_the_next_host() -> None:
    hosts = ("http://a:1/v1", "http://b:2/v1")
    busy = httpx.Response(503, json={"error": {"code": 503, "message": "Loading model"}})
    client, server, sleeps = make([busy, httpx.Response(200, json=completion())], hosts=hosts)
    res = client.chat(MSGS)
    seen = [f"{r.url.scheme}://{r.url.host}:{r.url.port}/v1" for r in server.chats]
    assert seen[0] != seen[1] and res.host == seen[1] and res.attempts == 2 and len(sleeps) == 1


def test_round_robin_across_base_urls() -> None:
    hosts = ("http://a:1/v1", "http://b:2/v1", "http://c:3/v1")
    client, server, _ = make([httpx.Response(200, json=completion())], hosts=hosts, rng=random.Random(3))
    for _ in range(6):
        client.chat(MSGS)
    seen = [r.url.host for r in server.chats]
    start = "abc".index(seen[0])
    assert seen == ["abc"[(start + i) % 3] for i in range(6)]


def test_the_key_is_sent_as_bearer_and_never_shown() -> None:
    secret = "sk-test-DO-NOT-PRINT-1234"
    unauthorized = httpx.Response(
        401, json={"error": {"message": "Invalid API Key", "type": "authentication_error"}}
    )
    client, server, _ = make([unauthorized], api_key=secret)
    with pytest.raises(LLMBadRequest, match="check OPENAI_API_KEY") as info:
        client.chat(MSGS)
    assert server.chats[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in str(info.value) and secret not in repr(client) and "api_key=set" in repr(client)
    settings = Settings.from_env({"QTRAIN_LLM_API": "openai", "OPENAI_API_KEY": secret})
    assert secret not in repr(settings) and secret not in str(settings)


def test_hostile_answers_are_refused() -> None:
    huge = httpx.Response(
        200, content=b'{"choices": [{"message": {"content": "' + b"a" * 5_000_000 + b'"}}]}'
    )
    client, _, _ = make([huge], max_retries=0)
    with pytest.raises(AnswerRefused, match="larger than 4,194,304 bytes"):
        client.chat(MSGS)
    deep = httpx.Response(200, json=completion("[" * 1000 + "]" * 1000))
    client, _, _ = make([deep], max_retries=0)
    with pytest.raises(InvalidModelOutput, match="nested deeper than 64 levels"):
        client.chat(MSGS)
    assert issubclass(AnswerRefused, PermanentError)


def test_preflight_lists_the_model_on_every_base_url() -> None:
    client, server, _ = make([httpx.Response(200, json=completion())], served=("smollm2",))
    assert client.preflight() == {BASE: "smollm2"}
    assert [r.url.path for r in server.requests] == ["/v1/models"]
    # llama-cpp-python would answer an unknown model with its default one: refused here, in one line
    wrong = OpenAIClient(
        [BASE], "nope", client=httpx.Client(transport=httpx.MockTransport(Server([], ("smollm2",))))
    )
    with pytest.raises(
        ModelNotFound, match=r"^model nope is not served by http://gpu1:8000/v1 \(it serves: smollm2\)"
    ):
        wrong.preflight()
    # Ollama's /v1 lists "name:latest" for "name"
    ollama = OpenAIClient(
        [BASE], "llama3", client=httpx.Client(transport=httpx.MockTransport(Server([], ("llama3:latest",))))
    )
    assert ollama.preflight() == {BASE: "llama3:latest"}


def test_preflight_failures_name_the_base_url() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = OpenAIClient(
        ["http://down:9/v1"], MODEL, client=httpx.Client(transport=httpx.MockTransport(down))
    )
    with pytest.raises(ServiceUnavailable, match=r"http://down:9/v1.*OPENAI_BASE_URL"):
        client.preflight()
    not_found = httpx.MockTransport(lambda r: httpx.Response(404, json={"detail": "Not Found"}))
    no_v1 = OpenAIClient(["http://h:8000"], MODEL, client=httpx.Client(transport=not_found))
    with pytest.raises(LLMBadRequest, match="OPENAI_BASE_URL end in /v1"):
        no_v1.preflight()


@pytest.mark.parametrize(
    ("raw", "message", "code"),
    [
        (b'{"error": {"message": "m1", "type": "t1", "code": "c1"}}', "m1", "c1"),
        (b'{"error": "plain text error"}', "plain text error", ""),
        (
            b'{"object": "error", "message": "flat", "type": "BadRequestError", "code": 400}',
            "flat",
            "BadRequestError",
        ),
        (
            b'{"detail": [{"loc": ["body"], "msg": "field required"}]}',
            '[{"loc": ["body"], "msg": "field required"}]',
            "",
        ),
        (b"<html>\n oops \n</html>", "<html> oops </html>", ""),
    ],
)
def test_error_bodies_of_every_shape_are_read(raw: bytes, message: str, code: str) -> None:
    got_message, got_code, _ = error_info(raw)
    assert (got_message, got_code) == (message, code)


def test_settings_and_factory_choose_the_api() -> None:
    env = {
        "QTRAIN_LLM_API": "openai",
        "OPENAI_BASE_URL": "http://a:8000/v1/, b:8001/v1",
        "OLLAMA_MODEL": "old",
        "QTRAIN_LLM_MODEL": "smollm2",
        "QTRAIN_LLM_NUM_CTX": "8192",
        "QTRAIN_LLM_MAX_TOKENS": "256",
    }
    s = Settings.from_env(env)
    assert (
        s.openai_base_urls == ("http://a:8000/v1", "http://b:8001/v1") and s.llm_hosts == s.openai_base_urls
    )
    assert (s.llm_model, s.llm_num_ctx, s.llm_max_tokens) == ("smollm2", 8192, 256)
    with chat_client(s) as client:
        assert isinstance(client, OpenAIClient) and client.model == "smollm2" and client.max_tokens == 256
    ollama = Settings.from_env({"OLLAMA_MODEL": "llama3:8b"})
    assert ollama.llm_api == "ollama" and ollama.llm_model == "llama3:8b"
    with chat_client(replace(ollama, llm_model="other:1b")) as client:
        assert isinstance(client, OllamaClient) and client.model == "other:1b" and client.num_ctx == 4096
    for bad in (
        {"QTRAIN_LLM_API": "anthropic"},
        {"QTRAIN_LLM_NUM_CTX": "lots"},
        {"QTRAIN_LLM_MAX_TOKENS": "0"},
    ):
        with pytest.raises(BadInput, match=next(iter(bad))):
            Settings.from_env(bad)
