"""Flower for the tests: ``celery -A worker flower`` with basic auth on a free loopback port."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.pipeline_support import ROOT
from tests.services import child_env

USER, PASSWORD = "qtrain", "s3cret-pass"
#: Columns of Flower's /tasks page that docs/FLOWER.md recommends: ``args`` shows (batch, symbol, window).
TASKS_COLUMNS = "name,uuid,state,args,received,runtime,worker"


@dataclass(frozen=True)
class Flower:
    """A running Flower: its base URL, credentials and log file."""

    url: str
    port: int
    auth: tuple[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str, *, auth: tuple[str, str] | None = None, **params: Any) -> httpx.Response:
        """GET ``path`` (with this Flower's credentials unless ``auth`` is given)."""
        try:
            return httpx.get(self.url + path, auth=auth or self.auth, params=params or None, timeout=10.0)
        except httpx.HTTPError as exc:
            alive = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise AssertionError(f"GET {path}: {exc!r}; Flower {alive}: {self.tail()}") from exc

    def tail(self) -> str:
        """The end of Flower's log (for assertion messages)."""
        return self.log.read_text(errors="replace")[-2000:]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_flower(env: dict[str, str], log_dir: Path, *extra: str, timeout: float = 30.0) -> Iterator[Flower]:
    """Start Flower against ``env``'s broker and wait until it answers ``/healthcheck``."""
    port = free_port()
    log = log_dir / "flower.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        f"--basic-auth={USER}:{PASSWORD}",
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=child_env(env), stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
    flower = Flower(f"http://127.0.0.1:{port}", port, (USER, PASSWORD), log, proc)
    try:
        wait_for("Flower to answer", lambda: _healthy(flower), timeout=timeout, flower=flower)
        yield flower
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _healthy(flower: Flower) -> bool:
    try:
        return httpx.get(flower.url + "/healthcheck", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float = 30.0, flower: Flower | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` (and Flower's log) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if flower is not None and flower.proc.poll() is not None:
            raise AssertionError(f"Flower exited ({flower.proc.returncode}): {flower.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"; Flower: {flower.tail()}" if flower else "")
            )
        time.sleep(0.2)


def qtrain_tasks(flower: Flower) -> dict[str, list[tuple[Any, ...]]]:
    """Task name -> decoded positional args of every qtrain task Flower's ``/api/tasks`` lists."""
    resp = flower.get("/api/tasks")
    resp.raise_for_status()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for info in resp.json().values():
        name, args = info.get("name"), info.get("args")
        if name and name.startswith("qtrain.") and args:
            out.setdefault(name, []).append(tuple(ast.literal_eval(args)))  # repr of a JSON tuple
    return out
