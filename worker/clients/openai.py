"""OpenAI-compatible HTTP client: ``POST {base}/chat/completions`` with a JSON-schema constraint.

For every server that speaks the OpenAI-compatible API: llama.cpp's llama-server,
llama-cpp-python's ``python -m llama_cpp.server``, vLLM and SGLang (one endpoint over continuous
batching on several GPUs), LM Studio, and any other server's ``/v1``. ``OPENAI_BASE_URL`` names
the base with its ``/v1`` (a comma list shares the load, round-robin); ``OPENAI_API_KEY``, when
set, goes out as ``Authorization: Bearer`` and nowhere else (not in messages, logs or ``repr``).
The attempt loop and the transport are ``worker.clients.llm.HttpLLM``'s; this module is the wire
format: the request body and its ``response_format`` shape, the answer, the error bodies.

What the servers really do, and what this client does about it:

- Structured output: ``response_format: {"type": "json_schema", "json_schema": {...}}`` is taken
  by llama-server, vLLM, SGLang and LM Studio; llama-cpp-python takes only
  ``{"type": "json_object", "schema": ...}`` and refuses the other with an HTTP 500 naming
  ``response_format`` (LM Studio refuses ``json_object``). The standard shape goes first; an answer
  naming ``response_format`` switches that host to the other shape once, remembered per host. A
  server that ignores the shape answers free text with 200: the parser validates every answer.
- Usage: ``usage.prompt_tokens`` / ``completion_tokens`` are stored; ``finish_reason: "length"``
  is ``AnswerCut``; a ``prompt_tokens`` far below the prompt's size is ``PromptTruncated``.
- Errors (bodies ``{"error": {...}}``, ``{"error": "..."}``, vLLM's flat ``{"object": "error",
  "message": ...}`` or FastAPI's ``{"detail": ...}``): context exceeded (llama.cpp
  ``exceed_context_size_error``, llama-cpp-python ``context_length_exceeded``, vLLM "maximum
  context length") is ``ContextExceeded`` with both numbers; 404 / unknown model is
  ``ModelNotFound`` naming the served models; 401/403 names OPENAI_API_KEY; 429, 503 ("Loading
  model"), other 5xx and timeouts are temporary and retried on the next host with backoff.
- Preflight: ``GET {base}/models`` must list the model; llama-cpp-python answers a request for an
  unknown model with its own default model, silently, so a model it does not list is refused.
"""

from __future__ import annotations

import json as _json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from worker.clients.llm import (
    MAX_JSON_DEPTH,
    MAX_RESPONSE_BYTES,
    PREFLIGHT_TIMEOUT_S,
    ChatResult,
    ContextExceeded,
    HttpLLM,
    LLMBadRequest,
    answer_cut,
    as_int,
    check_not_truncated,
    json_depth,
    one_line,
)
from worker.errors import (
    InvalidModelOutput,
    LLMServerError,
    ModelNotFound,
    QtrainError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.settings import DEFAULT_LLM_MAX_TOKENS, DEFAULT_LLM_NUM_CTX, Settings

#: Structured-output shapes, in the order tried: the standard one, then llama-cpp-python's.
SHAPES = ("json_schema", "json_object")
#: ``json_schema.name`` sent with the standard shape.
SCHEMA_NAME = "qtrain_analysis"

_CONTEXT_CODES = ("exceed_context_size_error", "context_length_exceeded")
_CONTEXT_PHRASES = ("maximum context length", "exceeds the available context size", "context length exceeded")
_CTX_NUMBER = (
    re.compile(r"maximum context length is (\d+)"),
    re.compile(r"available context size \((\d+) tokens\)"),
)
_ASKED_NUMBER = (
    re.compile(r"you requested (\d+) tokens"),
    re.compile(r"request \((\d+) tokens\)"),
    re.compile(r"request has (\d+) input tokens"),
)
_UNKNOWN_MODEL = re.compile(r"model\b.*\b(not found|does not exist|not exist|unknown|not loaded)", re.I)


class ShapeRefused(LLMBadRequest):
    """Raised when a server refuses a ``response_format`` shape (the client then tries the other)."""


def error_info(raw: bytes) -> tuple[str, str, dict[str, Any]]:
    """(message, code or type, the error object) of an OpenAI-style error body; the message one line.

    Reads ``{"error": {"message", "type", "code", ...}}``, ``{"error": "..."}``, vLLM's flat
    ``{"object": "error", "message", "type", "code"}`` and FastAPI's ``{"detail": ...}``."""
    try:
        body = _json.loads(raw) if json_depth(raw) <= MAX_JSON_DEPTH else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return one_line(raw[:400].decode("utf-8", "replace")), "", {}
    err = body.get("error")
    obj: dict[str, Any] = err if isinstance(err, dict) else body
    if isinstance(err, str):
        message: Any = err
    elif "message" in obj:
        message = obj["message"]
    elif "detail" in body:
        message = _json.dumps(body["detail"])[:400]
    else:
        message = _json.dumps(body)[:400]
    code = obj.get("code") if isinstance(obj.get("code"), str) else obj.get("type")
    return one_line(str(message), 400), str(code or ""), obj


def _number(patterns: Sequence[re.Pattern[str]], text: str, fallback: Any) -> str:
    for p in patterns:
        m = p.search(text)
        if m is not None:
            return m.group(1)
    return str(fallback) if as_int(fallback) is not None else "?"


class OpenAIClient(HttpLLM):
    """Calls one or more OpenAI-compatible servers (base URLs with ``/v1``) serving ``model``."""

    api = "openai"

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        api_key: str = "",
        client: httpx.Client | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        temperature: float = 0.0,
        seed: int = 42,
        num_ctx: int = DEFAULT_LLM_NUM_CTX,
        max_tokens: int = DEFAULT_LLM_MAX_TOKENS,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | Callable[[], random.Random] = random.Random,
        clock: Callable[[], float] = time.monotonic,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            base_urls,
            model,
            client=client,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            sleep=sleep,
            rng=rng,
            clock=clock,
            max_response_bytes=max_response_bytes,
        )
        if num_ctx < 1 or max_tokens < 1:
            raise ValueError(f"num_ctx and max_tokens must be >= 1, got {num_ctx} and {max_tokens}")
        self.temperature = temperature
        self.seed = seed
        self.num_ctx = num_ctx
        self.max_tokens = max_tokens
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._shapes: dict[str, str] = {}  # per host: the response_format shape it takes

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OpenAIClient:
        """A client for ``settings.openai_base_urls`` / ``llm_model``, key and budget; one per process."""
        kwargs.setdefault("num_ctx", settings.llm_num_ctx)
        kwargs.setdefault("max_tokens", settings.llm_max_tokens)
        kwargs.setdefault("api_key", settings.openai_api_key)
        return cls(settings.openai_base_urls, settings.llm_model, timeout_s=settings.llm_timeout_s, **kwargs)

    def __repr__(self) -> str:
        key = "set" if self._headers else "unset"
        return f"OpenAIClient(hosts={self.hosts!r}, model={self.model!r}, api_key={key})"

    # -- the servers' error bodies ------------------------------------------------------------

    def _error(self, status: int, host: str, path: str, raw: bytes) -> QtrainError:
        """The qtrain error for a non-200 answer."""
        detail, code, obj = error_info(raw)
        where = f"openai {host}"
        if code in _CONTEXT_CODES or any(p in detail.lower() for p in _CONTEXT_PHRASES):
            asked = _number(_ASKED_NUMBER, detail, obj.get("n_prompt_tokens"))
            ctx = _number(_CTX_NUMBER, detail, obj.get("n_ctx"))
            return ContextExceeded(
                f"{where}: the request does not fit the model's context ({asked} tokens asked, context"
                f" {ctx} tokens): raise the server's context and QTRAIN_LLM_NUM_CTX, or lower"
                " QTRAIN_LLM_MAX_TOKENS"
            )
        if status in (401, 403):
            return LLMBadRequest(f"{where}{path}: HTTP {status} ({detail}): check OPENAI_API_KEY")
        if "response_format" in detail and path == "/chat/completions" and status != 503:
            return ShapeRefused(f"{where}: HTTP {status} refusing response_format ({detail[:160]})")
        if path == "/chat/completions" and (
            status == 404 or (status < 500 and _UNKNOWN_MODEL.search(detail))
        ):
            return ModelNotFound(self._not_served(host, detail))
        if status == 404:
            return LLMBadRequest(
                f"{where}{path}: HTTP 404 ({detail}): is this an OpenAI-compatible server, and does"
                " OPENAI_BASE_URL end in /v1?"
            )
        return self._status_error(status, host, path, detail)  # busy, server error, bad request

    def _not_served(self, host: str, detail: str = "") -> str:
        """One line saying the model is not served by ``host``, naming what it serves (when it says)."""
        try:
            served = ", ".join(self.models(host)) or "no model"
        except QtrainError:
            served = "its models could not be listed"
        why = f" ({detail[:120]})" if detail else ""
        return (
            f"model {self.model} is not served by {host} (it serves: {served}){why}: set QTRAIN_LLM_MODEL"
            " to one of them, or start the server with that model"
        )

    # -- preflight ----------------------------------------------------------------------------

    def models(self, host: str | None = None) -> list[str]:
        """The model ids ``GET {host}/models`` lists (default: the first host); one attempt."""
        h = host or self.hosts[0]
        body = self._send("GET", h, "/models", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise LLMServerError(f"openai {h}/models: unexpected answer {str(body)[:100]}")
        return [str(m["id"]) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def serves(self, names: Sequence[str]) -> bool:
        """Whether ``self.model`` is among ``names`` (``name`` and ``name:latest`` are one model)."""
        want = {self.model, self.model.removesuffix(":latest")}
        return any(n in want or n.removesuffix(":latest") in want for n in names)

    def preflight(self) -> dict[str, str]:
        """Check every base URL answers ``/models`` and lists the model; ``{host: served models}``."""
        served: dict[str, str] = {}
        for h in self.hosts:
            try:
                names = self.models(h)
            except TemporaryError as exc:
                raise ServiceUnavailable(
                    f"{exc}; is the server running there (OPENAI_BASE_URL, with its /v1)?"
                ) from exc
            if not self.serves(names):
                raise ModelNotFound(
                    f"model {self.model} is not served by {h} (it serves: {', '.join(names) or 'no model'}):"
                    " set QTRAIN_LLM_MODEL to one of them, or start the server with that model"
                )
            served[h] = ", ".join(names)
        return served

    # -- chat ---------------------------------------------------------------------------------

    def _payload(self, messages: Sequence[dict[str, str]], format: Any, shape: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stream": False,
        }
        if isinstance(format, Mapping):
            if shape == "json_schema":
                spec = {"name": SCHEMA_NAME, "schema": format, "strict": True}
                payload["response_format"] = {"type": "json_schema", "json_schema": spec}
            else:
                payload["response_format"] = {"type": "json_object", "schema": format}
        elif format == "json":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _post_chat(self, host: str, messages: Sequence[dict[str, str]], format: Any) -> tuple[Any, str]:
        """One chat exchange with ``host`` in the shape it takes (switching once if it refuses)."""
        if not isinstance(format, Mapping):
            shape = "json_object" if format == "json" else ""
            return self._send(
                "POST", host, "/chat/completions", json=self._payload(messages, format, shape)
            ), shape
        shape = self._shapes.get(host, SHAPES[0])
        try:
            body = self._send("POST", host, "/chat/completions", json=self._payload(messages, format, shape))
        except ShapeRefused as exc:
            other = SHAPES[1] if shape == SHAPES[0] else SHAPES[0]
            try:
                body = self._send(
                    "POST", host, "/chat/completions", json=self._payload(messages, format, other)
                )
            except ShapeRefused as again:
                raise LLMBadRequest(
                    f"openai {host}: takes neither response_format shape ({', '.join(SHAPES)}): {again};"
                    f" first: {exc}"
                ) from again
            shape = self._shapes[host] = other
        return body, shape

    def _result(
        self, body: Any, host: str, attempt: int, constrained: str, estimate: int, elapsed_ms: float
    ) -> ChatResult:
        """The answer with the call's wall time (and llama-server's ``timings``); ``finish_reason:
        "length"`` or a short ``usage.prompt_tokens`` is a cut answer or prompt."""
        where = f"openai {host}"
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = (
            choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        )
        if choice is None:
            raise LLMServerError(f"{where}/chat/completions: answer has no choices")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        prompt_tokens = as_int(usage.get("prompt_tokens"))
        completion_tokens = as_int(usage.get("completion_tokens"))
        finish = str(choice.get("finish_reason") or "")
        if finish == "length":
            raise answer_cut(where, self.max_tokens, completion_tokens)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise InvalidModelOutput(f"{where}/chat/completions: answer has no message.content ({finish})")
        if json_depth(content.encode()) > MAX_JSON_DEPTH:
            raise InvalidModelOutput(
                f"{where}/chat/completions: the model's answer is nested deeper than {MAX_JSON_DEPTH} levels;"
                " refused"
            )
        check_not_truncated(where, prompt_tokens, None, estimate)
        timings = body.get("timings") if isinstance(body.get("timings"), dict) else {}  # llama-server's
        predicted = timings.get("predicted_ms")
        return ChatResult(
            text=content,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_duration_ms=round(elapsed_ms, 3),
            eval_duration_ms=float(predicted) if isinstance(predicted, int | float) else None,
            host=host,
            attempts=attempt,
            done_reason=finish,
            constrained=constrained,
        )
