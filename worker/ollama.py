"""Ollama HTTP client: /api/chat with a JSON-schema ``format``, retries, several hosts.

Hosts share the load round-robin (each call starts at the next host; a retry goes to the host
after the one that failed). Temporary failures (connection errors, timeouts, 5xx, 503 queue full,
429) are retried with exponential backoff and jitter, then raised as a ``TemporaryError``
subclass; 404 (model not pulled) and other 4xx are permanent. httpx exceptions are translated
here, at the edge. Keep one ``OllamaClient`` (and so one ``httpx.Client``) per process.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from model.answer import ANSWER_SCHEMA
from worker.errors import (
    ModelNotFound,
    OllamaBusy,
    OllamaServerError,
    OllamaTimeout,
    PermanentError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.settings import Settings

#: Seconds allowed for the small preflight calls (/api/version, /api/tags).
PREFLIGHT_TIMEOUT_S = 10.0
#: Seconds allowed to open a TCP connection (a dead host should fail fast, not after 300 s).
CONNECT_TIMEOUT_S = 10.0


class OllamaBadRequest(PermanentError):
    """Raised when Ollama answers 400 or another 4xx: the request itself is wrong."""


@dataclass(frozen=True)
class ChatResult:
    """The text of one /api/chat answer plus the usage Ollama reported."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_duration_ms: float | None
    eval_duration_ms: float | None
    host: str
    attempts: int
    done_reason: str = ""


class ChatClient(Protocol):
    """The part of ``OllamaClient`` the analyse step uses (a Protocol, so tests can stand in)."""

    def chat(self, messages: Sequence[dict[str, str]], *, format: Any = ANSWER_SCHEMA) -> ChatResult: ...


def _ms(ns: Any) -> float | None:
    return ns / 1e6 if isinstance(ns, int | float) and not isinstance(ns, bool) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
    except ValueError:
        pass
    return resp.text[:200].replace("\n", " ")


class OllamaClient:
    """Calls one or more Ollama hosts serving ``model``."""

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
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | Callable[[], random.Random] = random.Random,
    ) -> None:
        self.hosts = tuple(h.strip().rstrip("/") for h in hosts if h.strip())
        if not self.hosts:
            raise ValueError("hosts must name at least one Ollama host")
        if not model:
            raise ValueError("model must be non-empty")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.keep_alive = keep_alive
        self.temperature = temperature
        self.seed = seed
        self._sleep = sleep
        self._rng = rng if isinstance(rng, random.Random) else rng()
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        # Rotating start host; a random offset so that many worker processes spread out.
        self._counter = itertools.count(self._rng.randrange(len(self.hosts)))

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OllamaClient:
        """A client for ``settings.ollama_hosts`` / ``ollama_model``; build one per process."""
        return cls(
            settings.ollama_hosts, settings.ollama_model, timeout_s=settings.ollama_timeout_s, **kwargs
        )

    def close(self) -> None:
        """Close the underlying httpx client if this object created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one HTTP exchange, errors translated -------------------------------------------------

    def _send(
        self, method: str, host: str, path: str, *, json: Any = None, timeout: float | None = None
    ) -> Any:
        """One request; returns the decoded JSON body or raises a QtrainError naming ``host``."""
        kwargs: dict[str, Any] = {} if json is None else {"json": json}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        try:
            resp = self._client.request(method, f"{host}{path}", **kwargs)
        except httpx.ConnectTimeout as exc:
            raise ServiceUnavailable(f"ollama {host}: connect timed out") from exc
        except httpx.TimeoutException as exc:
            limit = timeout if timeout is not None else self.timeout_s
            raise OllamaTimeout(
                f"ollama {host}: no answer within {limit:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"ollama {host}: unreachable ({type(exc).__name__}: {exc})") from exc
        status = resp.status_code
        if status == 200:
            try:
                return resp.json()
            except ValueError as exc:
                raise OllamaServerError(
                    f"ollama {host}{path}: answered 200 with a body that is not JSON"
                ) from exc
        detail = _error_text(resp)
        if status == 404 and path not in ("/api/chat", "/api/generate"):
            raise OllamaBadRequest(f"ollama {host}{path}: HTTP 404 ({detail}): is this an Ollama server?")
        if status == 404:
            raise ModelNotFound(
                f"model {self.model} is not pulled on {host}: run ollama pull {self.model} ({detail})"
            )
        if status in (429, 503):
            raise OllamaBusy(f"ollama {host}: busy, HTTP {status} ({detail})")
        if status >= 500:
            raise OllamaServerError(f"ollama {host}: HTTP {status} ({detail})")
        raise OllamaBadRequest(f"ollama {host}{path}: HTTP {status} ({detail})")

    # -- preflight ----------------------------------------------------------------------------

    def version(self, host: str | None = None) -> str:
        """Ollama's version string on ``host`` (default: the first host); one attempt."""
        h = host or self.hosts[0]
        body = self._send("GET", h, "/api/version", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise OllamaServerError(f"ollama {h}/api/version: unexpected answer {str(body)[:100]}")
        return body["version"]

    def has_model(self, host: str | None = None) -> bool:
        """Whether ``self.model`` is pulled on ``host`` ("name" and "name:latest" are the same)."""
        h = host or self.hosts[0]
        body = self._send("GET", h, "/api/tags", timeout=min(self.timeout_s, PREFLIGHT_TIMEOUT_S))
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise OllamaServerError(f"ollama {h}/api/tags: unexpected answer {str(body)[:100]}")
        want = _canonical(self.model)
        for m in models:
            if isinstance(m, dict):
                names = {m.get("name"), m.get("model")}
                if any(isinstance(n, str) and _canonical(n) == want for n in names):
                    return True
        return False

    def preflight(self) -> dict[str, str]:
        """Check every host is reachable and has the model; returns ``{host: version}``."""
        versions: dict[str, str] = {}
        for h in self.hosts:
            try:
                versions[h] = self.version(h)
                present = self.has_model(h)
            except TemporaryError as exc:
                # the message already names the host; add what to do
                raise ServiceUnavailable(f"{exc}; is `ollama serve` running there (OLLAMA_HOST)?") from exc
            if not present:
                raise ModelNotFound(f"model {self.model} is not pulled on {h}: run ollama pull {self.model}")
        return versions

    # -- chat ---------------------------------------------------------------------------------

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): exponential, capped, with equal jitter."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def chat(self, messages: Sequence[dict[str, str]], *, format: Any = ANSWER_SCHEMA) -> ChatResult:
        """POST /api/chat (non-streaming, fixed temperature/seed); retries temporary failures."""
        payload = {
            "model": self.model,
            "messages": list(messages),
            "format": format,
            "stream": False,
            "options": {"temperature": self.temperature, "seed": self.seed},
            "keep_alive": self.keep_alive,
        }
        start = next(self._counter)
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            host = self.hosts[(start + attempt) % len(self.hosts)]
            try:
                body = self._send("POST", host, "/api/chat", json=payload)
            except TemporaryError as exc:
                if attempt + 1 >= attempts:
                    plural = "s" if attempts > 1 else ""
                    raise type(exc)(f"{exc} [gave up after {attempts} attempt{plural}]") from exc
                self._sleep(self.backoff_s(attempt + 1))
                continue
            return _chat_result(body, host, attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover


def _canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _chat_result(body: Any, host: str, attempts: int) -> ChatResult:
    message = body.get("message") if isinstance(body, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise OllamaServerError(f"ollama {host}/api/chat: answer has no message.content")
    return ChatResult(
        text=content,
        prompt_tokens=_int(body.get("prompt_eval_count")),
        completion_tokens=_int(body.get("eval_count")),
        total_duration_ms=_ms(body.get("total_duration")),
        eval_duration_ms=_ms(body.get("eval_duration")),
        host=host,
        attempts=attempts,
        done_reason=str(body.get("done_reason") or ""),
    )
