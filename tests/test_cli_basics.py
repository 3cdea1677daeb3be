"""The CLI's contract: help lists the planned subcommands, errors are one line with exit 2."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
from click.testing import CliRunner

from producer.cli import cli
from worker.settings import Settings

PLANNED = ["db", "candles", "train", "status", "resume", "backtest", "models", "demo"]


def test_help_lists_planned_subcommands() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in PLANNED:
        assert f"  {name} " in out, name


def test_python_m_producer_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "Usage: qtrain" in proc.stdout


def test_unreachable_database_is_one_line_exit_2(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/qtrain")
    result = CliRunner().invoke(cli, ["db", "init"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot reach PostgreSQL" in lines[0] and "pg_ctlcluster" in lines[0]


def test_db_init_is_idempotent_and_sets_search_path(database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    first = CliRunner().invoke(cli, ["db", "init"])
    second = CliRunner().invoke(cli, ["db", "init"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "up to date" in second.output
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ollama_analyses")  # unqualified: search_path has btc
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM btc.schema_migrations")
        assert cur.fetchone()[0] >= 1
    conn.close()


def test_settings_parse_host_list() -> None:
    s = Settings.from_env({"OLLAMA_HOST": "gpu1:11434, http://gpu2:11434/"})
    assert s.ollama_hosts == ("http://gpu1:11434", "http://gpu2:11434")
    assert Settings.from_env({}).database_url.endswith("/qtrain")


def test_the_quick_start_says_how_to_get_qtrain_on_path() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = root.joinpath("README.md").read_text()
    start = readme.index("## Quick start")
    quick = readme[start : readme.index("\n## ", start)]
    assert "source .venv/bin/activate" in quick and ".venv/bin/qtrain" in quick
    assert "bin/activate" in root.joinpath("scripts", "demo").read_text()
