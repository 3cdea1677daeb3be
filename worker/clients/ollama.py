"""Ollama HTTP client: /api/chat with a JSON-schema ``format``, retries, several hosts.

Hosts share the load round-robin (each call starts at the next host; a retry goes to the host
after the one that failed). Temporary failures (connection errors, timeouts, 5xx, 503 queue full,
429) are retried with exponential backoff and jitter, then raised as a ``TemporaryError``
subclass; 404 (model not pulled) and other 4xx are permanent. The attempt loop and the transport
are ``worker.clients.llm.HttpLLM``'s; this module is Ollama's wire format: the request body, the
answer, the error bodies, the version checks. Keep one ``OllamaClient`` (and so one
``httpx.Client``) per process.

Hostile or broken answers cost bounded memory and time (``worker.clients.llm``): a body is
streamed and read up to ``MAX_RESPONSE_BYTES`` (4 MiB) within the call's timeout, JSON nested
deeper than ``MAX_JSON_DEPTH`` (64) is refused before any parser sees it; each is a
``PermanentError`` with a one-line reason. Hosts older than ``MIN_OLLAMA_VERSION`` (0.5.0, when
structured outputs arrived) are refused by preflight.

The budget is explicit, since Ollama cuts a prompt longer than its ``num_ctx`` silently (a log
line and a 200): every call sends ``options.num_ctx`` and ``options.num_predict``
(QTRAIN_LLM_NUM_CTX / QTRAIN_LLM_MAX_TOKENS), and ``"truncate": false`` to hosts from 0.12.4 on
(their version is asked once per host), so an overflow there is a 400; on any host a reported
``prompt_eval_count`` far below the prompt's estimated size fails the window (``PromptTruncated``)
and ``done_reason: "length"`` is ``AnswerCut``.
"""

from __future__ import annotations

import json as _json
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from worker.clients.llm import (
    MAX_ERROR_BYTES,
    MAX_JSON_DEPTH,
    MAX_RESPONSE_BYTES,
    PREFLIGHT_TIMEOUT_S,
    ChatClient,
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
    PermanentError,
    QtrainError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.settings import DEFAULT_LLM_MAX_TOKENS, DEFAULT_LLM_NUM_CTX, Settings

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_RESPONSE_BYTES",
    "PREFLIGHT_TIMEOUT_S",
    "ChatClient",
    "ChatResult",
    "OllamaClient",
    "OllamaTooOld",
    "json_depth",
    "parse_version",
    "too_old",
    "too_old_message",
]

#: Oldest Ollama with JSON-schema ``format`` (structured outputs came in 0.5.0).
MIN_OLLAMA_VERSION = (0, 5, 0)
#: First Ollama whose /api/chat takes ``"truncate": false`` (an overflow is then an error, not a cut).
TRUNCATE_FLAG_VERSION = (0, 12, 4)


class OllamaTooOld(PermanentError):
    """Raised when an Ollama host is older than 0.5.0 and so cannot take a JSON-schema ``format``."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"0.5.7"`` / ``"0.6.2-rc1"`` -> (0, 5, 7) / (0, 6, 2); None when it is not a version."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def too_old(version: str) -> bool:
    """True for a released Ollama older than 0.5.0 (a source build reports 0.0.0: let it be)."""
    parsed = parse_version(version)
    return parsed is not None and parsed != (0, 0, 0) and parsed < MIN_OLLAMA_VERSION


def too_old_message(host: str, version: str) -> str:
    """The one line that refuses ``host`` by name and version, with what to do."""
    want = ".".join(map(str, MIN_OLLAMA_VERSION))
    return (
        f"ollama {host} is version {version}, older than {want}: it has no JSON-schema format"
        f" (structured outputs); upgrade Ollama on that host"
    )


def takes_truncate_flag(version: str) -> bool:
    """True for an Ollama from 0.12.4 on (and a source build, 0.0.0), whose chat takes ``truncate``."""
    parsed = parse_version(version)
    return parsed is not None and (parsed == (0, 0, 0) or parsed >= TRUNCATE_FLAG_VERSION)


def _ms(ns: Any) -> float | None:
    return ns / 1e6 if isinstance(ns, int | float) and not isinstance(ns, bool) else None


def _error_text(raw: bytes) -> str:
    """The ``error`` of an Ollama error body (a JSON error nested in it read too), one line."""
    try:
        body = _json.loads(raw) if json_depth(raw) <= MAX_JSON_DEPTH else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text: str = body["error"]
        try:  # Ollama passes llama-server's own error body through as a string
            inner = _json.loads(text) if text.startswith("{") and len(text) < MAX_ERROR_BYTES else None
        except ValueError:
            inner = None
        err = inner.get("error") if isinstance(inner, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return one_line(err["message"])
        return one_line(text)
    return one_line(raw[:200].decode("utf-8", "replace"))


_CONTEXT = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)")


class OllamaClient(HttpLLM):
    """Calls one or more Ollama hosts serving ``model``."""

    api = "ollama"

    def __init__(
        self,
        hosts: Sequence[str],
        model: str,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        keep_alive: str = "30m",
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
            hosts,
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
        self.keep_alive = keep_alive
        self.temperature = temperature
        self.seed = seed
        self.num_ctx = num_ctx
        self.max_tokens = max_tokens
        self._versions: dict[str, str] = {}  # per host, learned once (preflight or the first chat)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OllamaClient:
        """A client for ``settings.ollama_hosts`` / ``llm_model`` and budget; build one per process."""
        kwargs.setdefault("num_ctx", settings.llm_num_ctx)
        kwargs.setdefault("max_tokens", settings.llm_max_tokens)
        return cls(settings.ollama_hosts, settings.llm_model, timeout_s=settings.llm_timeout_s, **kwargs)

    # -- Ollama's error bodies ----------------------------------------------------------------

    def _error(self, status: int, host: str, path: str, raw: bytes) -> QtrainError:
        """The qtrain error for a non-200 answer (Ollama's ``{"error": ...}`` read)."""
        detail = _error_text(raw)
        if status == 404 and path not in ("/api/chat", "/api/generate"):
            return LLMBadRequest(f"ollama {host}{path}: HTTP 404 ({detail}): is this an Ollama server?")
        if status == 404:
            return ModelNotFound(
                f"model {self.model} is not pulled on {host}: run ollama pull {self.model} ({detail})"
            )
        m = _CONTEXT.search(detail)
        if (m is not None or "exceed_context_size_error" in detail) and status < 500 and status != 429:
            asked, ctx = (m.group(1), m.group(2)) if m else ("?", str(self.num_ctx))
            return ContextExceeded(
                f"ollama {host}: the prompt ({asked} tokens) exceeds the context ({ctx} tokens):"
                " raise QTRAIN_LLM_NUM_CTX"
            )
        return self._status_error(status, host, path, detail)  # busy, server error, bad request

    # -- preflight ----------------------------------------------------------------------------

    def version(self, host: str | None = None) -> str:
        """Ollama's version string on ``host`` (default: the first host); one attempt."""
        h = host or self.hosts[0]
        body = self._send("GET", h, "/api/version", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise LLMServerError(f"ollama {h}/api/version: unexpected answer {str(body)[:100]}")
        self._versions[h] = body["version"]
        return self._versions[h]

    def has_model(self, host: str | None = None) -> bool:
        """Whether ``self.model`` is pulled on ``host`` ("name" and "name:latest" are the same)."""
        h = host or self.hosts[0]
        body = self._send("GET", h, "/api/tags", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise LLMServerError(f"ollama {h}/api/tags: unexpected answer {str(body)[:100]}")
        want = _canonical(self.model)
        for m in models:
            if isinstance(m, dict):
                names = {m.get("name"), m.get("model")}
                if any(isinstance(n, str) and _canonical(n) == want for n in names):
                    return True
        return False

    def preflight(self) -> dict[str, str]:
        """Check every host is reachable, runs Ollama >= 0.5.0 and has the model; ``{host: version}``."""
        versions: dict[str, str] = {}
        for h in self.hosts:
            try:
                versions[h] = self.version(h)
                present = self.has_model(h)
            except TemporaryError as exc:
                # the message already names the host; add what to do
                raise ServiceUnavailable(f"{exc}; is `ollama serve` running there (OLLAMA_HOST)?") from exc
            if too_old(versions[h]):
                raise OllamaTooOld(too_old_message(h, versions[h]))
            if not present:
                raise ModelNotFound(f"model {self.model} is not pulled on {h}: run ollama pull {self.model}")
        return versions

    # -- chat ---------------------------------------------------------------------------------

    def _takes_truncate(self, host: str) -> bool:
        """Whether ``host`` takes ``"truncate": false`` (its version is asked once; unknown: no)."""
        if host not in self._versions:
            try:
                self.version(host)
            except (TemporaryError, PermanentError):
                return False  # the chat itself will say what is wrong with the host
        return takes_truncate_flag(self._versions[host])

    def _post_chat(self, host: str, messages: Sequence[dict[str, str]], format: Any) -> tuple[Any, str]:
        """POST /api/chat: non-streaming, fixed temperature and seed, ``num_ctx`` and ``num_predict``,
        and ``"truncate": false`` where the host takes it; (answer, "format" when one was sent)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "format": format,
            "stream": False,
            "options": {
                "temperature": self.temperature,
                "seed": self.seed,
                "num_ctx": self.num_ctx,
                "num_predict": self.max_tokens,
            },
            "keep_alive": self.keep_alive,
        }
        if self._takes_truncate(host):
            body["truncate"] = False
        return self._send("POST", host, "/api/chat", json=body), "format" if format is not None else ""

    def _result(
        self, body: Any, host: str, attempt: int, constrained: str, estimate: int, elapsed_ms: float
    ) -> ChatResult:
        """The answer with Ollama's own durations; ``done_reason: "length"`` or a short
        ``prompt_eval_count`` (plus ``prompt_eval_cached_count``) is a cut answer or prompt."""
        result = _chat_result(body, host, attempt, constrained)
        where = f"ollama {host}"
        if result.done_reason == "length":
            raise answer_cut(where, self.max_tokens, result.completion_tokens)
        cached = as_int(body.get("prompt_eval_cached_count"))
        check_not_truncated(where, result.prompt_tokens, cached, estimate)
        return result


def _canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _chat_result(body: Any, host: str, attempts: int, constrained: str) -> ChatResult:
    message = body.get("message") if isinstance(body, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise LLMServerError(f"ollama {host}/api/chat: answer has no message.content")
    if json_depth(content.encode()) > MAX_JSON_DEPTH:
        raise InvalidModelOutput(
            f"ollama {host}/api/chat: the model's answer is nested deeper than {MAX_JSON_DEPTH} levels;"
            " refused"
        )
    return ChatResult(
        text=content,
        prompt_tokens=as_int(body.get("prompt_eval_count")),
        completion_tokens=as_int(body.get("eval_count")),
        total_duration_ms=_ms(body.get("total_duration")),
        eval_duration_ms=_ms(body.get("eval_duration")),
        host=host,
        attempts=attempts,
        done_reason=str(body.get("done_reason") or ""),
        constrained=constrained,
    )
