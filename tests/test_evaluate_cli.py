"""``qtrain evaluate``: the walk-forward scoreboard from stored candles (JSON shape, byte-identical
reruns, one-line errors, HTML report) and the cached-analyst path (analyses a real batch stored
through the fake Ollama, evaluated without a single LLM call)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.market.synthetic import DEFAULT_START
from producer.cli import cli
from tests.fake_ollama import FakeOllama
from tests.pipeline_support import pipeline_env, qtrain, seed_candles, train_json
from worker.cluster.local import start_workers

FIRST_TEST = datetime.fromtimestamp(DEFAULT_START + 21 * 86400, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
FAST = ("--train-days", "20", "--test-days", "10", "--random-seeds", "5", "--since", FIRST_TEST)


@pytest.fixture
def db(database_url, monkeypatch):
    seed_candles(database_url, n=24 * 75)  # 75 days: a few 20 + 10 day folds
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def run(*args: str):
    return CliRunner().invoke(cli, ["evaluate", *args])


def test_json_shape_and_the_same_inputs_give_the_same_bytes(db) -> None:
    first = run("--symbols", "BTC-USDT,ETH-USDT", *FAST, "--recipe", "qlearning", "--json")
    assert first.exit_code == 0, first.output
    again = run("--symbols", "BTC-USDT,ETH-USDT", *FAST, "--recipe", "qlearning", "--json")
    assert again.output == first.output
    out = json.loads(first.output)
    symbols = {f["symbol"] for f in out["folds"]}
    assert symbols == {"BTC-USDT", "ETH-USDT"} and len(out["folds"]) >= 4
    for f in out["folds"]:
        keys = {"symbol", "train_since", "train_until", "test_since", "test_until", "policies", "equity"}
        assert set(f) == keys
        curves, n = f["equity"]["policies"], len(f["equity"]["ts"])  # 1.0 = the fold's starting capital
        assert set(curves) == set(f["policies"]) - {"random"} and curves["flat"] == [1.0] * n
        assert all(len(c) == n <= 200 and c[0] == 1.0 for c in curves.values())
        assert f["train_until"] == f["test_since"] and f["test_since"].endswith("Z")
        assert {"qtable", "qtable:qlearning", "rules", "buy_and_hold", "random", "flat"} <= set(f["policies"])
        assert "sharpe_p90" in f["policies"]["random"]
    by_symbol = {}
    for f in out["folds"]:
        by_symbol.setdefault(f["symbol"], []).append(f)
    for folds in by_symbol.values():  # test ranges back to back
        assert all(a["test_until"] == b["test_since"] for a, b in zip(folds, folds[1:], strict=False))
    for name, s in out["summary"].items():
        assert set(s) == {
            "median_sharpe",
            "beats_random_median",
            "beats_buy_and_hold",
            "folds",
            "trades_per_fold",
        }
        assert s["folds"] == len(out["folds"]) and 0 <= s["beats_random_median"] <= s["folds"], name


def test_table_report_and_one_line_errors(db, tmp_path: Path) -> None:
    report = tmp_path / "evaluate.html"
    res = run("--symbols", "BTC-USDT", *FAST, "--report", str(report))
    assert res.exit_code == 0, res.output
    assert "median Sharpe" in res.output and "buy_and_hold" in res.output
    page = report.read_text()
    assert page.count('data-root-id="') == 2 and "<script src" not in page  # Sharpe bars, fold picker; inline
    for args, needle in (
        (("--symbols", "BTC-USDT", "--train-days", "400"), "no fold"),
        (("--symbols", "NOPE-USDT"), "NOPE-USDT"),
        (("--symbols", "BTC-USDT", "--train-days", "3"), "--train-days"),
        (("--symbols", "BTC-USDT", "--random-seeds", "0"), "--random-seeds"),
    ):
        bad = run(*args)
        assert bad.exit_code == 2, (args, bad.output)
        assert needle in bad.output and "Traceback" not in bad.output


@pytest.mark.integration
def test_cached_analyst_uses_a_real_batchs_analyses_and_calls_no_llm(
    database_url, redis_url, tmp_path
) -> None:
    seed_candles(database_url, n=24 * 75)
    with FakeOllama(latency_s=0.0, num_parallel=4) as fake:
        env = pipeline_env(database_url, redis_url, fake.url, tmp_path / "models")
        with start_workers(2, concurrency=2, env=env, log_dir=tmp_path):
            train_json(env, symbols="BTC-USDT")
        calls = fake.stats()["llm_calls"]
        assert calls > 0
        proc = qtrain(env, "evaluate", "--symbols", "BTC-USDT", *FAST, "--analyst", "cached", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert fake.stats()["llm_calls"] == calls  # not one LLM call
        # the batch's analyses were written from the anonymous prompt: a named-prompt scoreboard
        # does not use them (the two styles never mix)
        named = qtrain(
            {**env, "QTRAIN_PROMPT": "named"},
            "evaluate",
            "--symbols",
            "BTC-USDT",
            *FAST,
            "--analyst",
            "cached",
            "--json",
        )
        assert named.returncode == 0, named.stderr[-2000:]
    out = json.loads(proc.stdout)
    (note,) = [n for n in out["notes"] if n.startswith("cached analyst")]
    used = int(note.split(": ")[1].split()[0])
    assert used > 0 and out["params"]["analyst"] == "cached"
    (note,) = [n for n in json.loads(named.stdout)["notes"] if n.startswith("cached analyst")]
    assert int(note.split(": ")[1].split()[0]) == 0, note
