"""Where qtrain's own CPU goes around one LLM call (issue 30): the analyse task's body, profiled.

Runs the task body (``worker.runtime.tasks._analyze_window``: claim, cache lookup, candles, prompt,
the call, parse, store, completion check) in this process for ``--windows`` windows against the
fake Ollama run as its own process with no latency, so that the profile holds qtrain's work and
the HTTP client's, not the server's. Celery's own per-task work (message, ack, events, result)
is not in it: the worker's CPU per window in ``bench/bench_inflight.py`` minus this is Celery's.

    .venv/bin/python bench/profile_window.py [--windows 400] [--top 25]

Prints CPU ms per window (process time) and the top entries of a CPU-time profile (waits for
PostgreSQL and the server cost nothing in it), by own and cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Profile ``--windows`` analyse task bodies; print CPU per window and the top entries."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    from bench.throwaway_db import drop_db, fresh_db
    from tests.fake_ollama import FakeOllamaProcess
    from tests.pipeline_support import seed_candles

    url = fresh_db("qtrain_i30_profile")
    try:
        with FakeOllamaProcess("--num-parallel", "64") as fake:
            import os

            os.environ.update({"DATABASE_URL": url, "OLLAMA_HOST": fake.url, "QTRAIN_WORKER_NICE": "0"})
            from worker.pipeline import dispatch
            from worker.runtime import tasks
            from worker.store import batches

            tasks.reduce_symbol.apply_async = lambda *a, **k: None  # type: ignore[method-assign]
            seed_candles(url, n=args.windows + 200, symbols={"BTC-USDT": (11, 30_000.0)})
            req = dispatch.TrainRequest(symbols=("BTC-USDT",), stride=1, epochs=1, seed=1)
            batch_id = dispatch.create(tasks.SETTINGS, req).batch_id
            todo = batches.unfinished_windows(url, batch_id)[: args.windows]
            # warm up: the first calls open connections and import lazily
            for sym, idx in todo[:20]:
                tasks._analyze_window(None, batch_id, sym, idx, None, [])
            half = (len(todo) - 20) // 2
            plain, todo = todo[20 : 20 + half], todo[20 + half :]
            c0 = time.process_time()
            out: list[Any] = [tasks._analyze_window(None, batch_id, s, i, None, []) for s, i in plain]
            plain_cpu = time.process_time() - c0
            prof = cProfile.Profile(time.process_time)  # CPU, not waiting for PostgreSQL or the server
            c0, t0 = time.process_time(), time.perf_counter()
            prof.enable()
            out += [tasks._analyze_window(None, batch_id, s, i, None, []) for s, i in todo]
            prof.disable()
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            assert all(o["status"] == "done" for o in out), out[:3]
    finally:
        drop_db(url)
    n = len(todo)
    print(
        f"{len(plain)} windows unprofiled: {1000 * plain_cpu / len(plain):.2f} ms CPU per window "
        "(this process: the task body and its HTTP client, not Celery)"
    )
    print(
        f"{n} windows profiled: {1000 * cpu / n:.2f} ms CPU and {1000 * wall / n:.2f} ms wall per window "
        f"(the profiler adds its own overhead)"
    )
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        text = buf.getvalue()
        print(text[text.index("ncalls") - 2 :] if "ncalls" in text else text)


if __name__ == "__main__":
    main()
