"""Does a reducer starve the analyses of a threads-pool worker? (issue 30)

One ``celery -A worker worker -Q analyze,reduce --pool threads -c C`` process runs an LLM batch
(batch B: 2 symbols of synthetic candles, stride 2, the fake Ollama at ``--latency`` s a call, as
in ``bench/bench_inflight.py``); a few seconds in, the reducers of a heuristic batch over long
histories (batch A: 2 other symbols x ``--candles`` hourly candles, stride 168, analysed
beforehand by another worker) are sent to it, and run (CPU-bound numpy and Python: train, twin,
controls, gate backtests) in the same process while B's calls are in flight. Reported: B's
windows/s in 1-second bins while one of A's reducers runs against the bins outside them
(medians), and the reducers' wall time.

    nice -n 5 .venv/bin/python bench/bench_reduce_share.py [--concurrency 128] [--candles 60000] [--split]

``--split``: the same, with the reducers in their own prefork worker (``-Q reduce -c 1``) and the
threads-pool worker on ``-Q analyze`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from bench.bench_inflight import BACKEND_DB, BROKER_DB, REDIS, _flush_redis  # noqa: E402
from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from model.features import WARMUP  # noqa: E402
from tests.fake_ollama import FakeOllamaProcess  # noqa: E402
from tests.pipeline_support import qtrain, query, seed_candles  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402

HEAVY = {"SOL-USDT": (21, 100.0), "ADA-USDT": (22, 1.0)}


def _train(env: dict[str, str], *args: str) -> int:
    proc = qtrain(env, "train", "--seed", "7", "--json", *args, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"qtrain train failed: {proc.stderr[-1500:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["batch_id"])


def _state(url: str, batch_id: int) -> str:
    return str(query(url, "SELECT state FROM batches WHERE id = %s", (batch_id,))[0][0])


def main() -> None:
    """Print B's rate inside and outside A's reducers (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--windows", type=int, default=3000, help="windows of the LLM batch B")
    ap.add_argument("--candles", type=int, default=60000, help="hourly candles per heavy symbol")
    ap.add_argument("--split", action="store_true", help="reducers in a prefork -Q reduce -c 1 worker")
    args = ap.parse_args()
    url = fresh_db("qtrain_i30_reduce_share")
    try:
        seed_candles(url, n=WARMUP + 48 + args.windows + 48)
        seed_candles(url, n=args.candles, symbols=HEAVY)
        with (
            FakeOllamaProcess("--latency", str(args.latency), "--num-parallel", "1024") as fake,
            tempfile.TemporaryDirectory(prefix="bench_reduce_share_", dir=os.environ.get("TMPDIR")) as tmp,
        ):
            _flush_redis()
            env = {
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
                "CELERY_RESULT_BACKEND": f"{REDIS}/{BACKEND_DB}",
                "OLLAMA_HOST": fake.url,
                "OLLAMA_TIMEOUT": "60",
                "QTRAIN_MODELS_DIR": str(Path(tmp) / "models"),
                "QTRAIN_WORKER_NICE": "0",
                "QTRAIN_LEASE_S": "3600",  # no reaper-sent reducers
            }
            c = args.concurrency
            # A's analyses first, by a worker that takes no reducer; its reducer messages are dropped
            with start_workers(
                1, concurrency=8, env=env, log_dir=Path(tmp), prefix="prep", pool="threads", queues="analyze"
            ):
                a = _train(env, "--symbols", ",".join(HEAVY), "--stride", "168", "--analyst", "heuristic")
                while query(
                    url,
                    "SELECT count(*) FROM windows WHERE batch_id = %s AND status IN ('pending','running')",
                    (a,),
                )[0][0]:
                    time.sleep(0.5)
            redis.Redis.from_url(f"{REDIS}/{BROKER_DB}").delete("reduce")
            queues = "analyze" if args.split else "analyze,reduce"
            reducer: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if args.split:
                reducer = start_workers(1, concurrency=1, env=env, log_dir=Path(tmp), queues="reduce")
            with (
                reducer,
                start_workers(
                    1,
                    concurrency=c,
                    env=env,
                    log_dir=Path(tmp),
                    prefix="share",
                    pool="threads",
                    queues=queues,
                ),
            ):
                b = _train(env, "--symbols", "BTC-USDT,ETH-USDT", "--stride", "2")
                time.sleep(args.latency * 5)  # B in its steady state, then A's reducers in the same process
                sender = Celery(broker=f"{REDIS}/{BROKER_DB}")
                sender.conf.update(task_serializer="json", accept_content=["json"])
                for sym in HEAVY:
                    sender.send_task("qtrain.reduce_symbol", (a, sym), queue="reduce", routing_key="reduce")
                deadline = time.monotonic() + 1200
                while time.monotonic() < deadline and "running" in (_state(url, a), _state(url, b)):
                    time.sleep(0.5)
        ends = [
            r[0].timestamp()
            for r in query(
                url,
                "SELECT a.created_at FROM windows w JOIN ollama_analyses a ON a.id = w.analysis_id"
                " WHERE w.batch_id = %s ORDER BY 1",
                (b,),
            )
        ]
        reducers = [
            (r[0].timestamp() - float(r[1]), r[2].timestamp(), r[3])
            for r in query(
                url,
                "SELECT created_at, (metadata->>'train_seconds')::float8, gated_at, symbol FROM agent_state"
                " WHERE batch_id = %s",
                (a,),
            )
        ]
        states = (_state(url, a), _state(url, b))
    finally:
        drop_db(url)
        _flush_redis()
    lo, hi = int(ends[0]) + 3, int(ends[-1]) - 3  # whole bins inside B's steady state
    bins = {t: 0 for t in range(lo, hi)}
    for e in ends:
        if lo <= int(e) < hi:
            bins[int(e)] += 1
    busy = {t for t in bins for s, f, _ in reducers if s <= t and t + 1 <= f}
    inside = [n for t, n in bins.items() if t in busy]
    outside = [n for t, n in bins.items() if t not in busy]
    where = "a separate prefork -Q reduce -c 1 worker" if args.split else "the same process"
    print(
        f"one --pool threads -c {c} worker, reducers in {where}; B: {len(ends)} LLM windows at "
        f"{args.latency} s a call "
        f"(ideal {c / args.latency:.0f}/s); A: 2 symbols x {args.candles} candles, heuristic; "
        f"states {states}; load average {os.getloadavg()[0]:.1f}"
    )
    for s, f, sym in reducers:
        print(f"  reducer {sym}: {f - s:.1f} s (train + gate)")
    med_in = statistics.median(inside) if inside else float("nan")
    med_out = statistics.median(outside) if outside else float("nan")
    print(
        f"B windows/s, median of 1-s bins: {med_out:.1f} outside A's reducers ({len(outside)} bins), "
        f"{med_in:.1f} while one runs ({len(inside)} bins): ratio {med_in / med_out:.2f}"
    )
    print(
        json.dumps(
            {
                "inside": inside,
                "outside_median": med_out,
                "inside_median": med_in,
                "reducers_s": [round(f - s, 1) for s, f, _ in reducers],
            }
        )
    )


if __name__ == "__main__":
    main()
