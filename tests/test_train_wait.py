"""``qtrain train --wait`` returns only when the models are ready: the promoted model file and the
gate's record exist and agree with PostgreSQL the moment it returns (issue 9's race), every time.

Real Redis, PostgreSQL and Celery workers; heuristic analyst (no Ollama needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_support import pipeline_env, qtrain, query, seed_candles, train_json
from worker.cluster.local import start_workers

pytestmark = pytest.mark.integration


def test_model_file_and_gate_record_are_ready_when_wait_returns(database_url, redis_url, tmp_path) -> None:
    seed_candles(database_url)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")  # never called
    models = Path(env["QTRAIN_MODELS_DIR"])
    with start_workers(2, concurrency=2, env=env, log_dir=tmp_path):
        for seed in range(4):  # each run makes a new version per symbol (windows then all cached)
            final = train_json(env, "--analyst", "heuristic", "--seed", str(100 + seed))
            assert final["state"] == "done"
            for symbol, s in final["symbols"].items():
                version = s["q_version"]
                assert s["reduced"] and version == seed + 1
                gated, kinds = query(
                    database_url,
                    "SELECT a.gated_at IS NOT NULL, (SELECT array_agg(DISTINCT policy) FROM backtests t"
                    " WHERE t.symbol = a.symbol AND t.version = a.version AND t.kind = 'holdout')"
                    " FROM agent_state a WHERE a.symbol = %s AND a.version = %s",
                    (symbol, version),
                )[0]
                assert gated and {"qtable", "buy_and_hold", "random_median"} <= set(kinds or ())
                want, promoted, npz = query(
                    database_url,
                    "SELECT version, promoted, npz FROM agent_state WHERE symbol = %s"
                    " ORDER BY promoted DESC, version DESC LIMIT 1",
                    (symbol,),
                )[0]
                path = models / f"fast_model_{symbol}.npz"
                assert path.read_bytes() == bytes(npz), f"{symbol}: stale model file after batch {seed + 1}"
                sidecar = json.loads(path.with_suffix(".json").read_text())
                assert sidecar["version"] == want and sidecar["promoted"] == promoted
                assert (models / "versions" / f"fast_model_{symbol}_v{version}.npz").exists()
                verdict = final["verdicts"][symbol]  # the gate's line, as the human output ends
                assert verdict.startswith(f"{symbol} v{version} (3.0 days, ") and " -> " in verdict, verdict
        # the human output ends with the gate's verdict per symbol: here, why nothing was promoted
        proc = qtrain(env, "train", "--symbols", "BTC-USDT,ETH-USDT", "--analyst", "heuristic", "--wait")
        assert proc.returncode == 0, proc.stderr[-2000:]
        last = proc.stdout.strip().splitlines()[-2:]
        for symbol, line in zip(("BTC-USDT", "ETH-USDT"), last, strict=True):
            assert (
                line.startswith(f"{symbol} v5 (3.0 days, ")
                and "-> not promoted: insufficient evidence" in line
            )
            assert "a verdict needs >= 30 days" in line and "qtrain models promote --symbol" in line, line


def test_a_batch_whose_every_analysis_failed_fails_and_says_why(database_url, redis_url, tmp_path) -> None:
    """Issue 29: an LLM answering errors to every call used to end "done" with a version made from
    zero analyses. Now: no version, `train --wait` exits 2 with the reason, `status` (table and JSON)
    lists the top failure reasons with their counts per symbol."""
    from tests.fake_ollama import FakeOllamaProcess

    seed_candles(database_url, n=200, symbols={"BTC-USDT": (1, 30_000.0)})
    with FakeOllamaProcess("--faults", json.dumps([{"mode": "http_500"}])) as fake:
        env = pipeline_env(database_url, redis_url, fake.url, tmp_path / "models")
        with start_workers(1, concurrency=2, env=env, log_dir=tmp_path):
            proc = qtrain(env, "train", "--symbols", "BTC-USDT", "--seed", "1", "--wait", "--timeout", "120")
        calls = fake.stats()
    assert proc.returncode == 2, (proc.stdout[-1500:], proc.stderr[-1500:])
    line = proc.stderr.strip().splitlines()[-1]  # after the progress bars (stderr)
    assert line.startswith("qtrain: error: batch 1 failed: "), line
    total = query(database_url, "SELECT count(*) FROM windows")[0][0]
    assert (
        f"failed: BTC-USDT: {total} of {total} windows failed, more than QTRAIN_MAX_FAILED_SHARE 0.5" in line
    )
    assert "no version made" in line and "Top reasons: " in line and "500" in line, line
    assert query(database_url, "SELECT count(*) FROM agent_state")[0][0] == 0  # no version from nothing
    assert f"BTC-USDT: {total} failed window(s), most frequent reasons: {total}x " in proc.stdout, proc.stdout
    assert calls, "the fake LLM was called"
    status = qtrain(env, "status", "--json")
    st = json.loads(status.stdout)
    assert st["state"] == "failed" and "QTRAIN_MAX_FAILED_SHARE" in st["error"]
    (reason,) = st["symbols"]["BTC-USDT"]["failure_reasons"]
    assert reason["count"] == total and "500" in reason["reason"], reason
    table = qtrain(env, "status")
    assert table.returncode == 0 and f"{total}x " in table.stdout and "batch 1 failed" in table.stdout
