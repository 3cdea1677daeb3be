"""Create a training batch and enqueue it: preflight, window planning, bulk enqueue, resume.

Messages carry ids only (batch id, symbol, window index): a window's candles are read by the
worker from PostgreSQL. Enqueueing reuses one broker connection for the whole batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model.candles import timeframe_seconds
from model.features import WARMUP
from model.prompt import PROMPT_VERSION, window_content_hash
from model.windows import plan_windows
from worker import batches, db
from worker.candles_store import load_candles
from worker.errors import BadInput, ServiceUnavailable
from worker.settings import Settings

ANALYSTS = ("ollama", "heuristic")


@dataclass(frozen=True)
class TrainRequest:
    """What ``qtrain train`` was asked for."""

    symbols: tuple[str, ...]
    timeframe: str = "1h"
    window: int = 48
    stride: int = 24
    since: int | None = None
    until: int | None = None
    epochs: int = 5
    model: str | None = None
    analyst: str = "ollama"
    seed: int | None = None
    holdout: float = 0.2


def check_database(settings: Settings) -> None:
    """PostgreSQL answers and the schema exists (else one line: what to run)."""
    with db.transaction(settings.database_url) as cur:
        cur.execute("SELECT to_regclass('btc.windows') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise ServiceUnavailable("the qtrain schema is missing: run `qtrain db init`")


def check_broker(settings: Settings) -> None:
    """The Celery broker (Redis) answers."""
    from worker.app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises many kinds: all mean "unreachable" here
        raise ServiceUnavailable(
            f"cannot reach the broker at {db.redact(settings.broker_url)} ({type(exc).__name__}); start"
            " Redis: redis-server --daemonize yes --port 6379"
        ) from exc


def check_ollama(settings: Settings, model: str) -> None:
    """Every Ollama host answers ``/api/version`` and has ``model`` pulled."""
    from worker.ollama import OllamaClient

    OllamaClient(settings.ollama_hosts, model, timeout_s=10.0, max_retries=0).preflight()


def create(settings: Settings, req: TrainRequest) -> dict[str, Any]:
    """Preflight, plan windows per symbol, write the batch and its windows; returns a summary."""
    if req.analyst not in ANALYSTS:
        raise BadInput(f"--analyst must be one of {', '.join(ANALYSTS)}, got {req.analyst!r}")
    if req.epochs < 1:
        raise BadInput(f"--epochs must be >= 1, got {req.epochs}")
    if req.window < 2 or req.stride < 1:
        raise BadInput("--window must be >= 2 and --stride >= 1")
    if not 0.0 <= req.holdout < 0.9:
        raise BadInput(f"--holdout must be in [0, 0.9), got {req.holdout}")
    try:
        step = timeframe_seconds(req.timeframe)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    model = req.model or settings.ollama_model
    check_database(settings)
    check_broker(settings)
    if req.analyst == "ollama":
        check_ollama(settings, model)
    rows: list[tuple[str, int, int, int, str]] = []
    skipped: dict[str, int] = {}
    for symbol in req.symbols:
        # history before --since too: a window's hash covers its indicator warm-up, as the worker sees it
        history_since = None if req.since is None else req.since - WARMUP * step
        full = load_candles(
            settings.database_url, symbol, req.timeframe, since=history_since, until=req.until
        )
        first = 0 if req.since is None else int(full.ts.searchsorted(req.since, side="left"))
        candles = full.slice(first, len(full))
        if len(candles) == 0:
            raise BadInput(
                f"no {req.timeframe} candles for {symbol} in the range: run `qtrain candles import` or"
                " `qtrain candles fetch` first"
            )
        plan = plan_windows(candles.ts, size=req.window, stride=req.stride, step=step)
        skipped[symbol] = plan.skipped
        for k, start in enumerate(plan.starts.tolist()):
            start_ts = int(candles.ts[start])
            end_ts = int(candles.ts[start + req.window - 1])
            lo = int(full.ts.searchsorted(start_ts - WARMUP * step, side="left"))
            ctx = full.slice(lo, first + start + req.window)
            digest = window_content_hash(ctx, symbol=symbol, timeframe=req.timeframe)
            rows.append((symbol, k, start_ts, end_ts, digest))
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    spec = batches.BatchSpec(
        symbols=req.symbols,
        timeframe=req.timeframe,
        window_size=req.window,
        stride=req.stride,
        since=req.since,
        until=req.until,
        epochs=req.epochs,
        model="heuristic" if req.analyst == "heuristic" else model,
        analyst=req.analyst,
        prompt_version=PROMPT_VERSION,
        seed=seed,
        params={"skipped": skipped, "holdout": req.holdout},
    )
    batch_id = batches.create_batch(settings.database_url, spec, rows)
    return {"batch_id": batch_id, "windows": len(rows), "skipped": skipped, "seed": seed}


def enqueue(
    settings: Settings, batch_id: int, windows: Sequence[tuple[str, int]], symbols: Sequence[str]
) -> int:
    """Send one analyse task per window over one broker connection; reduce symbols with none left."""
    from worker.app import app
    from worker.tasks import analyze_window, maybe_reduce

    with app.producer_or_acquire() as producer:
        for symbol, idx in windows:
            analyze_window.apply_async((batch_id, symbol, idx), producer=producer)
    pending = {s for s, _ in windows}
    for symbol in symbols:
        if symbol not in pending:
            maybe_reduce(batch_id, symbol)  # nothing to analyse (or all final): reduce now
    return len(windows)


def resume(settings: Settings, batch_id: int) -> dict[str, Any]:
    """Re-enqueue every window not final and every reducer not run; safe at any time, any number of times.

    A window still running elsewhere may then run twice: harmless, tasks are idempotent.
    """
    check_database(settings)
    check_broker(settings)
    loaded = batches.load_batch(settings.database_url, batch_id)
    if loaded is None:
        raise BadInput(f"batch {batch_id} does not exist: `qtrain status` lists the latest")
    spec, _ = loaded
    todo = batches.unfinished_windows(settings.database_url, batch_id)
    done = batches.reduced_symbols(settings.database_url, batch_id)
    n = enqueue(settings, batch_id, todo, [s for s in spec.symbols if s not in done])
    return {
        "batch_id": batch_id,
        "requeued_windows": n,
        "reducers_pending": [s for s in spec.symbols if s not in done],
    }
