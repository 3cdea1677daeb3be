"""The client and parser against the fake Ollama server over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from model.analyst.answer import ANSWER_SCHEMA, AnswerError, parse_answer
from tests.fake_ollama import BUSY_ERROR, FakeOllama, FakeOllamaProcess, default_answer
from worker.clients.llm import LLMBadRequest
from worker.clients.ollama import OllamaClient
from worker.errors import LLMBusy, LLMServerError, LLMTimeout, ModelNotFound, ServiceUnavailable

MODEL = "qwen2.5-coder:7b"
MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "BTC-USDT window 1"}]
PROMPT = "sys\nBTC-USDT window 1"


def client_for(fake: FakeOllama | FakeOllamaProcess, **kw: Any) -> OllamaClient:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("timeout_s", 5.0)
    return OllamaClient([fake.url], kw.pop("model", MODEL), **kw)


@pytest.fixture
def fake() -> Any:
    with FakeOllama() as f:
        yield f


def test_default_answer_is_valid_and_deterministic(fake: FakeOllama) -> None:
    with client_for(fake) as c:
        r1, r2 = c.chat(MSGS), c.chat(MSGS)
        other = c.chat([{"role": "user", "content": "ETH-USDT window 9"}])
    assert r1.text == r2.text == json.dumps(default_answer(PROMPT))
    assert other.text != r1.text
    a = parse_answer(r1.text)
    assert a.repairs == {} and len(a.rules) == 3
    assert r1.prompt_tokens and r1.completion_tokens and r1.total_duration_ms is not None
    assert r1.host == fake.url and r1.attempts == 1
    s = fake.stats()
    # the version is asked once per host (does it take "truncate": false?), then only chats
    assert s["calls"] == {"/api/version": 1, "/api/chat": 3} and s["llm_calls"] == 3 and s["busy"] == 0


CONTENT_MODES = [
    ("null_fields", {"null_field": 3}),
    ("string_numbers", {"string_number": 5}),
    ("code_fence", {"code_fence": 1}),
    ("prose", {"prose_stripped": 1}),
    ("enum_case", {"enum_case": 3}),
    ("out_of_range", {"clamped": 2}),
    ("unknown_feature", {"unknown_feature_dropped": 1, "rule_dropped": 1}),
]


@pytest.mark.parametrize(("mode", "repairs"), CONTENT_MODES, ids=[m for m, _ in CONTENT_MODES])
def test_content_faults_are_repaired(fake: FakeOllama, mode: str, repairs: dict[str, int]) -> None:
    fake.configure(faults=[{"mode": mode}])
    with client_for(fake) as c:
        a = parse_answer(c.chat(MSGS).text)
    for key, n in repairs.items():
        assert a.repairs.get(key, 0) >= n, (key, a.repairs)
    assert 0 <= a.confidence <= 1
    assert fake.stats()["faults_applied"] == {mode: 1}


@pytest.mark.parametrize("mode", ["truncated", "not_json"])
def test_unreadable_content_raises_answer_error(fake: FakeOllama, mode: str) -> None:
    fake.configure(faults=[{"mode": mode}])
    with client_for(fake) as c:
        text = c.chat(MSGS).text
    with pytest.raises(AnswerError):
        parse_answer(text)


@pytest.mark.parametrize(
    ("mode", "exc", "requests"),
    [
        ("http_500", LLMServerError, 3),
        ("http_503", LLMBusy, 3),
        ("close", ServiceUnavailable, 3),
        ("http_404", ModelNotFound, 1),
        ("http_400", LLMBadRequest, 1),
    ],
)
def test_http_faults_map_to_errors(fake: FakeOllama, mode: str, exc: type[Exception], requests: int) -> None:
    fake.configure(faults=[{"mode": mode}])
    with client_for(fake, max_retries=2) as c, pytest.raises(exc, match=fake.url):
        c.chat(MSGS)
    assert fake.stats()["llm_calls"] == requests


def test_transient_fault_then_success(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "http_503", "times": 2}])
    with client_for(fake, max_retries=3) as c:
        res = c.chat(MSGS)
    assert res.attempts == 3 and parse_answer(res.text).repairs == {}
    assert fake.stats()["busy"] == 2


def test_fault_by_call_index_and_match(fake: FakeOllama) -> None:
    fake.configure(
        faults=[{"mode": "code_fence", "calls": [2]}, {"mode": "prose", "match": "ETH-USDT"}],
    )
    eth = [{"role": "user", "content": "ETH-USDT window"}]
    with client_for(fake) as c:
        texts = [c.chat(MSGS).text, c.chat(MSGS).text, c.chat(eth).text, c.chat(MSGS).text]
    assert texts[0].startswith("{") and texts[3].startswith("{")
    assert texts[1].startswith("```json") and texts[2].startswith("Here is")


def test_hang_past_timeout(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "hang"}], hang_s=3.0)
    with client_for(fake, timeout_s=0.3, max_retries=1) as c, pytest.raises(LLMTimeout, match="0.3"):
        c.chat(MSGS)
    assert fake.stats()["llm_calls"] == 2


def test_hang_shorter_than_timeout_drops_the_connection(fake: FakeOllama) -> None:
    fake.configure(faults=[{"mode": "hang", "times": 1}], hang_s=0.2)
    with (
        client_for(fake, timeout_s=5.0, max_retries=0) as c,
        pytest.raises(ServiceUnavailable, match=fake.url),
    ):
        c.chat(MSGS)


def test_not_an_ollama_server(fake: FakeOllama) -> None:
    with (
        OllamaClient([fake.url + "/nope"], MODEL) as c,
        pytest.raises(LLMBadRequest, match="Ollama server"),
    ):
        c.preflight()


def test_connection_refused_after_stop() -> None:
    fake = FakeOllama().start()
    url = fake.url
    with client_for(fake, max_retries=1) as c:
        c.chat(MSGS)
        fake.stop()
        with pytest.raises(ServiceUnavailable, match=url):
            c.chat(MSGS)
        with pytest.raises(ServiceUnavailable, match=url):
            c.preflight()
        fake.start()  # same port again
        try:
            assert fake.url == url and c.chat(MSGS).attempts == 1
        finally:
            fake.stop()


def test_unknown_model_is_404(fake: FakeOllama) -> None:
    with client_for(fake, model="llama3:8b") as c:
        with pytest.raises(ModelNotFound, match="ollama pull llama3:8b"):
            c.preflight()
        with pytest.raises(ModelNotFound):
            c.chat(MSGS)
    resp = httpx.post(f"{fake.url}/api/chat", json={"model": "llama3:8b", "messages": [], "stream": False})
    assert resp.status_code == 404 and resp.json() == {
        "error": 'model "llama3:8b" not found, try pulling it first'
    }


def test_preflight_ok(fake: FakeOllama) -> None:
    with client_for(fake) as c:
        assert c.preflight() == {fake.url: "0.6.2"}


def _concurrent_chats(c: OllamaClient, n: int) -> list[Any]:
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = c.chat(MSGS)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_parallel_slots_and_queue() -> None:
    with FakeOllama(latency_s=0.2, num_parallel=2, max_queue=10) as fake, client_for(fake) as c:
        out = _concurrent_chats(c, 6)
        assert all(not isinstance(r, Exception) for r in out)
        s = fake.stats()
        assert s["max_in_flight"] == 2 and s["busy"] == 0 and s["max_pending"] >= 3
        assert s["max_concurrent"] >= 5
        # Six 0.2 s calls on two slots: the slots were busy about 1.2 s in total, nearly all the time.
        assert 1.1 <= s["slot_seconds"] <= 2.0
        assert 0.8 <= s["slot_utilisation"] <= 1.0
        assert s["last_request"] == {
            "model": MODEL,
            "format": ANSWER_SCHEMA,
            "stream": False,
            "options": {"temperature": 0.0, "seed": 42, "num_ctx": 4096, "num_predict": 1024},
            "keep_alive": "30m",
        }


def test_busy_past_the_queue() -> None:
    with FakeOllama(latency_s=0.3, num_parallel=1, max_queue=1) as fake, client_for(fake, max_retries=0) as c:
        out = _concurrent_chats(c, 5)
        busy = [r for r in out if isinstance(r, LLMBusy)]
        ok = [r for r in out if not isinstance(r, Exception)]
        s = fake.stats()
        assert len(busy) == s["busy"] >= 1 and len(ok) >= 2 and len(busy) + len(ok) == 5
        assert s["max_in_flight"] == 1
        resp = httpx.post(f"{fake.url}/api/chat", json={"model": MODEL, "messages": [], "stream": False})
        assert resp.status_code == 200  # idle again


def test_busy_body_is_ollamas() -> None:
    with FakeOllama(faults=[{"mode": "http_503"}]) as fake:
        resp = httpx.post(f"{fake.url}/api/chat", json={"model": MODEL, "messages": MSGS, "stream": False})
    assert resp.status_code == 503 and resp.json() == {"error": BUSY_ERROR}


def test_response_shapes(fake: FakeOllama) -> None:
    chat = httpx.post(f"{fake.url}/api/chat", json={"model": MODEL, "messages": MSGS, "stream": False}).json()
    assert set(chat) == {
        "model",
        "created_at",
        "message",
        "done_reason",
        "done",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    }
    assert chat["message"]["role"] == "assistant" and chat["done"] is True
    gen = httpx.post(
        f"{fake.url}/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}
    ).json()
    assert isinstance(gen["response"], str) and gen["done"] is True and "context" in gen
    stream = httpx.post(f"{fake.url}/api/chat", json={"model": MODEL, "messages": MSGS})
    lines = [json.loads(x) for x in stream.text.splitlines()]
    assert [x["done"] for x in lines] == [False, True]
    assert "".join(x["message"]["content"] for x in lines) == chat["message"]["content"]
    tags = httpx.get(f"{fake.url}/api/tags").json()
    assert tags["models"][0]["name"] == MODEL and "details" in tags["models"][0]
    assert httpx.get(f"{fake.url}/api/version").json() == {"version": "0.6.2"}
    assert fake.stats()["calls"] == {"/api/chat": 2, "/api/generate": 1, "/api/tags": 1, "/api/version": 1}


def test_http_control_endpoints(fake: FakeOllama) -> None:
    r = httpx.post(f"{fake.url}/_fake/config", json={"faults": [{"mode": "code_fence"}], "latency_s": 0.01})
    assert r.status_code == 200 and r.json()["latency_s"] == 0.01
    with client_for(fake) as c:
        assert c.chat(MSGS).text.startswith("```")
    assert httpx.get(f"{fake.url}/_fake/stats").json()["llm_calls"] == 1
    assert httpx.post(f"{fake.url}/_fake/config", json={"faults": [{"mode": "bogus"}]}).status_code == 400
    assert httpx.post(f"{fake.url}/_fake/config", json={"colour": 1}).status_code == 400
    httpx.post(f"{fake.url}/_fake/reset", json={})
    s = fake.stats()
    assert s["llm_calls"] == 0 and s["calls_total"] == 0 and s["faults_applied"] == {}


def test_subprocess_server() -> None:
    with FakeOllamaProcess(
        "--latency", "0.01", "--faults", json.dumps([{"mode": "prose", "calls": [1]}])
    ) as proc:
        with client_for(proc) as c:
            assert c.preflight() == {proc.url: "0.6.2"}
            first, second = c.chat(MSGS), c.chat(MSGS)
        assert parse_answer(first.text).repairs == {"prose_stripped": 1}
        assert parse_answer(second.text).repairs == {}
        s = proc.stats()
        assert s["llm_calls"] == 2 and s["calls"]["/api/chat"] == 2
        proc.configure(faults=[{"mode": "http_500"}])
        with client_for(proc, max_retries=0) as c, pytest.raises(LLMServerError):
            c.chat(MSGS)
        proc.reset()
        assert proc.stats()["calls_total"] == 0
        pid_proc = proc.proc
    assert pid_proc is not None and pid_proc.returncode is not None


def test_round_trip_is_fast(fake: FakeOllama) -> None:
    """The fake adds ~1 ms per call, not the 40 ms of Nagle + delayed ACK on keep-alive."""
    import statistics
    import time

    with client_for(fake) as c:
        c.chat(MSGS)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            c.chat(MSGS)
            times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.02, statistics.median(times)


# -- the budget, both APIs, and the OpenAI-compatible mode ---------------------------------------

LONG = [
    {"role": "system", "content": "s" * 6000},
    {"role": "user", "content": "BTC-USDT " * 300},
]  # ~2,180 tokens


def test_ollama_cuts_a_long_prompt_silently_and_the_client_catches_it(fake: FakeOllama) -> None:
    """Ollama (no ``truncate`` flag) reads only num_ctx tokens and answers 200: the window fails."""
    from worker.clients.llm import PromptTruncated

    fake.configure(faults=[{"mode": "truncated_prompt"}])
    with (
        client_for(fake) as c,
        pytest.raises(PromptTruncated, match=r"prompt truncated by the server \(\d+ of"),
    ):
        c.chat(LONG)


def test_an_ollama_from_0_12_4_is_sent_truncate_false_and_overflows_with_a_400(fake: FakeOllama) -> None:
    from worker.clients.llm import ContextExceeded

    fake.configure(version="0.12.4", faults=[{"mode": "context_exceeded", "times": 1}])
    with client_for(fake, num_ctx=2048, max_tokens=16) as c:
        with pytest.raises(ContextExceeded, match=r"\(2049 tokens\) exceeds the context \(2048 tokens\)"):
            c.chat(LONG[1:])  # about 680 tokens: the client's estimate lets it go, the server refuses
        assert fake.stats()["last_request"]["truncate"] is False
        assert fake.stats()["last_request"]["options"]["num_ctx"] == 2048
        with pytest.raises(ContextExceeded, match="plus the answer cap"):
            c.chat(LONG)  # about 2,180 tokens: refused before it is sent
    fake.configure(version="0.12.3")
    with client_for(fake) as c:
        c.chat(MSGS)
        assert "truncate" not in fake.stats()["last_request"]


def test_an_answer_at_the_cap_is_cut_on_both_apis(fake: FakeOllama) -> None:
    from worker.clients.llm import AnswerCut
    from worker.clients.openai import OpenAIClient

    with client_for(fake, max_tokens=20) as c, pytest.raises(AnswerCut, match="answer cut at 20 tokens"):
        c.chat(MSGS)
    with (
        OpenAIClient([fake.openai_url], MODEL, max_tokens=20) as o,
        pytest.raises(AnswerCut, match=r"answer cut at 20 tokens \(QTRAIN_LLM_MAX_TOKENS=20\)"),
    ):
        o.chat(MSGS)


@pytest.mark.parametrize("flavor", ["llama.cpp", "llama-cpp-python", "lmstudio"])
def test_openai_mode_answers_like_each_server(fake: FakeOllama, flavor: str) -> None:
    from worker.clients.openai import OpenAIClient

    fake.configure(flavor=flavor)
    with OpenAIClient([fake.openai_url], MODEL, max_retries=0) as o:
        assert o.preflight() == {fake.openai_url: MODEL}
        first, second = o.chat(MSGS), o.chat(MSGS)
    assert first.text == json.dumps(default_answer(PROMPT)) and parse_answer(first.text).repairs == {}
    assert first.prompt_tokens == len(PROMPT.replace("\n", "")) // 4 + 8 and first.completion_tokens
    want = "json_object" if flavor == "llama-cpp-python" else "json_schema"
    assert first.constrained == second.constrained == want
    calls = fake.stats()["calls"]
    assert calls["/v1/models"] == 1 and calls["/v1/chat/completions"] == (3 if want == "json_object" else 2)


def test_openai_mode_unknown_model_and_faults(fake: FakeOllama) -> None:
    from worker.clients.llm import ContextExceeded
    from worker.clients.openai import OpenAIClient

    with OpenAIClient([fake.openai_url], "nope:1b", max_retries=0) as o:
        with pytest.raises(ModelNotFound, match=rf"not served by {fake.openai_url} \(it serves: {MODEL}\)"):
            o.chat(MSGS)
        with pytest.raises(ModelNotFound, match="set QTRAIN_LLM_MODEL"):
            o.preflight()
    fake.configure(flavor="llama-cpp-python")  # answers the unknown model with its own: preflight refuses
    with OpenAIClient([fake.openai_url], "nope:1b") as o:
        assert o.chat(MSGS).text
        with pytest.raises(ModelNotFound):
            o.preflight()
    fake.configure(
        flavor="llama.cpp", faults=[{"mode": "http_503", "times": 2}, {"mode": "context_exceeded"}]
    )
    with OpenAIClient([fake.openai_url], MODEL, max_retries=3, sleep=lambda s: None) as o:
        with pytest.raises(ContextExceeded, match=r"tokens asked, context 4096 tokens"):
            o.chat(MSGS)  # two 503s retried, then the permanent 400
    assert fake.stats()["busy"] == 2


def test_worker_start_up_line_names_the_api_and_refuses_an_unlisted_model(
    fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from worker.runtime.startup import log_startup
    from worker.settings import Settings

    secret = "sk-never-in-a-log-42"
    env = {"QTRAIN_LLM_API": "openai", "OPENAI_BASE_URL": fake.openai_url, "OPENAI_API_KEY": secret}
    with caplog.at_level(logging.WARNING, logger="qtrain.worker"):
        log_startup(Settings.from_env({**env, "QTRAIN_LLM_MODEL": "nope"}))
        log_startup(Settings.from_env({**env, "QTRAIN_LLM_MODEL": MODEL}))
    text = caplog.text
    assert "llm_api=openai" in text and f"hosts={fake.openai_url}" in text and "max_tokens=1024" in text
    assert (
        f"REFUSED openai host {fake.openai_url}: model nope is not served there (it serves: {MODEL})" in text
    )
    assert f"openai host {fake.openai_url}: serves model {MODEL}" in text and secret not in text


def test_the_fake_serves_512_concurrent_calls() -> None:
    """What the in-flight bench needs (issue 30): 512 connections at once, none reset, all in a slot
    together; the stdlib's listen backlog of 5 reset connections past a few dozen."""
    import asyncio

    async def one(port: int, body: bytes) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        writer.write(head + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        size = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:"))
        await reader.readexactly(size)
        writer.close()
        return int(lines[0].split()[1])

    async def burst(port: int) -> list[int]:
        body = json.dumps(
            {"model": "qwen2.5-coder:7b", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        return await asyncio.gather(*(one(port, body) for _ in range(512)))

    with FakeOllama(latency_s=1.0, num_parallel=1024, max_queue=1024) as fake:
        port = int(fake.url.rsplit(":", 1)[1])
        statuses = asyncio.run(burst(port))
        stats = fake.stats()
    assert statuses == [200] * 512
    assert stats["llm_calls"] == 512 and stats["max_in_flight"] == 512
