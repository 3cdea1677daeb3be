"""Output sent to a file (a log, a pipe, CI) keeps every symbol and column name whole.

rich assumes 80 columns when stdout is not a terminal and cuts cells with an ellipsis
(``BTC-U…``, ``skipp…``, ``Q-tab…``); ``producer.console`` makes such a console wide instead.
The demo, ``status`` and ``models list`` run here as a user's shell would run them, stdout to a file.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from producer.console import LOG_WIDTH, make_console
from tests.pipeline_support import ROOT, pipeline_env
from tests.services import child_env

pytestmark = pytest.mark.integration

STATUS_COLUMNS = ("symbol", "total", "done", "cached", "failed", "skipped", "pending", "reclaimed", "Q-table")
VERSION_COLUMNS = ("symbol", "version", "promoted", "created", "batch", "vs bh", "vs random", "bh return %")


def _to_file(env: dict[str, str], log: Path, *args: str) -> str:
    """``qtrain ARGS``, stdout to ``log`` and stderr (the progress) to ``log.err``; stdout's text."""
    with log.open("w", encoding="utf-8") as fh, log.with_suffix(".err").open("w", encoding="utf-8") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "producer", *args],
            env=child_env(env),
            stdout=fh,
            stderr=err,
            text=True,
            timeout=300,
            cwd=str(ROOT),
        )
    assert proc.returncode == 0, log.with_suffix(".err").read_text()[-2000:]
    return log.read_text(encoding="utf-8")


def _header(text: str, first: str) -> list[str]:
    """The cells of the table header line that starts with column ``first``."""
    line = next(ln for ln in text.splitlines() if ln.strip("┃│ ").startswith(first))
    return [c.strip() for c in line.strip().strip("┃│").split("┃" if "┃" in line else "│")]


def test_demo_status_and_models_list_in_a_file_keep_names_whole(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    demo = _to_file(
        env,
        tmp_path / "demo.log",
        "demo",
        "--database-url",
        database_url,
        "--workers",
        "1",
        "--candles",
        "300",
        "--epochs",
        "1",
    )  # in the test's database, so that status and models list see its batch
    status = _to_file(env, tmp_path / "status.log", "status")
    listed = _to_file(env, tmp_path / "models.log", "models", "list")
    for name, text in (("demo", demo), ("status", status), ("models list", listed)):
        assert "…" not in text, f"{name} cut a cell:\n{text}"
    for text in (demo, status):
        assert set(STATUS_COLUMNS) <= set(_header(text, "symbol")), text
        rows = [ln for ln in text.splitlines() if ln.startswith("│")]
        assert {r.split("│")[1].strip() for r in rows} >= {"SYNTH1-USDT", "SYNTH2-USDT"}, text
    assert set(VERSION_COLUMNS) <= set(_header(listed, "symbol")), listed
    assert "SYNTH1-USDT" in listed and "SYNTH2-USDT" in listed
    gate_lines = [ln for ln in demo.splitlines() if " on its held-out tail" in ln]
    assert len(gate_lines) == 2, demo
    for line in gate_lines:  # the gate's lines whole
        assert line.endswith("%") and "insufficient evidence" in line, line
    # The progress lines in a log are whole too: every column to the elapsed time, never "61…".
    progress = (tmp_path / "demo.err").read_text(encoding="utf-8")
    assert "…" not in progress.replace("reduce …", ""), progress
    bars = [ln for ln in progress.splitlines() if ln.startswith(("SYNTH1-USDT ", "SYNTH2-USDT "))]
    assert len(bars) >= 2 and all("| reduce v" in ln and ln.rstrip()[-7:].count(":") == 2 for ln in bars), (
        bars
    )


def test_console_is_wide_off_a_terminal_and_the_terminals_width_on_one(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "97")
    assert make_console().width == LOG_WIDTH  # pytest captures stdout: not a terminal
    assert make_console(stderr=True).width == LOG_WIDTH
    _, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stdout", tty)
        assert make_console().width == 97
