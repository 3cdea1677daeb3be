"""An Ollama-compatible HTTP server for the tests: real HTTP on loopback, faults on demand.

In-process: ``with FakeOllama(latency_s=0.05, num_parallel=2) as fake: ... fake.url ... fake.stats()``.
As a process (for Celery worker processes): ``python -m tests.fake_ollama --port 0`` prints
``FAKE_OLLAMA_URL=http://127.0.0.1:PORT`` on its first stdout line; ``FakeOllamaProcess`` wraps that.
Either way, ``GET /_fake/stats``, ``POST /_fake/reset`` and ``POST /_fake/config`` (JSON body with
any of latency_s, num_parallel, max_queue, models, faults) work over HTTP.

Endpoints: ``/api/chat``, ``/api/generate`` (non-streaming and NDJSON streaming), ``/api/tags``,
``/api/version``, with Ollama's response shapes; and the OpenAI-compatible ``/v1/chat/completions``
and ``/v1/models`` (base URL ``fake.url + "/v1"``) with the bodies of the server named by
``flavor``: ``llama.cpp`` (llama-server: takes both ``response_format`` shapes), ``llama-cpp-python``
(refuses ``json_schema`` with a 500 naming response_format and answers an unknown model with its
own), ``lmstudio`` (refuses ``json_object``). Both APIs keep a budget like the real servers: a prompt
longer than the context (Ollama's ``options.num_ctx``, else ``n_ctx``, default 4096) is cut
silently by Ollama (``prompt_eval_count`` = the context) unless ``"truncate": false`` was sent
(then a 400, like Ollama 0.12.4+), and is a 400 ``exceed_context_size_error`` on ``/v1``; an answer
longer than ``num_predict`` / ``max_tokens`` is cut there with ``done_reason``/``finish_reason``
``length``. Prompt tokens are counted as characters / 4 plus 4 per message. ``num_parallel``
requests run at once, up to ``max_queue`` more wait; past that the server answers 503
``server busy`` like Ollama. It scales to what a continuous-batching server sees: one thread per
connection and a listen backlog of 1,024, so 512 calls at once are all served (``--num-parallel
1024 --latency 2`` stands in for vLLM in ``bench/bench_inflight.py``).

Faults: a list of dicts ``{"mode": M, "calls": [1, 3], "match": "ETH-USDT", "times": 2}``; the
first fault whose ``calls`` (1-based index of the LLM call) and ``match`` (substring of the
prompt) both fit, and whose ``times`` is not used up, decides the answer. Modes: ok, null_fields,
string_numbers, code_fence, prose, truncated, not_json, enum_case, out_of_range,
unknown_feature, http_400, http_404, http_500, http_503, length (the answer cut at the cap),
context_exceeded (the server's 400), truncated_prompt (a 200 reporting a tenth of the prompt read),
hang (past any client timeout), close
(drop the connection without an answer), and hostile ones: huge (a 50 MB answer), deep (the
model's answer is JSON nested 100,000 deep), endless (a 200 answer whose chunked body never ends:
a byte every 50 ms until the client hangs up). Default answer: valid, derived from a hash of the
prompt, so the same prompt always gets the same answer. ``version`` (config, default 0.6.2) is
what ``/api/version`` reports: an Ollama older than 0.5.0 has no JSON-schema ``format``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

DEFAULT_MODELS = ("qwen2.5-coder:7b",)
FAKE_VERSION = "0.6.2"
MODES = (
    "ok",
    "null_fields",
    "string_numbers",
    "code_fence",
    "prose",
    "truncated",
    "not_json",
    "enum_case",
    "out_of_range",
    "unknown_feature",
    "http_400",
    "http_404",
    "http_500",
    "http_503",
    "length",
    "context_exceeded",
    "truncated_prompt",
    "hang",
    "close",
    "huge",
    "deep",
    "endless",
)
#: Size of a ``huge`` answer, and nesting of a ``deep`` one.
HUGE_BYTES = 50 * 1024 * 1024
DEEP_LEVELS = 100_000
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
FLAVORS = ("llama.cpp", "llama-cpp-python", "lmstudio")
#: Context of the fake model when the request does not set one (Ollama's ``num_ctx``).
FAKE_N_CTX = 4096
#: What llama-cpp-python 0.3.36 answers to ``response_format: {"type": "json_schema", ...}`` (seen).
LLAMA_CPP_PYTHON_SCHEMA_ERROR = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg':"
    " \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}\n\n  File"
    ' "llama_cpp/server/app.py", line 376, in create_chat_completion\n    POST /v1/chat/completions'
)


def count_tokens(messages: list[Any]) -> int:
    """The fake tokenizer: characters / 4 plus 4 per message (as ``worker.clients.llm`` estimates)."""
    chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    return chars // 4 + 4 * len(messages)


def context_error(n_prompt: int, n_ctx: int) -> dict[str, Any]:
    """llama-server's context-exceeded error object (Ollama passes it through as a string)."""
    return {
        "code": 400,
        "message": f"request ({n_prompt} tokens) exceeds the available context size ({n_ctx} tokens),"
        " try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": n_prompt,
        "n_ctx": n_ctx,
    }


def default_answer(prompt: str) -> dict[str, Any]:
    """A valid answer that depends only on ``prompt`` (sha256-derived choices)."""
    d = hashlib.sha256(prompt.encode()).digest()
    regime = ("bull", "bear", "range", "volatile")[d[0] % 4]
    action = ("HOLD", "BUY", "SELL")[d[1] % 3]
    lo, hi = 20 + d[2] % 15, 65 + d[3] % 15
    return {
        "regime": regime,
        "action": action,
        "confidence": round(0.3 + (d[4] % 60) / 100, 2),
        "rules": [
            {
                "conditions": [{"feature": "rsi", "op": "<", "value": float(lo)}],
                "action": "BUY",
                "confidence": 0.6,
                "rationale": "oversold",
            },
            {
                "conditions": [{"feature": "rsi", "op": ">", "value": float(hi)}],
                "action": "SELL",
                "confidence": 0.6,
                "rationale": "overbought",
            },
            {
                "conditions": [
                    {"feature": "macd_hist", "op": ">", "value": 0.0},
                    {"feature": "ema_gap", "op": ">", "value": round((d[5] % 20) / 10, 1)},
                ],
                "action": "BUY",
                "confidence": 0.5,
                "rationale": "trend",
            },
        ],
        "summary": f"fake analysis ({regime})",
    }


def render_answer(mode: str, prompt: str) -> str:
    """The answer text (message.content) for a content-level ``mode``."""
    a = default_answer(prompt)
    if mode == "null_fields":
        a["confidence"] = None
        a["summary"] = None
        a["rules"][0]["confidence"] = None
        a["rules"][1]["conditions"][0]["value"] = None
    elif mode == "string_numbers":
        a["confidence"] = f" {a['confidence']} "
        a["rules"][0]["confidence"] = "60%"
        for r in a["rules"]:
            for c in r["conditions"]:
                c["value"] = str(c["value"])
    elif mode == "enum_case":
        a["regime"] = a["regime"].capitalize()
        a["action"] = a["action"].lower()
        a["rules"][0]["action"] = "Buy"
    elif mode == "out_of_range":
        a["confidence"] = 150
        a["rules"][0]["confidence"] = -2
    elif mode == "unknown_feature":
        a["rules"].append(
            {
                "conditions": [{"feature": "stoch_rsi", "op": "==", "value": 1}],
                "action": "BUY",
                "confidence": 0.9,
                "rationale": "invented",
            }
        )
    text = json.dumps(a)
    if mode == "code_fence":
        return f"```json\n{text}\n```"
    if mode == "prose":
        return f"Here is my analysis of the window:\n{text}\nLet me know if you need more."
    if mode == "truncated":
        return text[: len(text) // 2]
    if mode == "not_json":
        return "I am sorry, I cannot analyse this market window."
    return text


class _State:
    """Configuration and counters shared by the handler threads (guarded by one lock)."""

    def __init__(
        self,
        *,
        models: tuple[str, ...],
        latency_s: float,
        num_parallel: int,
        max_queue: int,
        faults: list[dict[str, Any]],
        hang_s: float,
        version: str = FAKE_VERSION,
        flavor: str = "llama.cpp",
    ) -> None:
        self.lock = threading.Condition()
        self.version = version
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; known: {', '.join(FLAVORS)}")
        self.flavor = flavor
        self.stop = threading.Event()
        self.models = tuple(models)
        self.latency_s = latency_s
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.hang_s = hang_s
        self.faults: list[dict[str, Any]] = []
        self.set_faults(faults)
        self.running = 0  # in-flight gauges: never reset, requests may be running
        self.waiting = 0
        self.reset()

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        for f in faults:
            if f.get("mode") not in MODES:
                raise ValueError(f"unknown fault mode {f.get('mode')!r}; known: {', '.join(MODES)}")
        self.faults = [dict(f, used=0) for f in faults]

    def reset(self) -> None:
        self.calls_total = 0
        self.calls: dict[str, int] = {}
        self.llm_calls = 0
        self.max_in_flight = 0
        self.max_concurrent = 0
        self.max_pending = 0
        self.last_request: dict[str, Any] = {}
        self.busy = 0
        self.faults_applied: dict[str, int] = {}
        self.slot_seconds = 0.0
        self.first_start: float | None = None
        self.last_end: float | None = None
        for f in self.faults:
            f["used"] = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            span = (self.last_end or 0.0) - (self.first_start or 0.0)
            utilisation = self.slot_seconds / (self.num_parallel * span) if span > 0 else None
            return {
                "calls_total": self.calls_total,
                "calls": dict(self.calls),
                "llm_calls": self.llm_calls,
                "in_flight": self.running,
                "pending": self.waiting,
                "max_in_flight": self.max_in_flight,
                "max_pending": self.max_pending,
                "max_concurrent": self.max_concurrent,
                "slot_utilisation": utilisation,
                "last_request": copy.deepcopy(self.last_request),
                "busy": self.busy,
                "faults_applied": dict(self.faults_applied),
                "slot_seconds": self.slot_seconds,
                "first_start": self.first_start,
                "last_end": self.last_end,
                "num_parallel": self.num_parallel,
                "max_queue": self.max_queue,
                "latency_s": self.latency_s,
                "models": list(self.models),
                "flavor": self.flavor,
            }

    def configure(self, cfg: dict[str, Any]) -> None:
        unknown = set(cfg) - {
            "latency_s",
            "num_parallel",
            "max_queue",
            "models",
            "faults",
            "hang_s",
            "version",
            "flavor",
        }
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        with self.lock:
            if "faults" in cfg:
                self.set_faults(list(cfg["faults"]))
            if "models" in cfg:
                self.models = tuple(cfg["models"])
            if "version" in cfg:
                self.version = str(cfg["version"])
            if "flavor" in cfg:
                if cfg["flavor"] not in FLAVORS:
                    raise ValueError(f"unknown flavor {cfg['flavor']!r}; known: {', '.join(FLAVORS)}")
                self.flavor = str(cfg["flavor"])
            for key in ("latency_s", "hang_s"):
                if key in cfg:
                    setattr(self, key, float(cfg[key]))
            for key in ("num_parallel", "max_queue"):
                if key in cfg:
                    setattr(self, key, int(cfg[key]))
            self.lock.notify_all()

    def pick_mode(self, index: int, prompt: str) -> str:
        """Mode for LLM call number ``index`` (called under the lock)."""
        for f in self.faults:
            if f.get("calls") is not None and index not in f["calls"]:
                continue
            if f.get("match") is not None and f["match"] not in prompt:
                continue
            if f.get("times") is not None and f["used"] >= f["times"]:
                continue
            f["used"] += 1
            mode = str(f["mode"])
            self.faults_applied[mode] = self.faults_applied.get(mode, 0) + 1
            return mode
        return "ok"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK add
    # ~40 ms to every keep-alive answer, which would swamp the pipeline's own overhead.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send_json(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def _count(self, path: str) -> None:
        st = self.server.state
        with st.lock:
            st.calls_total += 1
            st.calls[path] = st.calls.get(path, 0) + 1

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        st = self.server.state
        path = self.path.split("?")[0]
        if path == "/_fake/stats":
            self._send_json(200, st.stats())
            return
        self._count(path)
        if path == "/api/version":
            self._send_json(200, {"version": st.version})
        elif path == "/api/tags":
            models = [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 4_683_087_332,
                    "digest": hashlib.sha256(m.encode()).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "qwen2",
                        "families": ["qwen2"],
                        "parameter_size": "7.6B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for m in st.models
            ]
            self._send_json(200, {"models": models})
        elif path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for m in st.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        elif path == "/":
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._send_json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        st = self.server.state
        path = self.path.split("?")[0]
        try:
            req = self._read_json()
        except ValueError:
            self._send_json(400, {"error": "invalid JSON body"})
            return
        if path == "/_fake/reset":
            with st.lock:
                st.reset()
            self._send_json(200, {"ok": True})
            return
        if path == "/_fake/config":
            try:
                st.configure(req)
            except (ValueError, TypeError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, st.stats())
            return
        self._count(path)
        if path not in ("/api/chat", "/api/generate", "/v1/chat/completions"):
            self._send_json(404, {"error": "404 page not found"})
            return
        self._llm(path, req)

    def _fail(self, api: str, status: int, message: str, kind: str = "") -> None:
        """An error in the API's own body: Ollama ``{"error": "..."}``, OpenAI ``{"error": {...}}``."""
        if api == "ollama":
            self._send_json(status, {"error": message})
        else:
            self._send_json(
                status, {"error": {"code": status, "message": message, "type": kind or "server_error"}}
            )

    def _llm(self, path: str, req: dict[str, Any]) -> None:
        st = self.server.state
        api = "openai" if path.startswith("/v1/") else "ollama"
        model = req.get("model")
        if not isinstance(model, str) or not model:
            self._fail(api, 400, "model is required", "invalid_request_error")
            return
        msgs: list[Any] = []
        if path == "/api/generate":
            prompt = str(req.get("system") or "") + "\n" + str(req.get("prompt") or "")
            msgs = [{"content": prompt}]
        else:
            msgs = [m for m in req.get("messages") or [] if isinstance(m, dict)]
            prompt = "\n".join(str(m.get("content", "")) for m in msgs)
        with st.lock:
            st.llm_calls += 1
            mode = st.pick_mode(st.llm_calls, prompt)
            flavor = st.flavor
            known = model in st.models or (":" not in model and f"{model}:latest" in st.models)
            if api == "openai" and flavor == "llama-cpp-python":
                known = True  # it answers any model name with the one it has loaded, silently
            refused = api == "openai" and self._refused_shape(flavor, req.get("response_format"))
            full = st.running + st.waiting >= st.num_parallel + st.max_queue
            rejected = ("close", "http_400", "http_404", "http_503", "context_exceeded")
            admit = known and not full and not refused and mode not in rejected
            st.last_request = {k: v for k, v in req.items() if k not in ("messages", "prompt")}
            if admit:  # reserve a place in the queue under the same lock as the capacity check
                st.waiting += 1
                st.max_pending = max(st.max_pending, st.waiting)
                st.max_concurrent = max(st.max_concurrent, st.waiting + st.running)
            elif known and mode not in ("close", "http_400", "http_404") and (full or mode == "http_503"):
                st.busy += 1
        if mode == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if not known or mode == "http_404":
            if api == "ollama":
                self._fail(api, 404, f'model "{model}" not found, try pulling it first')
            else:
                self._fail(api, 404, f"The model `{model}` does not exist.", "NotFoundError")
            return
        if refused:
            if flavor == "llama-cpp-python":
                self._fail(api, 500, LLAMA_CPP_PYTHON_SCHEMA_ERROR, "internal_server_error")
            else:
                self._send_json(400, {"error": "'response_format.type' must be 'json_schema'"})
            return
        if mode == "http_400":
            self._fail(api, 400, 'invalid format: expected "json" or a JSON schema', "invalid_request_error")
            return
        n_prompt = count_tokens(msgs)
        n_ctx = (
            int((req.get("options") or {}).get("num_ctx") or FAKE_N_CTX) if api == "ollama" else FAKE_N_CTX
        )
        strict = api == "openai" or req.get("truncate") is False
        if mode == "context_exceeded" or (n_prompt > n_ctx and strict):
            err = context_error(max(n_prompt, n_ctx + 1), n_ctx)
            if api == "ollama":
                self._send_json(400, {"error": json.dumps({"error": err})})
            else:
                self._send_json(400, {"error": err})
            return
        if not admit:
            if api == "ollama":
                self._send_json(503, {"error": BUSY_ERROR})
            else:
                self._fail(api, 503, "Loading model", "unavailable_error")
            return
        if n_prompt > n_ctx:  # Ollama without "truncate": false cuts the prompt, silently
            n_prompt = n_ctx
        if mode == "truncated_prompt":
            n_prompt = max(1, n_prompt // 10)
        self._run_in_slot(path, req, model, prompt, mode, n_prompt)

    @staticmethod
    def _refused_shape(flavor: str, response_format: Any) -> bool:
        """Whether this flavour of server refuses the ``response_format`` it was sent."""
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        return (flavor == "llama-cpp-python" and kind == "json_schema") or (
            flavor == "lmstudio" and kind == "json_object"
        )

    def _run_in_slot(
        self, path: str, req: dict[str, Any], model: str, prompt: str, mode: str, n_prompt: int
    ) -> None:
        st = self.server.state
        with st.lock:
            while st.running >= st.num_parallel and not st.stop.is_set():
                st.lock.wait(0.5)
            st.waiting -= 1
            st.running += 1
            st.max_in_flight = max(st.max_in_flight, st.running)
            latency, hang_s = st.latency_s, st.hang_s
        t0 = time.monotonic()
        try:
            if mode == "hang":
                st.stop.wait(hang_s)
            elif latency > 0:
                st.stop.wait(latency)
        finally:
            t1 = time.monotonic()
            with st.lock:
                st.running -= 1
                st.slot_seconds += t1 - t0
                st.first_start = t0 if st.first_start is None else min(st.first_start, t0)
                st.last_end = t1 if st.last_end is None else max(st.last_end, t1)
                st.lock.notify_all()
        api = "openai" if path.startswith("/v1/") else "ollama"
        if mode == "http_500":
            self._fail(api, 500, "llama runner process has terminated: exit status 2")
            return
        if mode == "hang":
            self.close_connection = True  # no answer, ever: the connection is dropped
            return
        if mode in ("huge", "endless"):
            self._hostile_body(mode, model, api)
            return
        content = "[" * DEEP_LEVELS + "]" * DEEP_LEVELS if mode == "deep" else render_answer(mode, prompt)
        eval_tokens = max(1, len(content) // 4)
        cap = req.get("max_tokens") if api == "openai" else (req.get("options") or {}).get("num_predict")
        reason = "stop"
        if mode == "length" or (isinstance(cap, int) and cap > 0 and eval_tokens > cap):
            eval_tokens = cap if isinstance(cap, int) and cap > 0 else max(1, eval_tokens // 2)
            content, reason = content[: eval_tokens * 4], "length"
        if api == "openai":
            self._send_json(
                200,
                {
                    "id": f"chatcmpl-{st.llm_calls}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "logprobs": None,
                            "finish_reason": reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": n_prompt,
                        "completion_tokens": eval_tokens,
                        "total_tokens": n_prompt + eval_tokens,
                    },
                },
            )
            return
        elapsed_ns = int((t1 - t0) * 1e9) + 1
        usage = {
            "total_duration": elapsed_ns + 1_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": n_prompt,
            "prompt_eval_duration": elapsed_ns // 4,
            "eval_count": eval_tokens,
            "eval_duration": elapsed_ns - elapsed_ns // 4,
        }
        key = "message" if path == "/api/chat" else "response"
        piece: Any = {"role": "assistant", "content": content} if key == "message" else content
        final: dict[str, Any] = {"model": model, "created_at": _now_iso(), key: piece, "done_reason": reason}
        final["done"] = True
        if path == "/api/generate":
            final["context"] = [1, 2, 3]
        final.update(usage)
        if req.get("stream", True) is False:
            self._send_json(200, final)
            return
        # Streaming (Ollama's default): NDJSON, one chunk with the content, then the final record.
        empty: Any = {"role": "assistant", "content": ""} if key == "message" else ""
        chunk = {"model": model, "created_at": _now_iso(), key: piece, "done": False}
        final[key] = empty
        data = (json.dumps(chunk) + "\n" + json.dumps(final) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _hostile_body(self, mode: str, model: str, api: str = "ollama") -> None:
        """A 50 MB answer (``huge``) or a chunked body that never ends (``endless``), until the client
        hangs up or the server stops."""
        st = self.server.state
        self.close_connection = True
        if api == "openai":
            head = json.dumps(
                {"model": model, "choices": [{"message": {"role": "assistant", "content": ""}}]}
            )
        else:
            head = json.dumps(
                {"model": model, "created_at": _now_iso(), "message": {"role": "assistant", "content": ""}}
            )
        prefix = head[: head.rindex('""') + 1].encode()  # ... "content": "   (the string stays open)
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if mode == "huge":
            self.send_header("Content-Length", str(HUGE_BYTES))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if mode == "huge":
                self.wfile.write(prefix)
                block = b"a" * (1024 * 1024)
                left = HUGE_BYTES - len(prefix)
                while left > 0 and not st.stop.is_set():
                    n = min(left, len(block))
                    self.wfile.write(block[:n])
                    left -= n
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(prefix), prefix))
            while not st.stop.wait(0.05):
                self.wfile.write(b"1\r\na\r\n")
                self.wfile.flush()
        except OSError:  # the client hung up: what a bounded client does
            return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    #: The listen backlog: the stdlib's 5 made the kernel reset connections past a few dozen
    #: arriving at once; a continuous-batching client opens hundreds (bench/bench_inflight.py).
    request_queue_size = 1024
    state: _State

    def server_bind(self) -> None:
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close every open (keep-alive) connection, as a stopped Ollama would."""
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeOllama:
    """The fake server in a background thread of this process (context manager)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
        latency_s: float = 0.0,
        num_parallel: int = 4,
        max_queue: int = 512,
        faults: list[dict[str, Any]] | None = None,
        hang_s: float = 30.0,
        version: str = FAKE_VERSION,
        flavor: str = "llama.cpp",
    ) -> None:
        self.state = _State(
            models=tuple(models),
            latency_s=latency_s,
            num_parallel=num_parallel,
            max_queue=max_queue,
            faults=copy.deepcopy(faults or []),
            hang_s=hang_s,
            version=version,
            flavor=flavor,
        )
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (after ``start``)."""
        if self._server is None:
            raise RuntimeError("FakeOllama is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible base URL (``OPENAI_BASE_URL``): ``url + "/v1"``."""
        return f"{self.url}/v1"

    def start(self) -> FakeOllama:
        """Bind and serve in a daemon thread; returns self."""
        self.state.stop.clear()
        self._server = _Server((self._host, self._port), _Handler)
        self._server.state = self.state
        self._port = self._server.server_address[1]  # a restart reuses the same port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (new connections are refused); releases hanging requests."""
        if self._server is None:
            return
        self.state.stop.set()
        with self.state.lock:
            self.state.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def stats(self) -> dict[str, Any]:
        """Counters: calls_total, calls per path, llm_calls, max_in_flight (slots), max_concurrent
        (slots + queue), busy (503s), faults_applied, slot_seconds, slot_utilisation, last_request."""
        return self.state.stats()

    def reset(self) -> None:
        """Zero the counters (and the fault usage)."""
        with self.state.lock:
            self.state.reset()

    def configure(self, **cfg: Any) -> None:
        """Change latency_s, num_parallel, max_queue, models, faults, hang_s, version or flavor, live."""
        self.state.configure(cfg)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeOllamaProcess:
    """The fake server as a child process (``python -m tests.fake_ollama``), driven over HTTP."""

    def __init__(self, *args: str, cwd: str | None = None) -> None:
        self._args = list(args)
        self._cwd = cwd or str(Path(__file__).resolve().parents[1])
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> FakeOllamaProcess:
        """Start the child and wait for its URL line (10 s at most)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_ollama", "--port", "0", *self._args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=self._cwd,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("FAKE_OLLAMA_URL="):
            self.stop()
            raise RuntimeError(f"fake ollama did not start: {line!r}")
        self.url = line.split("=", 1)[1]
        return self

    def stats(self) -> dict[str, Any]:
        """Counters read over HTTP."""
        return dict(httpx.get(f"{self.url}/_fake/stats", timeout=5).json())

    def reset(self) -> None:
        """Zero the counters over HTTP."""
        httpx.post(f"{self.url}/_fake/reset", json={}, timeout=5).raise_for_status()

    def configure(self, **cfg: Any) -> None:
        """Change the configuration over HTTP."""
        httpx.post(f"{self.url}/_fake/config", json=cfg, timeout=5).raise_for_status()

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> FakeOllamaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the fake server until SIGTERM/SIGINT; prints ``FAKE_OLLAMA_URL=...`` first."""
    p = argparse.ArgumentParser(prog="python -m tests.fake_ollama", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per LLM call")
    p.add_argument("--num-parallel", type=int, default=4)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--model", action="append", help="a pulled model (repeatable)")
    p.add_argument("--faults", default="[]", help="JSON list of fault rules")
    p.add_argument("--hang", type=float, default=30.0, help="seconds a 'hang' call hangs")
    p.add_argument(
        "--flavor", default="llama.cpp", choices=FLAVORS, help="which OpenAI-compatible server /v1 is"
    )
    a = p.parse_args(argv)
    fake = FakeOllama(
        host=a.host,
        port=a.port,
        models=tuple(a.model or DEFAULT_MODELS),
        latency_s=a.latency,
        num_parallel=a.num_parallel,
        max_queue=a.max_queue,
        faults=json.loads(a.faults),
        hang_s=a.hang,
        flavor=a.flavor,
    ).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"FAKE_OLLAMA_URL={fake.url}", flush=True)
    done.wait()
    fake.stop()


if __name__ == "__main__":
    main()
