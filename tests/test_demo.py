"""``qtrain demo`` end to end, as the README's main-job command runs it (real workers it starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_support import pipeline_env, qtrain, query

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_path_offline(database_url: str, redis_url: str, tmp_path: Path) -> None:
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    proc = qtrain(env, "demo", "--workers", "1", "--candles", "300", "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["state"] == "done" and final["analyst"] == "heuristic"
    assert set(final["symbols"]) == {"BTC-USDT", "ETH-USDT"}
    for symbol in final["symbols"]:
        assert (tmp_path / "models" / f"fast_model_{symbol}.npz").exists()
    assert query(database_url, "SELECT count(*) FROM agent_state")[0][0] == 2
    # the demo stopped the workers it started: a second run starts its own again and hits the cache
    again = qtrain(env, "demo", "--workers", "1", "--candles", "300", "--epochs", "1", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert all(s["cached"] == s["total"] for s in second["symbols"].values())


SERVERS = [("openai", "the OpenAI-compatible server"), ("ollama", "Ollama")]


@pytest.mark.parametrize(("api", "server"), SERVERS)
def test_auto_analyst_names_the_server_it_tried(api: str, server: str) -> None:
    from producer.demo_cmd import choose_analyst
    from worker.settings import Settings

    dead = "http://127.0.0.1:9"  # discard port: nothing answers
    settings = Settings(llm_api=api, openai_base_urls=(dead + "/v1",), ollama_hosts=(dead,))
    analyst, why = choose_analyst(settings, "auto")
    assert analyst == "heuristic" and why.startswith(f"{server} not usable (") and dead in why
