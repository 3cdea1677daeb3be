"""Analyse throughput vs Ollama's parallel slots: (workers x concurrency) against ``num_parallel``.

Real Celery worker processes, Redis (db 14 broker, 15 results) and a throwaway PostgreSQL
database; only Ollama is stood in for, by ``tests.fake_ollama.FakeOllama`` (``latency_s`` per
call, ``num_parallel`` slots, ``max_queue`` waiting requests, then 503 like Ollama). Each case
runs ``python -m producer train --wait --json`` on synthetic candles with its own model name (so
no analysis is served from the cache) and reports windows/s over the LLM phase, the fake's slot
utilisation, the most requests it ran at once, its 503 count, and the ratio to the ideal
``num_parallel / latency_s`` windows/s.

Run: ``.venv/bin/python bench/bench_slots.py [--latency 0.5] [--parallel 4] [--candles 360]``
with PostgreSQL and Redis up (see tests/services.py). About two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from tests.fake_ollama import FakeOllama  # noqa: E402
from tests.pipeline_support import qtrain, seed_candles  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402

REDIS = "redis://127.0.0.1:6379"
BROKER_DB, BACKEND_DB = 14, 15


@dataclass(frozen=True)
class Case:
    """One measurement: ``workers`` processes of ``concurrency`` each, against ``max_queue``."""

    label: str
    workers: int
    concurrency: int
    max_queue: int


def cases(parallel: int) -> list[Case]:
    """Under-, exactly and over-subscribed slot counts, and over-subscription with a short queue."""
    half = max(1, parallel // 2)
    return [
        Case("under (half the slots)", 1, half, 512),
        Case("matched, 1 worker", 1, parallel, 512),
        Case("matched, 2 workers", 2, half, 512),
        Case("2x slots, long queue", 2, parallel, 512),
        Case("2x slots, queue 1", 2, parallel, 1),
    ]


def _flush_redis() -> None:
    for number in (BROKER_DB, BACKEND_DB):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        client.flushdb()
        client.close()


def run_case(
    case: Case, *, fake: FakeOllama, url: str, args: argparse.Namespace, log_dir: Path, n: int
) -> dict[str, Any]:
    """Start the case's workers, train one batch, return the fake's stats and the batch status."""
    model = f"bench-{n}:latest"
    fake.configure(max_queue=case.max_queue, models=[model])
    fake.reset()
    _flush_redis()
    env = {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS}/{BACKEND_DB}",
        "OLLAMA_HOST": fake.url,
        "OLLAMA_MODEL": model,
        "OLLAMA_TIMEOUT": "30",
        "QTRAIN_MODELS_DIR": str(log_dir / "models"),
        "QTRAIN_MAX_ATTEMPTS": "4",
        "QTRAIN_RETRY_BASE_S": str(args.retry_base),
    }
    with start_workers(case.workers, concurrency=case.concurrency, env=env, log_dir=log_dir, prefix="bench"):
        t0 = time.perf_counter()
        proc = qtrain(
            env,
            "train",
            "--symbols",
            "BTC-USDT,ETH-USDT",
            "--epochs",
            "1",
            "--stride",
            str(args.stride),
            "--seed",
            "7",
            "--wait",
            "--timeout",
            "120",
            "--json",
            timeout=150,
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"case {case.label!r}: qtrain train failed: {proc.stderr[-1500:]}")
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"stats": fake.stats(), "final": final, "wall": wall}


def row(case: Case, parallel: int, latency: float, res: dict[str, Any]) -> str:
    """One table row (Markdown) for a finished case."""
    st, final = res["stats"], res["final"]
    windows = final["total"]
    failed = sum(s["failed"] for s in final["symbols"].values())
    span = (st["last_end"] or 0.0) - (st["first_start"] or 0.0)
    rate = windows / span if span > 0 else float("nan")
    ideal = min(parallel, case.workers * case.concurrency) / latency
    util = st["slot_utilisation"] or 0.0
    return (
        f"| {case.label} | {case.workers} x {case.concurrency} | {case.max_queue} | {windows} | {rate:.2f} "
        f"| {rate / (parallel / latency):.2f} | {rate / ideal:.2f} | {util:.2f} | {st['max_in_flight']} "
        f"| {st['max_pending']} | {st['busy']} | {st['llm_calls']} | {failed} | {res['wall']:.1f} |"
    )


def main() -> None:
    """Print a Markdown table, one row per case (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=0.5, help="seconds per fake LLM call")
    ap.add_argument("--parallel", type=int, default=4, help="the fake's OLLAMA_NUM_PARALLEL")
    ap.add_argument("--candles", type=int, default=360, help="hourly candles per symbol (2 symbols)")
    ap.add_argument("--stride", type=int, default=6, help="candles between windows (window 48)")
    ap.add_argument("--retry-base", type=float, default=1.0, help="QTRAIN_RETRY_BASE_S of the workers")
    args = ap.parse_args()
    url = fresh_db("qtrain_bench_slots")
    out: list[str] = []
    try:
        seed_candles(url, n=args.candles)
        with (
            FakeOllama(latency_s=args.latency, num_parallel=args.parallel) as fake,
            tempfile.TemporaryDirectory(prefix="bench_slots_", dir=os.environ.get("TMPDIR")) as tmp,
        ):
            for n, case in enumerate(cases(args.parallel)):
                res = run_case(case, fake=fake, url=url, args=args, log_dir=Path(tmp), n=n)
                out.append(row(case, args.parallel, args.latency, res))
                print(out[-1], file=sys.stderr, flush=True)
    finally:
        drop_db(url)
        _flush_redis()
    ideal = args.parallel / args.latency
    print(
        f"fake Ollama: num_parallel={args.parallel}, latency {args.latency} s/call -> ideal {ideal:.2f} "
        f"windows/s; {args.candles} candles x 2 symbols, window 48, stride {args.stride}; "
        f"QTRAIN_RETRY_BASE_S={args.retry_base}; {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| case | workers x conc. | max_queue | windows | windows/s | / ideal | / ideal for its slots "
        "| slot util. | max in flight | max waiting | 503s | LLM calls | failed | wall s |"
    )
    print("|" + " --- |" * 14)
    print("\n".join(out))


if __name__ == "__main__":
    main()
