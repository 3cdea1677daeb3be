"""The LLM clients' direct transport (``worker.clients.llm.DirectTransport``) on real sockets:
the bytes it sends, keep-alive, a connection the server dropped, and its failures mapped to the
same qtrain errors as httpx's."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from worker.clients.llm import (
    MAX_ERROR_BYTES,
    MAX_JSON_DEPTH,
    AnswerRefused,
    direct_host,
    encode_json,
    json_depth,
    too_deep,
)
from worker.clients.ollama import OllamaClient
from worker.errors import LLMServerError, LLMTimeout, ServiceUnavailable

ANSWER = {
    "model": "m",
    "message": {"role": "assistant", "content": '{"regime": "bull"}'},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 5,
    "eval_count": 7,
}


def _reply(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class Server:
    """A loopback HTTP server run by ``serve(conn, server)`` per connection; records requests."""

    def __init__(self, serve: Callable[[socket.socket, Server], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn, self), daemon=True).start()

    def read_request(self, conn: socket.socket) -> bool:
        """Read one request off ``conn`` into ``requests``; False at EOF."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        size = next(
            (
                int(h.split(b":", 1)[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < size:
            body += conn.recv(65536)
        self.requests.append((head, body))
        return True


@contextmanager
def server(serve: Callable[[socket.socket, Server], None]) -> Iterator[Server]:
    s = Server(serve)
    try:
        yield s
    finally:
        s.sock.close()


def keep_alive(conn: socket.socket, srv: Server) -> None:
    with conn:
        while srv.read_request(conn):
            conn.sendall(_reply(json.dumps(ANSWER).encode()))


def client(url: str, **kw: object) -> OllamaClient:
    c = OllamaClient([url], "m", max_retries=0, **kw)  # type: ignore[arg-type]
    c._versions[url] = "0.6.2"  # no /api/version round trip in these tests
    return c


def test_the_same_body_bytes_as_httpx_and_keep_alive() -> None:
    with server(keep_alive) as srv:
        c = client(srv.url)
        assert c._targets[srv.url] is not None  # the direct path serves a plain host
        for _ in range(3):
            assert c.chat([{"role": "user", "content": "héllo"}]).text == '{"regime": "bull"}'
        assert srv.connections == 1  # one kept-alive connection for the thread
        head, body = srv.requests[0]
        assert head.startswith(b"POST /api/chat HTTP/1.1\r\n")
        assert b"Content-Type: application/json" in head
        payload = json.loads(body)
        assert body == encode_json(payload)  # compact UTF-8 JSON, as httpx's json= sends it
        assert payload["messages"][0]["content"] == "héllo"
        c.close()


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    def one_each(conn: socket.socket, srv: Server) -> None:
        with conn:
            if srv.read_request(conn):
                conn.sendall(_reply(json.dumps(ANSWER).encode()))
            time.sleep(0.05)  # then close it, while the client keeps it idle

    with server(one_each) as srv:
        c = client(srv.url)
        c.chat([{"role": "user", "content": "a"}])
        time.sleep(0.3)
        c.chat([{"role": "user", "content": "b"}])
        assert srv.connections == 2 and len(srv.requests) == 2


def test_connection_close_is_not_reused() -> None:
    def close_after(conn: socket.socket, srv: Server) -> None:
        with conn:
            if srv.read_request(conn):
                conn.sendall(_reply(json.dumps(ANSWER).encode(), extra="Connection: close\r\n"))

    with server(close_after) as srv:
        c = client(srv.url)
        for _ in range(2):
            c.chat([{"role": "user", "content": "a"}])
        assert srv.connections == 2


def test_refused_and_silent_servers_map_to_qtrain_errors() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ServiceUnavailable, match=r"unreachable \(ConnectError: .*refused"):
        client(f"http://127.0.0.1:{port}").chat([{"role": "user", "content": "a"}])

    def silent(conn: socket.socket, srv: Server) -> None:
        srv.read_request(conn)
        time.sleep(2)
        conn.close()

    with server(silent) as srv, pytest.raises(LLMTimeout, match=r"no answer within 0.5 s \(ReadTimeout\)"):
        client(srv.url, timeout_s=0.5).chat([{"role": "user", "content": "a"}])

    def hang_up(conn: socket.socket, srv: Server) -> None:
        srv.read_request(conn)
        conn.close()

    with server(hang_up) as srv, pytest.raises(ServiceUnavailable, match="RemoteProtocolError"):
        client(srv.url).chat([{"role": "user", "content": "a"}])


def test_error_bodies_are_read_bounded_and_reported() -> None:
    def error(conn: socket.socket, srv: Server) -> None:
        with conn:
            srv.read_request(conn)
            conn.sendall(_reply(b'{"error": "boom"}', status="500 Internal Server Error"))

    with server(error) as srv, pytest.raises(LLMServerError, match="HTTP 500 .*boom"):
        client(srv.url).chat([{"role": "user", "content": "a"}])

    def huge_error(conn: socket.socket, srv: Server) -> None:
        with conn:
            srv.read_request(conn)
            conn.sendall(_reply(b"x" * (MAX_ERROR_BYTES + 10), status="500 Internal Server Error"))

    with server(huge_error) as srv, pytest.raises(AnswerRefused, match="larger than"):
        client(srv.url).chat([{"role": "user", "content": "a"}])


def test_chunked_answers_are_read() -> None:
    def chunked(conn: socket.socket, srv: Server) -> None:
        with conn:
            srv.read_request(conn)
            body = json.dumps(ANSWER).encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            parts = [body[:10], body[10:]]
            conn.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")

    with server(chunked) as srv:
        assert client(srv.url).chat([{"role": "user", "content": "a"}]).text == '{"regime": "bull"}'


@pytest.mark.parametrize(
    ("host", "direct"),
    [
        ("http://gpu:11434", True),
        ("https://gpu/v1", True),
        ("http://me:secret@gpu:11434", False),  # credentials: httpx sends them as basic auth
        ("http://gpu:11434?x=1", False),
        ("ftp://gpu", False),
    ],
)
def test_which_hosts_the_direct_transport_serves(
    host: str, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    assert (direct_host(host) is not None) == direct
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert direct_host(host) is None  # a proxy from the environment: httpx's path honours it


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[" * 64 + b"]" * 64,
        b"[" * 65 + b"]" * 65,
        b'{"a": "' + b"[" * 100 + b'"}',
        b'{"a": "' + b"[" * 100 + b'", "b": ' + b"[" * 65 + b"]" * 65 + b"}",
        b'"\\"[[["',
    ],
)
def test_too_deep_agrees_with_json_depth(data: bytes) -> None:
    assert too_deep(data) == (json_depth(data) > MAX_JSON_DEPTH)
