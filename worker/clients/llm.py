"""What the two LLM clients share: the protocol, the result, the budget, bounded reads, retries.

qtrain speaks two HTTP APIs: Ollama's native ``/api/chat`` (``worker.clients.ollama``) and the
OpenAI-compatible ``/v1/chat/completions`` served by llama.cpp's llama-server, llama-cpp-python,
vLLM, SGLang, LM Studio and Ollama's ``/v1`` (``worker.clients.openai``);
``worker.clients.factory.chat_client`` picks one by ``QTRAIN_LLM_API``. Both keep the same
contract: hosts share the load round-robin, temporary failures are retried with backoff and
jitter on the next host, an answer is read up to 4 MiB, 64 levels of nesting and the call's
timeout, and the context and answer budget is explicit:

- before a call, a prompt whose estimated size plus the answer cap does not fit the context
  (``QTRAIN_LLM_NUM_CTX``) is refused (``ContextExceeded``), and so is a server's own "context
  exceeded" answer, with both numbers;
- after it, a prompt the server reports far smaller than its estimated size was cut by the server
  (``PromptTruncated``: Ollama truncates silently), and an answer that ended at the token cap
  (``AnswerCut``) is a failure with that reason, never a half-read analysis.
"""

from __future__ import annotations

import http.client
import itertools
import json as _json
import random
import re
import select
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import httpx
import numpy as np

from model.analyst.answer import ANSWER_SCHEMA
from worker.errors import (
    LLMBusy,
    LLMServerError,
    LLMTimeout,
    PermanentError,
    QtrainError,
    ServiceUnavailable,
    TemporaryError,
)
from worker.retry import backoff_s

#: Seconds allowed for the small preflight calls (/api/version, /api/tags, /v1/models).
PREFLIGHT_TIMEOUT_S = 10.0
#: Seconds allowed to open a TCP connection (a dead host should fail fast, not after 300 s).
CONNECT_TIMEOUT_S = 10.0
#: Bytes read of one answer at most (a real answer is a few KiB; this bounds memory).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Bytes read of an error answer (non-200) at most: only its first line is reported.
MAX_ERROR_BYTES = 64 * 1024
#: Deepest JSON nesting accepted, in the body and in the model's answer (the schema needs 5).
MAX_JSON_DEPTH = 64
#: Characters per token of the prompt estimate (English and numbers run 2.5-4 with the common
#: tokenizers, so the estimate errs low: a truncation check against it does not fire on a whole prompt).
CHARS_PER_TOKEN = 4.0
#: Tokens of chat template per message (role markers), added to the estimate.
TOKENS_PER_MESSAGE = 4
#: A reported prompt below this share of the estimate was cut by the server.
TRUNCATED_BELOW = 0.5
#: Prompts estimated smaller than this are not checked for truncation: they fit any server's
#: context (Ollama's smallest default is 2048), and the estimate of a few words is noise.
CHECKED_FROM_TOKENS = 256


class LLMBadRequest(PermanentError):
    """Raised when the LLM server answers 400 or another 4xx: the request itself is wrong."""


class AnswerRefused(PermanentError):
    """Raised when an answer is too large, never ends, or is nested too deep to be parsed safely."""


class ContextExceeded(PermanentError):
    """Raised when the prompt plus the answer cap do not fit the model's context."""


class PromptTruncated(PermanentError):
    """Raised when the server read far fewer prompt tokens than were sent (it cut the prompt)."""


class AnswerCut(PermanentError):
    """Raised when the answer stopped at the token cap (``QTRAIN_LLM_MAX_TOKENS``), so it is partial."""


@dataclass(frozen=True)
class ChatResult:
    """The text of one chat answer plus the usage the server reported."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_duration_ms: float | None
    eval_duration_ms: float | None
    host: str
    attempts: int
    done_reason: str = ""
    #: The structured-output shape the answer was constrained by ("" when none was sent).
    constrained: str = ""


class ChatClient(Protocol):
    """The part of an LLM client the analyse step uses (a Protocol, so tests can stand in)."""

    def chat(self, messages: Sequence[dict[str, str]], *, format: Any = ANSWER_SCHEMA) -> ChatResult: ...


class LLMClient(ChatClient, Protocol):
    """A full client: chat, the preflight of ``qtrain train`` and the worker, and close."""

    hosts: tuple[str, ...]
    model: str

    def preflight(self) -> dict[str, str]: ...

    def close(self) -> None: ...


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


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """``json_depth(data) > limit``, without the scan when ``data`` has at most ``limit`` opening
    brackets in all (strings included: the depth cannot exceed them), as every real answer has."""
    return data.count(b"[") + data.count(b"{") > limit and json_depth(data) > limit


def as_int(x: Any) -> int | None:
    """``x`` when it is an int (not a bool), else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace runs folded), at most ``limit`` characters."""
    return " ".join(text.split())[:limit]


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The prompt's size in tokens, estimated from its characters (see ``CHARS_PER_TOKEN``)."""
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return int(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def check_fits(where: str, estimate: int, max_tokens: int, num_ctx: int) -> None:
    """``ContextExceeded`` when the prompt estimate plus the answer cap exceed the context."""
    if estimate + max_tokens > num_ctx:
        raise ContextExceeded(
            f"{where}: the prompt (about {estimate} tokens) plus the answer cap ({max_tokens}) exceed the"
            f" context of {num_ctx} tokens: raise QTRAIN_LLM_NUM_CTX (and the server's context) or lower"
            " QTRAIN_LLM_MAX_TOKENS"
        )


def check_not_truncated(where: str, reported: int | None, cached: int | None, estimate: int) -> None:
    """``PromptTruncated`` when the server's prompt count is far below the estimate.

    ``cached`` (prompt tokens served from the server's cache, when it says so) is added: some
    servers report only the newly evaluated part of a prompt whose prefix was cached."""
    if reported is None or reported <= 0 or estimate < CHECKED_FROM_TOKENS:
        return  # not reported (nothing to compare), or too small to have been cut
    seen = reported + (cached or 0)
    if seen < estimate * TRUNCATED_BELOW:
        raise PromptTruncated(
            f"{where}: prompt truncated by the server ({reported} of about {estimate} tokens):"
            " raise QTRAIN_LLM_NUM_CTX"
        )


def answer_cut(where: str, max_tokens: int, completion_tokens: int | None) -> AnswerCut:
    """The error of an answer that stopped at the token cap."""
    n = completion_tokens if completion_tokens is not None else max_tokens
    return AnswerCut(f"{where}: answer cut at {n} tokens (QTRAIN_LLM_MAX_TOKENS={max_tokens}); raise it")


class PerThreadTransport(httpx.BaseTransport):
    """httpx's transport with one small connection pool per thread (a shared TLS context).

    A threads-pool worker makes hundreds of calls at once from one process. Through one shared
    ``httpx.HTTPTransport`` each request scans the pool's every connection and waiting request
    under its lock: measured with 256 threads against a server answering in 2 s, 6.5 ms of CPU
    per call and a third of the calls' possible rate (and it was capped at 64 connections); with
    a pool per thread, 0.7 ms and the full rate. A thread makes one call at a time, so its pool
    holds one keep-alive connection per host; a prefork child (one thread) is unchanged.
    """

    def __init__(self) -> None:
        import ssl

        self._tls = ssl.create_default_context()  # built once (~ms): every thread's pool shares it
        self._local = threading.local()
        self._all: list[httpx.HTTPTransport] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on this thread's own pool (made on the thread's first call)."""
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = httpx.HTTPTransport(verify=self._tls)
            with self._lock:
                self._all.append(transport)
        return transport.handle_request(request)

    def close(self) -> None:
        """Close every thread's pool."""
        with self._lock:
            transports, self._all = self._all, []
        for t in transports:
            t.close()


def encode_json(body: Any) -> bytes:
    """A request body as httpx's ``json=`` encodes it (compact, UTF-8, no NaN): the same bytes
    whichever transport sends them."""
    return _json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def direct_host(host: str) -> tuple[str, str, int, str] | None:
    """``(scheme, hostname, port, path prefix)`` of a host URL the direct transport may serve, or
    None for one that needs httpx (credentials in the URL, a query, a proxy from the environment)."""
    try:
        parts = urlsplit(host)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None  # httpx sends URL credentials as basic auth: keep its path for them
    if any(k in ("http", "https", "all") for k in urllib.request.getproxies()):
        return None  # a proxy from the environment: httpx honours it (and NO_PROXY)
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), parts.path


class DirectTransport:
    """Keep-alive HTTP/1.1 through ``http.client``, one connection per thread and host.

    httpx builds a Request, a Response, header objects and a stream per call: about 2 ms of CPU a
    call, a fifth of a threads-pool worker's per-window CPU at 256 in flight. This sends the same
    request bytes on a plain socket and reads the answer with the same bounds (the caller's cap
    and deadline, the call's timeout on every socket operation, a shorter one to connect). Its
    failures are raised as the httpx exceptions httpx would raise for them, so that one mapping
    to qtrain's errors serves both transports. A connection the server closed while idle is
    noticed before reuse (a zero-timeout poll, as httpcore does) and replaced; a connection that
    failed or was not read to its end is closed, never reused.
    """

    def __init__(self, tls: Any) -> None:
        self._tls = tls
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, target: tuple[str, str, int, str], connect_s: float) -> http.client.HTTPConnection:
        """This thread's open connection to ``target`` (a new one when none or the server hung up)."""
        conns: dict[tuple[str, str, int, str], http.client.HTTPConnection] | None
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.pop(target, None)
        if conn is not None and conn.sock is not None:
            poller = select.poll()
            poller.register(conn.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            if not poller.poll(0):
                return conn
        if conn is not None:
            self._drop(conn)
        scheme, hostname, port, _ = target
        if scheme == "https":
            conn = http.client.HTTPSConnection(hostname, port, timeout=connect_s, context=self._tls)
        else:
            conn = http.client.HTTPConnection(hostname, port, timeout=connect_s)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(str(exc)) from exc
        with self._lock:
            self._all.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def exchange(
        self,
        target: tuple[str, str, int, str],
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        *,
        timeout_s: float,
        connect_s: float,
        read: Callable[[int, Callable[[int], bytes]], bytes],
    ) -> tuple[int, bytes]:
        """One request on this thread's connection to ``target``: (status, body read by ``read``).

        ``read(status, read1)`` reads the body with its bounds through ``read1(n)`` (at most n
        bytes, b"" at the end) and may raise; the connection is then closed."""
        conn = self._connection(target, connect_s)
        done = False
        try:
            assert conn.sock is not None
            conn.sock.settimeout(timeout_s)
            conn.timeout = timeout_s
            conn.putrequest(method, target[3] + path)
            if body is not None:
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            try:
                conn.endheaders(body)
            except TimeoutError as exc:
                raise httpx.WriteTimeout(str(exc) or "timed out") from exc
            except OSError as exc:
                raise httpx.WriteError(str(exc)) from exc
            try:
                resp = conn.getresponse()
                status = resp.status
                raw = read(status, resp.read1)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "timed out") from exc
            except http.client.HTTPException as exc:
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from exc
            if resp.length == 0:  # read to its end: release it, the socket stays open (keep-alive)
                resp.close()
            done = not resp.will_close and resp.isclosed()
        finally:
            if done:
                self._local.conns[target] = conn
            else:
                self._drop(conn)
        return status, raw

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()


class HttpLLM:
    """Hosts, one pooled ``httpx.Client``, bounded reads, backoff and the retry loop of a client.

    The base owns the attempt loop of ``chat`` (budget check, host rotation, retries with backoff)
    and the status codes every server shares (``_status_error``); a backend (``OllamaClient``,
    ``OpenAIClient``) owns its wire format only: ``_post_chat`` builds and sends one request,
    ``_result`` reads the answer, ``_error`` maps its error bodies."""

    #: Names the API in every message ("ollama http://gpu1:11434: ...").
    api = "llm"
    #: The context the prompt and the answer cap must fit, and the answer cap (set by each backend).
    num_ctx: int
    max_tokens: int
    #: Headers sent with every request (an API key); None: none.
    _headers: Mapping[str, str] | None = None

    def __init__(
        self,
        hosts: Sequence[str],
        model: str,
        *,
        client: httpx.Client | None,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        sleep: Callable[[float], None],
        rng: random.Random | Callable[[], random.Random],
        clock: Callable[[], float],
        max_response_bytes: int,
    ) -> None:
        self.hosts = tuple(h.strip().rstrip("/") for h in hosts if h.strip())
        if not self.hosts:
            raise ValueError(f"hosts must name at least one {self.api} host")
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
        self._sleep = sleep
        self._clock = clock
        self.max_response_bytes = max_response_bytes
        self._rng = rng if isinstance(rng, random.Random) else rng()
        self._owns_client = client is None
        transport = PerThreadTransport()
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S)),
            transport=transport,
        )
        # Hosts the direct transport serves (only with the client made here: a given client, the
        # tests' MockTransport, is always used), and the transport sharing the TLS context.
        self._direct = DirectTransport(transport._tls) if client is None else None
        self._targets = {h: direct_host(h) for h in self.hosts} if client is None else {}
        # Rotating start host; a random offset so that many worker processes spread out.
        self._counter = itertools.count(self._rng.randrange(len(self.hosts)))

    def close(self) -> None:
        """Close the underlying httpx client if this object created it."""
        if self._owns_client:
            self._client.close()
        if self._direct is not None:
            self._direct.close()

    def _exchange(
        self,
        method: str,
        host: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, float]:
        """One request: (status, body bytes, the time limit applied); transport errors translated."""
        limit_s = timeout if timeout is not None else self.timeout_s
        target = self._targets.get(host)
        try:
            if target is not None and self._direct is not None:
                return (*self._direct_exchange(target, method, host, path, json, headers, limit_s), limit_s)
            kwargs: dict[str, Any] = {} if json is None else {"json": json}
            if headers:
                kwargs["headers"] = dict(headers)
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
            with self._client.stream(method, f"{host}{path}", **kwargs) as resp:
                status = resp.status_code
                cap = self.max_response_bytes if status == 200 else MAX_ERROR_BYTES
                raw = self._read(resp, f"{host}{path}", cap, self._clock() + limit_s, limit_s)
        except httpx.ConnectTimeout as exc:
            raise ServiceUnavailable(f"{self.api} {host}: connect timed out") from exc
        except httpx.TimeoutException as exc:
            why = type(exc).__name__
            raise LLMTimeout(f"{self.api} {host}: no answer within {limit_s:g} s ({why})") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{self.api} {host}: unreachable ({type(exc).__name__}: {exc})") from exc
        return status, raw, limit_s

    def _direct_exchange(
        self,
        target: tuple[str, str, int, str],
        method: str,
        host: str,
        path: str,
        json: Any,
        headers: Mapping[str, str] | None,
        limit_s: float,
    ) -> tuple[int, bytes]:
        """``_exchange`` through the direct transport: the same body bytes, bounds and errors."""
        assert self._direct is not None
        body = None if json is None else encode_json(json)
        where = f"{host}{path}"

        def read(status: int, read1: Callable[[int], bytes]) -> bytes:
            cap = self.max_response_bytes if status == 200 else MAX_ERROR_BYTES
            return self._read_chunks(
                iter(lambda: read1(65536), b""), where, cap, self._clock() + limit_s, limit_s
            )

        return self._direct.exchange(
            target,
            method,
            path,
            body,
            headers,
            timeout_s=limit_s,
            connect_s=min(limit_s, CONNECT_TIMEOUT_S),
            read=read,
        )

    def _read(self, resp: httpx.Response, where: str, cap: int, deadline: float, limit_s: float) -> bytes:
        """The body, at most ``cap`` bytes and complete before ``deadline``; else refused (permanent)."""
        return self._read_chunks(resp.iter_bytes(), where, cap, deadline, limit_s)

    def _read_chunks(
        self, chunks_in: Iterator[bytes], where: str, cap: int, deadline: float, limit_s: float
    ) -> bytes:
        """``_read`` over any chunk iterator (httpx's stream or the direct transport's reads)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in chunks_in:
            size += len(chunk)
            if size > cap:
                raise AnswerRefused(f"{self.api} {where}: answer larger than {cap:,} bytes; refused")
            if self._clock() > deadline:
                raise AnswerRefused(
                    f"{self.api} {where}: answer still arriving after {limit_s:g} s (OLLAMA_TIMEOUT); refused"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, raw: bytes, where: str, not_json: Callable[[str], Exception]) -> Any:
        """A 200 body as JSON: refused when nested too deep, ``not_json(message)`` when it is not JSON."""
        if too_deep(raw):
            raise AnswerRefused(
                f"{self.api} {where}: answer nested deeper than {MAX_JSON_DEPTH} levels; refused"
            )
        try:
            return _json.loads(raw)
        except ValueError as exc:
            raise not_json(f"{self.api} {where}: answered 200 with a body that is not JSON") from exc

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): exponential, capped, with equal jitter."""
        return backoff_s(attempt, base_s=self.backoff_base_s, cap_s=self.backoff_max_s, rng=self._rng)

    def _attempts(self) -> Iterator[tuple[int, str]]:
        """(attempt number, host) for each try of one call: the next start host, then onwards."""
        start = next(self._counter)
        for attempt in range(self.max_retries + 1):
            yield attempt + 1, self.hosts[(start + attempt) % len(self.hosts)]

    def _retry_or_raise(self, exc: TemporaryError, attempt: int) -> None:
        """After a temporary failure: sleep the backoff, or raise it when the attempts are used up."""
        attempts = self.max_retries + 1
        if attempt >= attempts:
            plural = "s" if attempts > 1 else ""
            raise type(exc)(f"{exc} [gave up after {attempts} attempt{plural}]") from exc
        self._sleep(self.backoff_s(attempt))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the attempt loop; the backend's wire format behind _post_chat, _result and _error -------

    def chat(self, messages: Sequence[dict[str, str]], *, format: Any = ANSWER_SCHEMA) -> ChatResult:
        """One chat call (non-streaming, fixed temperature and seed, explicit budget): temporary
        failures are retried on the next host with backoff; a cut prompt or answer is a
        ``PermanentError``."""
        estimate = estimate_tokens(messages)
        check_fits(self.api, estimate, self.max_tokens, self.num_ctx)
        for attempt, host in self._attempts():
            t0 = self._clock()
            try:
                body, constrained = self._post_chat(host, messages, format)
            except TemporaryError as exc:
                self._retry_or_raise(exc, attempt)
                continue
            elapsed_ms = (self._clock() - t0) * 1000.0
            return self._result(body, host, attempt, constrained, estimate, elapsed_ms)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_chat(self, host: str, messages: Sequence[dict[str, str]], format: Any) -> tuple[Any, str]:
        """The backend's one chat exchange with ``host``: (decoded answer, the constraint sent or "")."""
        raise NotImplementedError

    def _result(
        self, body: Any, host: str, attempt: int, constrained: str, estimate: int, elapsed_ms: float
    ) -> ChatResult:
        """The backend's reading of a chat answer; a cut prompt or answer raises (``PermanentError``)."""
        raise NotImplementedError

    def _send(
        self, method: str, host: str, path: str, *, json: Any = None, timeout: float | None = None
    ) -> Any:
        """One request; returns the decoded JSON body or raises a QtrainError naming ``host``."""
        status, raw, _ = self._exchange(method, host, path, json=json, timeout=timeout, headers=self._headers)
        if status == 200:
            return self._decode(raw, f"{host}{path}", LLMServerError)
        raise self._error(status, host, path, raw)

    def _error(self, status: int, host: str, path: str, raw: bytes) -> QtrainError:
        """The backend's error for a non-200 answer (its error body read); ``_status_error`` by default."""
        return self._status_error(status, host, path, one_line(raw[:200].decode("utf-8", "replace")))

    def _status_error(self, status: int, host: str, path: str, detail: str) -> QtrainError:
        """What a status means on any server: 429/503 busy and other 5xx temporary, else a bad request."""
        if status in (429, 503):
            return LLMBusy(f"{self.api} {host}: busy, HTTP {status} ({detail})")
        if status >= 500:
            return LLMServerError(f"{self.api} {host}: HTTP {status} ({detail})")
        return LLMBadRequest(f"{self.api} {host}{path}: HTTP {status} ({detail})")
