"""Flower watches qtrain: a real worker, Flower with basic auth, a small heuristic batch via the CLI.

Checks the JSON API (tasks with symbol and window index, 401 without auth) and the Prometheus
``/metrics`` names that docs/FLOWER.md tells users to chart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.flower_support import Flower, qtrain_tasks, run_flower, wait_for
from tests.pipeline_support import pipeline_env, query, seed_candles, train_json
from worker.cluster.local import start_workers

pytestmark = pytest.mark.integration

#: The metric names docs/FLOWER.md documents (checked against flower/events.py in the test below).
DOCUMENTED_METRICS = (
    "flower_events_total",
    "flower_task_runtime_seconds",
    "flower_task_prefetch_time_seconds",
    "flower_worker_prefetched_tasks",
    "flower_worker_online",
    "flower_worker_number_of_currently_executing_tasks",
)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "FLOWER.md"


@pytest.fixture
def watched_batch(
    database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Flower, dict[str, Any]]]:
    """Flower first (so that it sees every event), then a worker, then a small heuristic batch.

    One pool process: the two reducers then never commit at the same moment (see the report).
    """
    seed_candles(database_url, n=120)  # 4 windows per symbol
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    with run_flower(env, tmp_path) as flower:
        with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, loglevel="INFO"):
            final = train_json(env, "--analyst", "heuristic")
            yield flower, final


def test_flower_api_lists_the_batch_tasks_with_symbol_and_window(watched_batch, database_url) -> None:
    flower, final = watched_batch
    batch_id = final["batch_id"]
    rows = query(database_url, "SELECT symbol, idx FROM windows WHERE batch_id = %s", (batch_id,))
    windows = {(s, int(i)) for s, i in rows}
    assert len(windows) == 8

    def complete() -> dict[str, list[tuple[Any, ...]]] | None:
        tasks = qtrain_tasks(flower)
        analysed = {(a[1], a[2]) for a in tasks.get("qtrain.analyze_window", []) if a[0] == batch_id}
        reduced = {a[1] for a in tasks.get("qtrain.reduce_symbol", []) if a[0] == batch_id}
        return tasks if analysed == windows and reduced == {"BTC-USDT", "ETH-USDT"} else None

    tasks = wait_for("Flower to list the batch's tasks", complete, timeout=20, flower=flower)
    assert all(
        len(a) == 3 and isinstance(a[1], str) and isinstance(a[2], int)
        for a in tasks["qtrain.analyze_window"]
    )
    # Filtering by task name works, and the task detail has the state.
    resp = flower.get("/api/tasks", taskname="qtrain.reduce_symbol")
    assert resp.status_code == 200
    infos = list(resp.json().values())
    assert infos and {i["name"] for i in infos} == {"qtrain.reduce_symbol"}
    assert {i["state"] for i in infos} == {"SUCCESS"}
    one = flower.get(f"/api/task/info/{infos[0]['uuid']}")
    assert one.status_code == 200 and one.json()["routing_key"] == "reduce"


def test_flower_refuses_without_auth(watched_batch) -> None:
    flower, _ = watched_batch
    for path in ("/api/tasks", "/api/workers", "/tasks", "/"):
        assert flower.get(path, auth=("", "")).status_code == 401, path
        assert flower.get(path, auth=("qtrain", "wrong")).status_code == 401, path
    assert flower.get("/api/workers").status_code == 200


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    out = []
    for m in re.finditer(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples if n == name and labels.items() <= lab.items())


def test_flower_metrics_has_the_documented_names(watched_batch) -> None:
    flower, _ = watched_batch

    def ready() -> str | None:
        text = flower.get("/metrics").text
        s = parse_metrics(text)
        seen = total(s, "flower_events_total", task="qtrain.reduce_symbol", type="task-succeeded")
        return text if total(s, "flower_worker_online") >= 1 and seen >= 2 else None

    text = wait_for("Flower's metrics of the batch", ready, timeout=20, flower=flower)
    for name in DOCUMENTED_METRICS:
        assert re.search(rf"^# TYPE {name} ", text, re.M), name
    s = parse_metrics(text)
    assert total(s, "flower_events_total", task="qtrain.analyze_window", type="task-succeeded") == 8
    assert total(s, "flower_task_runtime_seconds_count", task="qtrain.analyze_window") == 8
    # >= 2: two windows finishing at once may both enqueue the (idempotent) reducer
    assert total(s, "flower_task_runtime_seconds_count", task="qtrain.reduce_symbol") >= 2
    assert any(n == "flower_worker_number_of_currently_executing_tasks" for n, _, _ in s) or (
        "# TYPE flower_worker_number_of_currently_executing_tasks gauge" in text
    )
    # /metrics needs no auth in Flower 2.2 (docs/FLOWER.md warns: do not publish the port).
    assert flower.get("/metrics", auth=("", "")).status_code == 200


def test_documented_metric_names_exist_in_flower() -> None:
    import flower.events

    source = Path(flower.events.__file__).read_text()
    docs = DOCS.read_text()
    for name in DOCUMENTED_METRICS:
        assert f"'{name}'" in source, name
        assert f"`{name}`" in docs, name
    # Every flower_* name the docs mention is one Flower exports (histogram suffixes allowed).
    for name in set(re.findall(r"\bflower_[a-z_]+", docs)):
        base = re.sub(r"_(bucket|count|sum|created)$", "", name)
        assert f"'{base}'" in source, name


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "open to anyone"),
        ("", "open to anyone"),
        (":", "empty user or password"),
        ("admin:", "empty user or password"),
        (":secret", "empty user or password"),
        ("me:s3cret,you:", "entry 2 has an empty user or password"),
        ("admin:change-me-flower", "placeholder"),
    ],
)
def test_qtrain_flower_refuses_empty_credentials(value: str | None, needle: str) -> None:
    from click.testing import CliRunner

    from producer.cli import cli

    res = CliRunner().invoke(cli, ["flower", "--persistent=True"], env={"FLOWER_BASIC_AUTH": value})
    assert res.exit_code == 2, res.output  # never reached exec: this test process is still pytest
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "FLOWER_BASIC_AUTH" in lines[0], lines


def test_qtrain_flower_refuses_credentials_among_flowers_options() -> None:
    from click.testing import CliRunner

    from producer.cli import cli

    res = CliRunner().invoke(cli, ["flower", "--basic_auth=x:leak"], env={"FLOWER_BASIC_AUTH": "me:s3cret"})
    assert res.exit_code == 2 and "--basic_auth" in res.output and "leak" not in res.output


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) with a listening socket on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                out.add(address)
    return out


@pytest.mark.integration
def test_qtrain_flower_listens_on_loopback_with_credentials_off_its_command_line(redis_url, tmp_path) -> None:
    import subprocess
    import sys

    from tests.flower_support import ROOT, _healthy, free_port
    from tests.services import child_env

    port = free_port()
    env = child_env({"CELERY_BROKER_URL": redis_url, "FLOWER_BASIC_AUTH": "me:s3cret-pass"})
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer", "flower", f"--port={port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    flower = Flower(f"http://127.0.0.1:{port}", port, ("me", "s3cret-pass"), log, proc)
    try:
        wait_for("qtrain flower to answer", lambda: _healthy(flower), flower=flower)
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only
        assert flower.get("/api/workers", auth=("", "")).status_code == 401
        assert flower.get("/api/workers").status_code == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()  # the exec'd Flower itself
        assert "flower" in cmdline and "s3cret-pass" not in cmdline
    finally:
        proc.terminate()
        proc.wait(10)
    assert "this machine only" in log.read_text()


def test_the_docs_never_show_flower_open() -> None:
    """Every Flower command in README.md and the docs (docs/*.md) binds to loopback with credentials:
    ``qtrain flower`` (refuses empty ones, 127.0.0.1 by default) or ``celery -A worker flower``
    with ``--address=127.0.0.1`` and a literal ``--basic-auth=user:password`` (a ``$VAR`` is empty
    when unset, and Flower then lets anyone in)."""
    readme = DOCS.parents[1] / "README.md"
    shown = 0
    for doc in (readme, *sorted(DOCS.parent.glob("*.md"))):
        for line in doc.read_text().splitlines():
            cmd = line.strip().strip("`")
            if re.match(r"celery -A worker flower\b", cmd):
                shown += 1
                assert "--address=127.0.0.1" in cmd, line
                assert re.search(r'--basic-auth="?[^"$:\s]+:[^"$\s]+', cmd), line
            elif re.match(r"(FLOWER_BASIC_AUTH=\S+ )?qtrain flower\b", cmd):
                shown += 1
                assert "--address" not in cmd or "--address=127.0.0.1" in cmd, line
    assert shown >= 3
