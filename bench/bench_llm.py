"""The real embedded model (SmolLM2-135M via llama_cpp.server): qtrain's analyse step against a bare loop.

For each engine layout (``P`` llama_cpp.server processes x ``T`` threads) and client concurrency
``C``: a real batch through real Celery worker processes (``qtrain train --wait --json``, 2 workers x
1 slot for C=2, QTRAIN_LLM_API=openai) over synthetic candles, then a bare loop sending the same
requests (the same messages, ``response_format`` json_object + schema, temperature 0, seed 42,
the same ``max_tokens``) from ``C`` threads with httpx. Reported: windows/s of each over the LLM
phase and their ratio (goal >= 0.95), seconds per window, prompt and answer tokens per window
(median), failed windows. Then the prefix-cache effect on one process: streamed requests, the
time to the first token of the first call (whole prompt evaluated) against the rest (the fixed
system prefix reused from the last request).

Run: ``.venv/bin/python bench/bench_llm.py [--candles 150] [--stride 24]`` with PostgreSQL and
Redis up and the ``llm`` extra installed (``scripts/bootstrap.sh venv --llm``). About ten minutes
on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from model.analyst.answer import ANSWER_SCHEMA  # noqa: E402
from model.analyst.prompt import build_messages  # noqa: E402
from model.features import compute_features  # noqa: E402
from tests.pipeline_support import ROOT, qtrain, query, seed_candles  # noqa: E402
from worker.cluster.local import start_workers  # noqa: E402
from worker.embedded import llm  # noqa: E402
from worker.embedded.servers import free_port  # noqa: E402
from worker.pipeline.analyze import window_context  # noqa: E402
from worker.store.batches import Window  # noqa: E402

REDIS = "redis://127.0.0.1:6379"
BROKER_DB, BACKEND_DB = 14, 15  # the benchmarks' (tests use 8-13)


@dataclass(frozen=True)
class Case:
    """One layout: ``processes`` servers x ``threads`` each, ``concurrency`` clients."""

    processes: int
    threads: int
    concurrency: int

    @property
    def label(self) -> str:
        """``2 x 1 thr, C=2``."""
        return f"{self.processes} proc x {self.threads} thr, {self.concurrency} client(s)"


def _flush_redis() -> None:
    for number in (BROKER_DB, BACKEND_DB):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        client.flushdb()
        client.close()


def since_iso(url: str, skip: int) -> str:
    """The ``--since`` that leaves ``skip`` candles of warm-up before the first window."""
    sql = "SELECT ts FROM candles WHERE symbol = %s ORDER BY ts OFFSET %s LIMIT 1"
    ((ts,),) = query(url, sql, ("BTC-USDT", skip))
    return str(ts.isoformat())


def batch_messages(url: str, batch_id: int) -> list[list[dict[str, str]]]:
    """The exact messages the analyse task builds for each window of ``batch_id`` (in window order)."""
    rows = query(
        url,
        "SELECT w.symbol, w.idx, extract(epoch FROM w.start_ts)::bigint,"
        " extract(epoch FROM w.end_ts)::bigint, w.content_hash, b.timeframe"
        " FROM windows w JOIN batches b ON b.id = w.batch_id"
        " WHERE w.batch_id = %s ORDER BY w.symbol, w.idx",
        (batch_id,),
    )
    out = []
    for symbol, idx, start, end, digest, tf in rows:
        w = Window(batch_id, symbol, idx, int(start), int(end), digest, "", 0, tf, "", "", 0)
        ctx = window_context(url, w)
        feats = compute_features(ctx)
        inside = ctx.ts >= w.start_ts
        win = ctx.slice(int(inside.argmax()), len(ctx))
        out.append(build_messages(win, {k: v[inside] for k, v in feats.items()}, symbol=symbol, timeframe=tf))
    return out


def run_qtrain(
    url: str, servers: llm.LLMServers, case: Case, args: argparse.Namespace, log_dir: Path, n: int
) -> dict[str, Any]:
    """A real batch through 2 workers x 1 slot (or 1 x 1 for one client); its windows, tokens, times."""
    _flush_redis()
    env = {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS}/{BACKEND_DB}",
        "QTRAIN_LLM_API": "openai",
        "OPENAI_BASE_URL": ",".join(servers.base_urls),
        "QTRAIN_LLM_MODEL": servers.model,
        "QTRAIN_LLM_MAX_TOKENS": str(args.max_tokens),
        "OLLAMA_TIMEOUT": "600",
        "QTRAIN_MODELS_DIR": str(log_dir / f"models{n}"),
        "QTRAIN_MAX_ATTEMPTS": "2",
    }
    with start_workers(case.concurrency, concurrency=1, env=env, log_dir=log_dir, prefix=f"bllm{n}"):
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
            "--since",
            since_iso(url, args.skip),
            "--seed",
            "7",
            "--wait",
            "--timeout",
            "3000",
            "--json",
            timeout=3100,
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{case.label}: qtrain train failed: {proc.stderr[-1500:]}")
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    (span,) = query(
        url,
        "SELECT extract(epoch FROM max(a.created_at)"
        " - min(a.created_at - coalesce(a.total_duration_ms, 0) * interval '1 millisecond'))"
        " FROM windows w JOIN ollama_analyses a ON a.id = w.analysis_id WHERE w.batch_id = %s",
        (final["batch_id"],),
    )[0]
    tokens = query(
        url,
        "SELECT a.prompt_tokens, a.completion_tokens FROM windows w JOIN ollama_analyses a"
        " ON a.id = w.analysis_id WHERE w.batch_id = %s",
        (final["batch_id"],),
    )
    failed = sum(s["failed"] for s in final["symbols"].values())
    return {"final": final, "wall": wall, "span": float(span or wall), "tokens": tokens, "failed": failed}


def bare_loop(
    servers: llm.LLMServers, messages: list[list[dict[str, str]]], concurrency: int, max_tokens: int
) -> dict[str, Any]:
    """The same requests from ``concurrency`` threads, each thread its own server (round-robin)."""
    todo = list(enumerate(messages))
    lock = threading.Lock()
    results: list[tuple[int, int, float, str]] = []
    answers: list[dict[str, Any]] = []

    def run(k: int) -> None:
        base = servers.base_urls[k % len(servers.base_urls)]
        with httpx.Client(timeout=900) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    i, msgs = todo.pop(0)
                t = time.perf_counter()
                r = client.post(f"{base}/chat/completions", json=payload(servers.model, msgs, max_tokens))
                dt = time.perf_counter() - t
                body = r.json()
                u = body["usage"]
                with lock:
                    finish = body["choices"][0]["finish_reason"]
                    results.append((u["prompt_tokens"], u["completion_tokens"], dt, finish))
                    answers.append(
                        {
                            "i": i,
                            "messages": msgs,
                            "text": body["choices"][0]["message"]["content"],
                            "prompt_tokens": u["prompt_tokens"],
                            "completion_tokens": u["completion_tokens"],
                            "finish_reason": finish,
                            "seconds": round(dt, 2),
                        }
                    )

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {
        "wall": time.perf_counter() - t0,
        "results": results,
        "answers": sorted(answers, key=lambda a: a["i"]),
    }


def payload(model: str, messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> dict[str, Any]:
    """The request qtrain's OpenAI client ends up sending llama-cpp-python (json_object + schema)."""
    return {
        "model": model,
        "messages": messages,
        "temperature": 0.0,
        "seed": 42,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_object", "schema": ANSWER_SCHEMA},
        **extra,
    }


def prefix_cache(
    servers: llm.LLMServers, messages: list[list[dict[str, str]]], max_tokens: int
) -> list[float]:
    """Seconds to the first streamed token for each of ``messages`` in turn, on the first server."""
    base = servers.base_urls[0]
    out = []
    with httpx.Client(timeout=900) as client:
        for msgs in messages:
            t = time.perf_counter()
            first = None
            body = payload(servers.model, msgs, max_tokens, stream=True)
            with client.stream("POST", f"{base}/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if first is None and line.startswith("data: ") and '"content"' in line:
                        first = time.perf_counter() - t
            out.append(first if first is not None else float("nan"))
    return out


def with_servers(case: Case, gguf: Path, fn: Callable[[llm.LLMServers], Any]) -> Any:
    """Start the case's engine in a scratch directory, warm it with one short call, run ``fn``."""
    with tempfile.TemporaryDirectory(prefix="bench_llm_") as tmp:
        servers = llm.start_llm(
            Path(tmp),
            gguf,
            llm.DEFAULT_ALIAS,
            processes=case.processes,
            threads=case.threads,
            free_port=free_port,
        )
        try:
            hello = {"model": servers.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            for base in servers.base_urls:
                httpx.post(f"{base}/chat/completions", timeout=120, json=hello)
            return fn(servers)
        finally:
            llm.stop_llm(servers)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    """Print a Markdown table, one row per case, and the prefix-cache line (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candles", type=int, default=200, help="hourly candles per symbol (2 symbols)")
    ap.add_argument("--skip", type=int, default=60, help="candles before the first window (warm-up)")
    ap.add_argument("--stride", type=int, default=24, help="candles between windows (window 48)")
    ap.add_argument("--max-tokens", type=int, default=512, help="QTRAIN_LLM_MAX_TOKENS (answer cap)")
    ap.add_argument("--record", default=None, help="write the first case's bare-loop answers (JSON) here")
    ap.add_argument("--cases", default="1x2:2,2x1:2,1x2:1", help="PROCxTHREADS:CLIENTS, comma separated")
    args = ap.parse_args()
    if not llm.extra_installed():
        raise SystemExit(f"the llm extra is missing: {llm.EXTRA_HINT}")
    gguf = llm.ensure_gguf(ROOT / ".qtrain")
    cases = []
    for spec in args.cases.split(","):
        layout, clients = spec.split(":")
        p, t = layout.split("x")
        cases.append(Case(int(p), int(t), int(clients)))
    rows: list[str] = []
    prefix: list[float] = []
    n_windows = 0
    with tempfile.TemporaryDirectory(prefix="bench_llm_logs_") as logs:
        for n, case in enumerate(cases):
            url = fresh_db("qtrain_bench_llm")
            try:
                seed_candles(url, n=args.candles)

                def measure(servers: llm.LLMServers, url: str = url, case: Case = case, n: int = n) -> Any:
                    q = run_qtrain(url, servers, case, args, Path(logs), n)
                    msgs = batch_messages(url, q["final"]["batch_id"])
                    b = bare_loop(servers, msgs, case.concurrency, args.max_tokens)
                    pc = prefix_cache(servers, msgs[:4], args.max_tokens) if n == 0 else []
                    return q, b, pc

                q, b, pc = with_servers(case, gguf, measure)
            finally:
                drop_db(url)
                _flush_redis()
            prefix = prefix or pc
            if args.record and n == 0:
                Path(args.record).write_text(json.dumps(b["answers"], indent=1))
            n_windows = q["final"]["total"]
            q_rate = n_windows / q["span"]
            b_rate = len(b["results"]) / b["wall"]
            prompt = [float(r[0]) for r in b["results"]]
            answer = [float(r[1]) for r in b["results"]]
            cut = sum(1 for r in b["results"] if r[3] == "length")
            rows.append(
                f"| {case.label} | {n_windows} | {q['failed']} | {q_rate:.3f} | {b_rate:.3f}"
                f" | {q_rate / b_rate:.2f} | {1 / q_rate:.1f} | {_med([r[2] for r in b['results']]):.1f}"
                f" | {_med(prompt):.0f} | {_med(answer):.0f} | {cut} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    print(
        f"SmolLM2-135M-Instruct Q4_1 via llama_cpp.server, {llm.N_CTX} ctx; {args.candles} synthetic candles"
        f" x 2 symbols from candle {args.skip}, window 48, stride {args.stride} ({n_windows} windows);"
        f" max_tokens {args.max_tokens}; {os.cpu_count()} CPUs (shared), nice {os.nice(0)}"
    )
    print()
    print(
        "| engine, clients | windows | qtrain failed | qtrain windows/s | bare windows/s | ratio "
        "| qtrain s per window | bare s per request (median) | prompt tok (median) | answer tok (median) "
        "| bare cut at cap |"
    )
    print("|" + " --- |" * 11)
    print("\n".join(rows))
    if prefix:
        rest = _med(prefix[1:])
        print(
            f"\nprefix cache (1 process): first token after {prefix[0]:.2f} s on the first call (whole"
            f" prompt), {rest:.2f} s median on the next {len(prefix) - 1} (system prefix reused): "
            + ", ".join(f"{x:.2f}" for x in prefix)
        )


if __name__ == "__main__":
    main()
