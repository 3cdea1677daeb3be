"""``qtrain train --wait`` returns only when the models are ready: the promoted model file and the
gate's record exist and agree with PostgreSQL the moment it returns (issue 9's race), every time.

Real Redis, PostgreSQL and Celery workers; heuristic analyst (no Ollama needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer.workers import start_workers
from tests.pipeline_support import pipeline_env, query, seed_candles, train_json

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
