"""Many LLM calls in flight from one worker process (issue 30): qtrain against a bare asyncio loop.

For each concurrency C (default 64, 128, 256): one ``celery -A worker worker -Q analyze,reduce
--pool threads -c C`` process trains a batch of about ``--rounds`` x C windows (2 symbols of
seeded synthetic candles, window 48, stride 2, a model name of its own so that nothing comes from
the cache) against the fake Ollama run as its own process (``tests.fake_ollama``, ``--latency``
seconds a call, 1,024 slots, so the server is never the limit). Then a bare asyncio loop
(raw asyncio streams, C tasks) sends the same number of ``/api/chat`` calls with the same
messages to the same fake. Both rates are windows / (last call's end - first call's start) as the
fake saw them, so they are measured the same way.

Reported per C: windows, failed, windows/s of each and their ratio, the ideal C / latency, the
worker's peak RSS and its peak PostgreSQL connections (``pg_stat_activity`` rows of the worker,
which runs with ``PGAPPNAME``, sampled every 0.1 s), and its CPU seconds (user + system, all its
threads) per window over the analyse phase (start of the batch to its last window final: claim,
cache lookup, prompt, call, parse, store, completion check), plus the reducers' CPU after it.
CPU per window is process CPU time: it does not depend on what else the machine runs; the
windows/s and ratios do (say what else was running when you quote them).

    nice -n 5 .venv/bin/python bench/bench_inflight.py [--concurrency 64 128 256] [--latency 2]
                                                        [--rounds 10] [--json FILE]

PostgreSQL and Redis up (Redis dbs 14/15, a throwaway database). About 2-4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_llm import batch_messages  # noqa: E402
from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from model.analyst.answer import ANSWER_SCHEMA  # noqa: E402
from model.features import WARMUP  # noqa: E402
from tests.fake_ollama import FakeOllamaProcess  # noqa: E402
from tests.pipeline_support import qtrain, query, seed_candles  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402

REDIS = "redis://127.0.0.1:6379"
BROKER_DB, BACKEND_DB = 14, 15  # the benchmarks' (tests use 8-13)
APP_NAME = "qtrain-bench-worker"
STRIDE, WINDOW = 2, 48


def _flush_redis() -> None:
    for number in (BROKER_DB, BACKEND_DB):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        client.flushdb()
        client.close()


class Sampler:
    """Peak RSS and PostgreSQL connections of one worker process, sampled in a thread."""

    def __init__(self, pid: int, url: str) -> None:
        self.proc = psutil.Process(pid)
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.max_rss = 0
        self.max_conns = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def cpu_s(self) -> float:
        """User + system CPU seconds of the worker (and any pool children) so far."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        with self.conn.cursor() as cur:
            while not self._stop.wait(0.1):
                rss = sum(p.memory_info().rss for p in self._tree())
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,))
                self.max_rss = max(self.max_rss, rss)
                self.max_conns = max(self.max_conns, int(cur.fetchone()[0]))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def counts(url: str, batch_id: int) -> tuple[int, int, int, str]:
    """(total, final, failed, batch state) of a batch."""
    ((total, final, failed, state),) = query(
        url,
        "SELECT count(*), count(*) FILTER (WHERE status IN ('done','cached','failed')),"
        " count(*) FILTER (WHERE status = 'failed'), (SELECT state FROM batches WHERE id = %s)"
        " FROM windows WHERE batch_id = %s",
        (batch_id, batch_id),
    )
    return int(total), int(final), int(failed), str(state)


async def _bare(base: str, model: str, messages: list[list[dict[str, str]]], concurrency: int) -> int:
    """``len(messages)`` /api/chat calls, ``concurrency`` at a time; the number that failed.

    As bare as a loop gets: asyncio streams, one keep-alive HTTP/1.1 connection per task, the
    request bytes written by hand and the answer read by its Content-Length (an HTTP library
    would add its own cost: httpx's AsyncClient spent 10 ms of CPU a call here at 128 at once).
    """
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    options = {"temperature": 0, "seed": 42, "num_ctx": 4096, "num_predict": 1024}
    bodies = [
        json.dumps(
            {"model": model, "messages": m, "format": ANSWER_SCHEMA, "stream": False, "options": options}
        ).encode()
        for m in messages
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    failed = 0

    async def one() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                body = queue.get_nowait()
                head = (
                    f"POST /api/chat HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                size = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:"))
                answer = json.loads(await reader.readexactly(size))
                if " 200 " not in lines[0] or not isinstance(answer.get("message", {}).get("content"), str):
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return failed


def run_level(
    c: int,
    *,
    url: str,
    fake: FakeOllamaProcess,
    args: argparse.Namespace,
    log_dir: Path,
    since: str,
    until: str,
) -> dict[str, Any]:
    """One concurrency: qtrain's batch through one threads-pool worker, then the bare loop."""
    model = f"inflight-{c}-{uuid.uuid4().hex[:6]}:latest"
    fake.configure(models=[model])
    fake.reset()
    _flush_redis()
    env = {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS}/{BACKEND_DB}",
        "OLLAMA_HOST": fake.url,
        "OLLAMA_MODEL": model,
        "OLLAMA_TIMEOUT": "60",
        "QTRAIN_MODELS_DIR": str(log_dir / "models"),
        "QTRAIN_MAX_ATTEMPTS": "3",
        "QTRAIN_RETRY_BASE_S": "1",
        "PGAPPNAME": APP_NAME,
        "QTRAIN_WORKER_NICE": "0",
    }
    res: dict[str, Any] = {"concurrency": c}
    with start_workers(1, concurrency=c, env=env, log_dir=log_dir, prefix=f"infl{c}-", pool=args.pool) as w:
        with Sampler(w.procs[0].pid, url) as s:
            cpu0 = s.cpu_s()
            t0 = time.perf_counter()
            proc = qtrain(
                {k: v for k, v in env.items() if k != "PGAPPNAME"},
                "train",
                "--symbols",
                "BTC-USDT,ETH-USDT",
                "--stride",
                str(STRIDE),
                "--since",
                since,
                "--until",
                until,
                "--seed",
                "7",
                "--json",
                timeout=300,
            )
            if proc.returncode != 0:
                raise SystemExit(f"C={c}: qtrain train failed: {proc.stderr[-1500:]}")
            batch_id = int(json.loads(proc.stdout.strip().splitlines()[-1])["batch_id"])
            deadline = time.monotonic() + args.timeout
            cpu_final = None
            while time.monotonic() < deadline:
                total, final, failed, state = counts(url, batch_id)
                if cpu_final is None and total and final == total:
                    cpu_final = s.cpu_s()
                    res["analyse_wall_s"] = round(time.perf_counter() - t0, 2)
                if state != "running":
                    break
                time.sleep(0.1)
            cpu_end = s.cpu_s()
            stats = fake.stats()
        res.update(max_rss_mb=round(s.max_rss / 2**20, 1), max_pg_conns=s.max_conns)
    total, final, failed, state = counts(url, batch_id)
    span = (stats["last_end"] or 0.0) - (stats["first_start"] or 0.0)
    res.update(
        windows=total,
        final=final,
        failed=failed,
        state=state,
        llm_calls=stats["llm_calls"],
        max_in_flight=stats["max_in_flight"],
        qtrain_wps=round(total / span, 2) if span > 0 else None,
        cpu_ms_per_window=round(1000 * ((cpu_final or cpu_end) - cpu0) / max(total, 1), 2),
        reducer_cpu_s=round(cpu_end - (cpu_final or cpu_end), 2),
    )
    # The bare loop: the same messages, the same concurrency, the same server.
    messages = batch_messages(url, batch_id)
    fake.reset()
    bare_failed = asyncio.run(_bare(fake.url, model, messages, c))
    st = fake.stats()
    bspan = (st["last_end"] or 0.0) - (st["first_start"] or 0.0)
    res.update(
        bare_wps=round(len(messages) / bspan, 2) if bspan > 0 else None,
        bare_failed=bare_failed,
        bare_max_in_flight=st["max_in_flight"],
        ideal_wps=round(c / args.latency, 1),
    )
    if res["qtrain_wps"] and res["bare_wps"]:
        res["ratio"] = round(res["qtrain_wps"] / res["bare_wps"], 3)
    return res


def main() -> None:
    """Print a Markdown table, one row per concurrency, and a JSON line with every number."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--latency", type=float, default=2.0, help="seconds per fake LLM call")
    ap.add_argument("--rounds", type=int, default=10, help="windows per level = rounds x concurrency")
    ap.add_argument("--pool", default="threads", help="the worker's Celery pool")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a level may take")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    need = max(args.concurrency) * args.rounds  # windows, over 2 symbols
    candles = WARMUP + WINDOW + STRIDE * (need // 2) + 48
    url = fresh_db("qtrain_i30_inflight")
    rows: list[dict[str, Any]] = []
    try:
        seed_candles(url, n=candles)
        ts = [r[0] for r in query(url, "SELECT ts FROM candles WHERE symbol = 'BTC-USDT' ORDER BY ts")]
        fake_args = ("--latency", str(args.latency), "--num-parallel", "1024", "--max-queue", "1024")
        with (
            FakeOllamaProcess(*fake_args) as fake,
            tempfile.TemporaryDirectory(prefix="bench_inflight_", dir=os.environ.get("TMPDIR")) as tmp,
        ):
            for c in args.concurrency:
                first = WARMUP + 1
                last = min(len(ts) - 1, first + WINDOW + STRIDE * (c * args.rounds // 2) - 1)
                row = run_level(
                    c,
                    url=url,
                    fake=fake,
                    args=args,
                    log_dir=Path(tmp),
                    since=ts[first].isoformat(),
                    until=ts[last].isoformat(),
                )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        drop_db(url)
        _flush_redis()
    print(
        f"fake Ollama at {args.latency} s a call, 1,024 slots; one --pool {args.pool} worker; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print(
        "| in flight | windows | failed | qtrain w/s | bare w/s | ratio | ideal w/s | RSS MB | PG conns "
        "| CPU ms/window | reducers CPU s |"
    )
    print("|" + " --- |" * 11)
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['windows']} | {r['failed']} | {r['qtrain_wps']} | {r['bare_wps']} "
            f"| {r.get('ratio')} | {r['ideal_wps']} | {r['max_rss_mb']} | {r['max_pg_conns']} "
            f"| {r['cpu_ms_per_window']} | {r['reducer_cpu_s']} |"
        )
    print(json.dumps({"latency_s": args.latency, "pool": args.pool, "rows": rows}))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
