"""qtrain's cost per window against a bare Celery task, on the same workers in the same run.

Workload: W windows analysed by the heuristic analyst (no LLM: what is left is qtrain's own
overhead: claim, cache lookup, candles + features, analysis, one-transaction write, completion
count) versus W no-op ``qtrain.ping`` tasks, both through real worker processes, real Redis and
real PostgreSQL. Throughput is measured from the first message sent to the last task finished.

    .venv/bin/python bench/bench_pipeline.py [--windows 1000] [--workers 1] [--concurrency 2]

Prints a table; the ratio column is qtrain's time per window over a bare task's (aim: <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from tests.pipeline_support import seed_candles  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402

BROKER = "redis://127.0.0.1:6379/14"
BACKEND = "redis://127.0.0.1:6379/15"


def bare_celery(n: int) -> float:
    """Seconds to run ``n`` no-op tasks (sent over one connection, results awaited)."""
    os.environ["CELERY_BROKER_URL"], os.environ["CELERY_RESULT_BACKEND"] = BROKER, BACKEND
    from worker.runtime.app import app
    from worker.runtime.tasks import ping

    app.conf.broker_url, app.conf.result_backend = BROKER, BACKEND
    ping.delay().get(timeout=30)  # warm the pool processes
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        results = [ping.apply_async(producer=producer) for _ in range(n)]
    for r in results:
        r.get(timeout=120)
    return time.perf_counter() - t0


def qtrain_batch(env: dict[str, str], windows: int) -> tuple[float, float, int]:
    """Seconds of ``qtrain train --wait`` (CLI start to summary), of the windows alone, and their count."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "train",
            "--symbols",
            "BTC-USDT",
            "--analyst",
            "heuristic",
            "--window",
            "48",
            "--stride",
            "1",
            "--epochs",
            "1",
            "--seed",
            "1",
            "--wait",
            "--json",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    st = json.loads(proc.stdout.strip().splitlines()[-1])
    conn = psycopg2.connect(env["DATABASE_URL"])
    with conn.cursor() as cur:  # worker-side span: first window enqueued -> last window final
        cur.execute(
            "SELECT extract(epoch FROM max(w.updated_at) - b.created_at) FROM btc.windows w"
            " JOIN btc.batches b ON b.id = w.batch_id GROUP BY b.created_at"
        )
        span = float(cur.fetchone()[0])
    conn.close()
    return time.perf_counter() - t0, span, int(st["total"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    url = fresh_db("qtrain_bench_pipeline")
    name = url.rsplit("/", 1)[1]
    seed_candles(url, n=args.windows + 47, symbols={"BTC-USDT": (1, 30_000.0)})
    env = {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": BACKEND,
        "QTRAIN_MODELS_DIR": f"/tmp/{name}",
    }
    import redis

    for u in (BROKER, BACKEND):
        redis.Redis.from_url(u).flushdb()
    try:
        with start_workers(args.workers, concurrency=args.concurrency, env=env, prefix="bench"):
            bare_s = bare_celery(args.windows)
            batch_s, span_s, n = qtrain_batch(env, args.windows)
    finally:
        drop_db(url)
    table = Table(title=f"{args.workers} worker(s) x {args.concurrency} processes, {n} windows")
    for col in ("what", "tasks", "seconds", "tasks/s", "ms per task", "ratio"):
        table.add_column(col, justify="right" if col != "what" else "left")
    per_bare = bare_s / args.windows * 1000
    per_q = batch_s / n * 1000
    per_w = span_s / n * 1000
    table.add_row(
        "bare Celery (qtrain.ping)",
        str(args.windows),
        f"{bare_s:.2f}",
        f"{args.windows / bare_s:.0f}",
        f"{per_bare:.2f}",
        "1.00",
    )
    table.add_row(
        "qtrain windows (batch created -> last final)",
        str(n),
        f"{span_s:.2f}",
        f"{n / span_s:.0f}",
        f"{per_w:.2f}",
        f"{per_w / per_bare:.2f}",
    )
    table.add_row(
        "qtrain train --wait (CLI start -> summary)",
        str(n),
        f"{batch_s:.2f}",
        f"{n / batch_s:.0f}",
        f"{per_q:.2f}",
        f"{per_q / per_bare:.2f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
