"""The tests ignore the shell: an exported ``.env`` (DATABASE_URL, CELERY_*, OLLAMA_*, QTRAIN_*)
reaches neither the test process nor anything it starts (tests/services.py, tests/conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.pipeline_support import pipeline_env, qtrain
from tests.services import QTRAIN_VARIABLES, child_env

HOSTILE = {
    "DATABASE_URL": "postgresql://hostile:hostile@127.0.0.1:9/hostile",
    "CELERY_BROKER_URL": "redis://:hostile@127.0.0.1:9/0",
    "CELERY_RESULT_BACKEND": "redis://:hostile@127.0.0.1:9/1",
    "OLLAMA_HOST": "http://127.0.0.1:9",
    "OLLAMA_MODEL": "hostile:0b",
    "QTRAIN_MODELS_DIR": "/nonexistent/hostile",
    "QTRAIN_PROMOTION_METRIC": "hostile",
}


def test_the_test_process_runs_without_the_shells_qtrain_variables() -> None:
    leaked = [k for k in os.environ if k.startswith(QTRAIN_VARIABLES)]
    assert leaked == []


def test_child_env_keeps_only_os_basics_and_what_the_test_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOSTILE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SOME_TOOL_SETTING", "x")
    env = child_env({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/mine"})
    assert env["DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5432/mine"
    assert not [k for k in env if k.startswith(QTRAIN_VARIABLES) and k != "DATABASE_URL"]
    assert "SOME_TOOL_SETTING" not in env and env["PATH"] == os.environ["PATH"]


@pytest.mark.integration
def test_a_cli_process_uses_the_tests_settings_not_the_shells(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    for key, value in HOSTILE.items():
        monkeypatch.setenv(key, value)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    proc = qtrain(env, "db", "init")
    assert proc.returncode == 0, proc.stderr
    assert database_url.rsplit("/", 1)[1] in proc.stdout + proc.stderr
    listed = qtrain(env, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    json.loads(listed.stdout)
