"""Ollama HTTP client: /api/chat with a JSON-schema ``format``, retries, several hosts.

Hosts share the load round-robin (each call starts at the next host; a retry goes to the host
after the one that failed). Temporary failures (connection errors, timeouts, 5xx, 503 queue full,
429) are retried with exponential backoff and jitter, then raised as a ``TemporaryError``
subclass; 404 (model not pulled) and other 4xx are permanent. httpx exceptions are translated
here, at the edge. Keep one ``OllamaClient`` (and so one ``httpx.Client``) per process.

Hostile or broken answers cost bounded memory and time: a body is streamed and read up to
``MAX_RESPONSE_BYTES`` (4 MiB; a real answer is a few KiB) and must be complete within the call's
timeout (a body that keeps trickling in is cut off there; one that stalls hits httpx's read
timeout); JSON nested deeper than ``MAX_JSON_DEPTH`` (64) levels, in the body or in the model's
answer inside it, is refused before any parser sees it. Each of these is a ``PermanentError``
with a one-line reason, so the window ends ``failed``. Hosts older than ``MIN_OLLAMA_VERSION``
(0.5.0, when structured outputs, the JSON-schema ``format``, arrived) are refused by preflight.
"""

from __future__ import annotations

import itertools
import json as _json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np

from model.answer import ANSWER_SCHEMA
from worker.errors import (
    InvalidModelOutput,
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
#: Bytes read of one answer at most (a real /api/chat answer is a few KiB; this bounds memory).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Bytes read of an error answer (non-200) at most: only its first line is reported.
MAX_ERROR_BYTES = 64 * 1024
#: Deepest JSON nesting accepted, in the body and in the model's answer (the schema needs 5).
MAX_JSON_DEPTH = 64
#: Oldest Ollama with JSON-schema ``format`` (structured outputs came in 0.5.0).
MIN_OLLAMA_VERSION = (0, 5, 0)


class OllamaBadRequest(PermanentError):
    """Raised when Ollama answers 400 or another 4xx: the request itself is wrong."""


class OllamaAnswerRefused(PermanentError):
    """Raised when an answer is too large, never ends, or is nested too deep to be parsed safely."""


class OllamaTooOld(PermanentError):
    """Raised when an Ollama host is older than 0.5.0 and so cannot take a JSON-schema ``format``."""


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text, strings skipped; a cheap scan before parsing
    (Python's json recurses per level: 100,000 levels would raise RecursionError or worse)."""
    brackets = np.frombuffer(_JSON_STRING.sub(b'""', data).translate(None, _NOT_BRACKET), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


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


def _error_text(raw: bytes) -> str:
    try:
        body = _json.loads(raw) if json_depth(raw) <= MAX_JSON_DEPTH else None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"][:200]
    except ValueError:
        pass
    return raw[:200].decode("utf-8", "replace").replace("\n", " ")


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
        clock: Callable[[], float] = time.monotonic,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
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
        self._clock = clock
        self.max_response_bytes = max_response_bytes
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
        limit_s = timeout if timeout is not None else self.timeout_s
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        try:
            with self._client.stream(method, f"{host}{path}", **kwargs) as resp:
                status = resp.status_code
                cap = self.max_response_bytes if status == 200 else MAX_ERROR_BYTES
                raw = self._read(resp, f"{host}{path}", cap, self._clock() + limit_s, limit_s)
        except httpx.ConnectTimeout as exc:
            raise ServiceUnavailable(f"ollama {host}: connect timed out") from exc
        except httpx.TimeoutException as exc:
            why = type(exc).__name__
            raise OllamaTimeout(f"ollama {host}: no answer within {limit_s:g} s ({why})") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"ollama {host}: unreachable ({type(exc).__name__}: {exc})") from exc
        if status == 200:
            if json_depth(raw) > MAX_JSON_DEPTH:
                raise OllamaAnswerRefused(
                    f"ollama {host}{path}: answer nested deeper than {MAX_JSON_DEPTH} levels; refused"
                )
            try:
                return _json.loads(raw)
            except ValueError as exc:
                raise OllamaServerError(
                    f"ollama {host}{path}: answered 200 with a body that is not JSON"
                ) from exc
        detail = _error_text(raw)
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

    def _read(self, resp: httpx.Response, where: str, cap: int, deadline: float, limit_s: float) -> bytes:
        """The body, at most ``cap`` bytes and complete before ``deadline``; else refused (permanent)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise OllamaAnswerRefused(f"ollama {where}: answer larger than {cap:,} bytes; refused")
            if self._clock() > deadline:
                raise OllamaAnswerRefused(
                    f"ollama {where}: answer still arriving after {limit_s:g} s (OLLAMA_TIMEOUT); refused"
                )
            chunks.append(chunk)
        return b"".join(chunks)

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
    if json_depth(content.encode()) > MAX_JSON_DEPTH:
        raise InvalidModelOutput(
            f"ollama {host}/api/chat: the model's answer is nested deeper than {MAX_JSON_DEPTH} levels;"
            " refused"
        )
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
