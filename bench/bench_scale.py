"""Scale as a user sees it (issue 14): enqueue, throughput, status and help latency, memory.

For each size W (default 11,000 and 100,000 windows; stride 6, window 48, heuristic analyst,
seeded synthetic hourly candles of 2 symbols for 11,000 and 10 for 100,000) in a throwaway
database and Redis dbs 14/15:

1. baseline: W minimal ``qtrain.ping`` messages sent with Celery's ``send_task`` in a loop over
   one connection (what a user would write), measured in the same run;
2. enqueue: ``qtrain train ... --json`` as a subprocess, no worker running (CLI start to exit:
   preflight, planning and hashing, the windows' COPY, publishing); ratio = enqueue / baseline;
3. ``qtrain status ID --json`` and ``qtrain --help``: median wall time of 5 subprocess runs,
   including interpreter start (``python -c pass`` shown for reference);
4. 2 workers x 2 slots consume the batch (analyses + every reducer + gate); windows/s over the
   whole span; status latency again while they run;
5. memory at start (workers up, queue full), middle (half the windows final) and end (batch
   done): RSS of every worker process, Redis memory of the broker + result dbs (``MEMORY USAGE``
   of each key, plus the queue length) and ``pg_database_size``;
6. the reducer: seconds per symbol (recorded by the worker in the version's metadata) and peak
   RSS of one symbol's training re-run in a fresh process.

    .venv/bin/python bench/bench_scale.py [--windows 11000 100000] [--workers 2] [--concurrency 2]
                                          [--batches 1]

Prints one table per size and a JSON line with every number. Timings are wall times on whatever
else the machine is doing: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BROKER = "redis://127.0.0.1:6379/14"
BACKEND = "redis://127.0.0.1:6379/15"
os.environ["CELERY_BROKER_URL"], os.environ["CELERY_RESULT_BACKEND"] = BROKER, BACKEND

import psutil  # noqa: E402
import psycopg2  # noqa: E402
import redis  # noqa: E402

from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402
from worker.ingest.synthetic import insert_synthetic  # noqa: E402
from worker.store import batches  # noqa: E402

PAIRS = (
    "BTC-USDT",
    "ETH-USDT",
    "SOL-USDT",
    "ADA-USDT",
    "XRP-USDT",
    "DOT-USDT",
    "LTC-USDT",
    "LINK-USDT",
    "AVAX-USDT",
    "ATOM-USDT",
)
WINDOW, STRIDE = 48, 6


def _run(args: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr[-2000:]}")
    return took, proc.stdout


def _median_run(args: list[str], env: dict[str, str], n: int = 5) -> float:
    return statistics.median(_run(args, env)[0] for _ in range(n))


def bare_send_task(n: int, *, minimal: bool = False) -> float:
    """Seconds to send ``n`` ``qtrain.ping`` messages with ``send_task`` over one connection: with
    qtrain's app settings (a task-sent event per message, as ``qtrain train`` sends), or
    ``minimal`` (no sent event, ``ignore_result``: the cheapest loop Celery allows)."""
    from worker.runtime.app import app

    queue = "bench_baseline"
    route = {"queue": queue, "routing_key": queue, "ignore_result": minimal}
    events = app.conf.task_send_sent_event
    app.conf.task_send_sent_event = events and not minimal
    try:
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task("qtrain.ping", producer=producer, **route)
        took = time.perf_counter() - t0
    finally:
        app.conf.task_send_sent_event = events
    r = redis.Redis.from_url(BROKER)
    assert r.llen(queue) == n, r.llen(queue)
    r.delete(queue)
    return took


def redis_memory() -> dict[str, int]:
    """Bytes held by the broker and result dbs (every key's MEMORY USAGE), keys, queued messages."""
    total, keys = 0, 0
    for url in (BROKER, BACKEND):
        r = redis.Redis.from_url(url)
        for key in r.scan_iter(count=1000):
            total += int(r.memory_usage(key, samples=0) or 0)
            keys += 1
    queued = int(redis.Redis.from_url(BROKER).llen("analyze"))
    return {"redis_bytes": total, "redis_keys": keys, "queued": queued}


def worker_memory(pids: list[int]) -> dict[str, int]:
    """Resident bytes of the worker main processes and of their pool children, and the unique
    (unshared) bytes of all: RSS counts a page a child still shares with its parent once per process."""
    out = {"worker_rss": 0, "worker_main_rss": 0, "worker_child_rss": 0, "worker_uss": 0}
    for pid in pids:
        try:
            main = psutil.Process(pid)
            for proc in [main, *main.children(recursive=True)]:
                info = proc.memory_full_info()
                out["worker_main_rss" if proc.pid == pid else "worker_child_rss"] += info.rss
                out["worker_rss"] += info.rss
                out["worker_uss"] += info.uss
        except psutil.NoSuchProcess:
            pass
    return out


def pg_size(url: str) -> int:
    """``pg_database_size`` of the throwaway database."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        size = int(cur.fetchone()[0])
    conn.close()
    return size


def sample(url: str, pids: list[int]) -> dict[str, int]:
    """Memory at one point."""
    return {**worker_memory(pids), "pg_bytes": pg_size(url), **redis_memory()}


REDUCE_PROBE = """
import json, resource, sys, time
from worker.pipeline import reduce
from worker.store import batches
from worker.settings import Settings
from model.learning.states import StateSpace
url, batch_id, symbol = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = Settings(database_url=url)
spec, _ = batches.load_batch(url, batch_id)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
inputs = reduce.train_inputs(settings, batch_id, spec, symbol)
reduce._train(spec, inputs, None, StateSpace.default())
took = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": took, "peak_rss": peak * 1024, "delta_rss": (peak - base) * 1024,
                  "candles": len(inputs.train)}))
"""


def run_size(windows: int, n_workers: int, concurrency: int, n_batches: int = 1) -> dict[str, Any]:
    """Every measurement for one batch size; with ``n_batches`` > 1, as many more batches of that
    size (window 47, 46, ...: new content, nothing cached) run on the same workers afterwards, and
    worker memory is sampled at the end of each (flat memory: the later batches add nothing)."""
    n_sym = 2 if windows <= 20_000 else 10
    symbols = PAIRS[:n_sym]
    per = -(-windows // n_sym)
    n_candles = STRIDE * (per - 1) + WINDOW
    url = fresh_db("qtrain_bench_scale")
    out: dict[str, Any] = {"windows_asked": windows, "symbols": n_sym, "candles_per_symbol": n_candles}
    models = tempfile.mkdtemp(prefix="qtrain-bench-models-")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "QTRAIN_MODELS_DIR": models,
        "OLLAMA_HOST": "http://127.0.0.1:9",
    }
    try:
        insert_synthetic(url, n_candles, {s: (100 + i, 1000.0 * (i + 1)) for i, s in enumerate(symbols)})
        for u in (BROKER, BACKEND):
            redis.Redis.from_url(u).flushdb()
        py = sys.executable
        out["baseline_s"] = bare_send_task(windows)
        out["baseline_minimal_s"] = bare_send_task(windows, minimal=True)
        took, stdout = _run(
            [
                py,
                "-m",
                "producer",
                "train",
                "--symbols",
                ",".join(symbols),
                "--analyst",
                "heuristic",
                "--window",
                str(WINDOW),
                "--stride",
                str(STRIDE),
                "--epochs",
                "1",
                "--seed",
                "1",
                "--json",
            ],
            env,
        )
        created = json.loads(stdout.strip().splitlines()[-1])
        batch_id, n = int(created["batch_id"]), int(created["windows"])
        out.update(windows=n, enqueue_s=took, enqueue_ratio=took / out["baseline_s"])
        out["enqueue_ratio_minimal"] = took / out["baseline_minimal_s"]
        out["enqueue_rate"] = n / took
        assert redis.Redis.from_url(BROKER).llen("analyze") == n
        status_cmd = [py, "-m", "producer", "status", str(batch_id), "--json"]
        out["status_idle_s"] = _median_run(status_cmd, env)
        out["help_s"] = _median_run([py, "-m", "producer", "--help"], env)
        out["python_start_s"] = _median_run([py, "-c", "pass"], env)
        points: dict[str, dict[str, int]] = {}
        rss_seen: list[int] = []
        series: list[tuple[int, int, int]] = []  # (windows final, main processes' RSS, children's RSS)
        with tempfile.TemporaryDirectory() as logs:
            t0 = time.perf_counter()
            with start_workers(n_workers, concurrency=concurrency, env=env, log_dir=Path(logs)) as w:
                pids = [p.pid for p in w.procs]
                time.sleep(3)  # pool processes forked and importing
                points["start"] = sample(url, pids)
                while True:
                    st = batches.batch_status(url, batch_id)
                    assert st is not None
                    mem = worker_memory(pids)
                    rss_seen.append(mem["worker_rss"])
                    series.append((st.finished, mem["worker_main_rss"], mem["worker_child_rss"]))
                    if "middle" not in points and st.finished >= n // 2:
                        points["middle"] = sample(url, pids)
                        out["status_busy_s"] = _median_run(status_cmd, env, 3)
                    if st.state in ("done", "failed"):
                        break
                    time.sleep(2)
                out["state"] = st.state
                span = time.perf_counter() - t0
                points["end"] = sample(url, pids)
                out["after_batches"] = [worker_memory(pids)]
                for k in range(1, n_batches):
                    more = [
                        py,
                        "-m",
                        "producer",
                        "train",
                        "--symbols",
                        ",".join(symbols),
                        "--analyst",
                        "heuristic",
                        "--window",
                        str(WINDOW - k),
                        "--stride",
                        str(STRIDE),
                        "--wait",
                        "--timeout",
                        "7200",
                        "--json",
                    ]
                    _, stdout = _run(more, env, timeout=7200)
                    assert json.loads(stdout.strip().splitlines()[-1])["state"] == "done"
                    out["after_batches"].append(worker_memory(pids))
        out.update(span_s=span, windows_per_s=n / span, memory=points)
        out["worker_rss_min"], out["worker_rss_max"] = min(rss_seen), max(rss_seen)
        out["worker_series"] = [series[min(len(series) - 1, len(series) * q // 4)] for q in range(5)]
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT symbol, (metadata->>'train_seconds')::float FROM btc.agent_state WHERE batch_id = %s",
                (batch_id,),
            )
            out["reduce_s"] = dict(cur.fetchall())
        conn.close()
        _, probe = _run([py, "-c", REDUCE_PROBE, url, str(batch_id), symbols[0]], env)
        out["reduce_probe"] = json.loads(probe.strip().splitlines()[-1])
    finally:
        drop_db(url)
        for u in (BROKER, BACKEND):
            redis.Redis.from_url(u).flushdb()
    return out


def _mb(x: float) -> str:
    return f"{x / 2**20:,.0f} MB"


def show(r: dict[str, Any]) -> None:
    """The issue's table for one size."""
    m = r["memory"]
    probe = r["reduce_probe"]
    points = ("start", "middle", "end")
    enq = (
        f"{r['enqueue_s']:.1f} s, {r['enqueue_rate']:,.0f} windows/s, {r['enqueue_ratio']:.2f}x the loop,"
        f" {r['enqueue_ratio_minimal']:.2f}x the minimal loop"
    )
    busy = r.get("status_busy_s", float("nan"))
    rss = " / ".join(_mb(m[k]["worker_rss"]) for k in points)
    rss += f" (min {_mb(r['worker_rss_min'])}, max {_mb(r['worker_rss_max'])})"
    main = " / ".join(_mb(m[k]["worker_main_rss"]) for k in points)
    child = " / ".join(_mb(m[k]["worker_child_rss"]) for k in points)
    uss = " / ".join(_mb(m[k]["worker_uss"]) for k in points)
    series = ", ".join(f"{f:,}: {_mb(a)} / {_mb(b)}" for f, a, b in r["worker_series"])
    red = " / ".join(f"{_mb(m[k]['redis_bytes'])} ({m[k]['queued']:,} queued)" for k in points)
    reducers = ", ".join(f"{s} {v:.1f}" for s, v in sorted(r["reduce_s"].items()))
    rows = [
        ("windows (symbols x candles)", f"{r['windows']:,} ({r['symbols']} x {r['candles_per_symbol']:,})"),
        ("bare send_task loop, same count", f"{r['baseline_s']:.1f} s"),
        ("  minimal (no sent event, ignore_result)", f"{r['baseline_minimal_s']:.1f} s"),
        ("enqueue (qtrain train, no worker)", enq),
        ("analyses + reducers, workers x slots", f"{r['span_s']:.0f} s, {r['windows_per_s']:.0f} windows/s"),
        ("qtrain status ID --json", f"{r['status_idle_s']:.2f} s idle, {busy:.2f} s while workers run"),
        ("qtrain --help", f"{r['help_s']:.2f} s (python -c pass: {r['python_start_s']:.2f} s)"),
        ("worker RSS start / middle / end", rss),
        ("  main processes / pool children", f"{main}  |  {child}"),
        ("worker USS start / middle / end", uss),
        ("main / children RSS by windows final", series),
        ("Redis bytes start / middle / end", red),
        ("PostgreSQL size start / middle / end", " / ".join(_mb(m[k]["pg_bytes"]) for k in points)),
        (
            "main / children RSS after each batch",
            " ; ".join(
                f"{_mb(b['worker_main_rss'])} / {_mb(b['worker_child_rss'])}" for b in r["after_batches"]
            ),
        ),
        ("reducer s per symbol (worker)", reducers),
        (
            "reducer re-run, 1 symbol",
            f"{probe['seconds']:.1f} s on {probe['candles']:,} candles, peak RSS"
            f" {_mb(probe['peak_rss'])} (+{_mb(probe['delta_rss'])} for training)",
        ),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"\n== {r['windows']:,} windows, batch {r['state']} ==")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def enqueue_while_consuming(windows: int, n_workers: int, concurrency: int) -> dict[str, Any]:
    """``qtrain train`` (2 symbols) while the workers already consume, against the bare loop
    sent at the same time; the workers are stopped once the command returns."""
    symbols = PAIRS[:2]
    n_candles = STRIDE * (-(-windows // 2) - 1) + WINDOW
    url = fresh_db("qtrain_bench_scale")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "QTRAIN_MODELS_DIR": tempfile.mkdtemp(prefix="qtrain-bench-"),
        "OLLAMA_HOST": "http://127.0.0.1:9",
    }
    out: dict[str, Any] = {"windows_asked": windows}
    try:
        insert_synthetic(url, n_candles, {s: (100 + i, 1000.0 * (i + 1)) for i, s in enumerate(symbols)})
        for u in (BROKER, BACKEND):
            redis.Redis.from_url(u).flushdb()
        with tempfile.TemporaryDirectory() as logs:
            with start_workers(n_workers, concurrency=concurrency, env=env, log_dir=Path(logs)):
                # an earlier batch keeps the workers busy, as in the measurement
                busy = ["--symbols", symbols[0], "--analyst", "heuristic", "--stride", "1", "--seed", "2"]
                _run([sys.executable, "-m", "producer", "train", *busy, "--json"], env)
                out["baseline_s"] = bare_send_task(windows)
                took, stdout = _run(
                    [
                        sys.executable,
                        "-m",
                        "producer",
                        "train",
                        "--symbols",
                        ",".join(symbols),
                        "--analyst",
                        "heuristic",
                        "--stride",
                        str(STRIDE),
                        "--epochs",
                        "1",
                        "--seed",
                        "1",
                        "--json",
                    ],
                    env,
                )
        n = int(json.loads(stdout.strip().splitlines()[-1])["windows"])
        out.update(windows=n, enqueue_s=took, enqueue_ratio=took / out["baseline_s"])
        print(
            f"enqueue {n:,} windows while {n_workers} x {concurrency} workers consume: {took:.1f} s,"
            f" bare send_task loop {out['baseline_s']:.1f} s, ratio {out['enqueue_ratio']:.2f}x",
            flush=True,
        )
    finally:
        drop_db(url)
        for u in (BROKER, BACKEND):
            redis.Redis.from_url(u).flushdb()
    return out


def reducer_scaling(sizes: list[int]) -> list[dict[str, float]]:
    """The reducer's training step alone (``model.learning.training.train_qtable``, default recipe) on the
    first n synthetic candles, windows 48 / stride 6 analysed by the heuristic analyst as the
    worker does: seconds (best of 2, untraced) and the peak of memory allocated during a third,
    traced run (``tracemalloc``, numpy's buffers included), per candle count."""
    import tracemalloc

    from model.evaluation.scoreboard import heuristic_analyses
    from model.learning.states import StateSpace
    from model.learning.training import train_qtable
    from model.market.synthetic import make_candles

    big = make_candles(max(sizes), seed=7)
    analysed = heuristic_analyses(big, until_ts=int(big.ts[-1]) + 3600, window=WINDOW, stride=STRIDE)
    rows = []
    for n in sorted(sizes):
        train = big.slice(0, n)
        mine = [a for a in analysed if a.end_ts <= int(train.ts[-1])]
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            train_qtable(train, mine, space=StateSpace.default(), seed=1)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()  # a separate run: tracing slows Python-level allocations several fold
        train_qtable(train, mine, space=StateSpace.default(), seed=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"candles": n, "windows": len(mine), "seconds": min(times), "peak_bytes": peak})
        print(
            f"reducer training on {n:>7,} candles ({len(mine):>6,} windows): {min(times):6.2f} s,"
            f" peak {_mb(peak)}, {1e6 * min(times) / n:.1f} us/candle, {peak / n:,.0f} B/candle",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs="+", default=[11_000, 100_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--batches", type=int, default=1, help="batches per size on the same workers")
    ap.add_argument(
        "--reducer", type=int, nargs="*", help="only the reducer's scaling over these candle counts"
    )
    ap.add_argument("--busy", action="store_true", help="only: enqueue while the workers consume")
    args = ap.parse_args()
    if args.busy:
        for w in args.windows:
            print(json.dumps(enqueue_while_consuming(w, args.workers, args.concurrency)))
        return
    if args.reducer is not None:
        print(json.dumps(reducer_scaling(args.reducer or [15_000, 30_000, 60_000, 120_000])))
        return
    for w in args.windows:
        r = run_size(w, args.workers, args.concurrency, args.batches)
        show(r)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
