"""One scheduled retrain tick (the ``qtrain.retrain`` task Celery beat sends; see ``pipeline.schedule``).

Under ``pg_try_advisory_xact_lock`` (a second run that finds the lock taken skips), skip when a
batch with ``params.trigger='beat'`` and the same ``params.tick`` (the scheduled time this run
belongs to) already exists for these symbols; fetch new candles (a fetch failure is logged, the
stored candles are used); plan windows over every stored candle of each symbol (so window starts
stay aligned from tick to tick) and keep only windows NOT yet analysed: no analysis under their
cache key (content + model + prompt version) in ``btc.ollama_analyses``, and not pending/running
in an unfinished batch. Nothing new: no batch (logged). Otherwise one batch over the new windows
is created and enqueued; the normal completion counter runs the reducer (warm start from the
previous Q-table), over ``[earliest new window - WARMUP candles, newest window end)``, whose tail
``holdout`` share is kept for the promotion backtest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from model.analyst.prompt import DEFAULT_PROMPT_STYLE, PROMPT_VERSION, cache_key
from model.candles import timeframe_seconds
from model.features import WARMUP
from model.learning.training import DEFAULT_RECIPE
from worker.errors import QtrainError
from worker.pipeline import dispatch
from worker.pipeline.dispatch import PlannedWindow
from worker.pipeline.schedule import RetrainConfig, tick_of
from worker.settings import DEFAULT_HOLDOUT, Settings
from worker.store import analyses, batches, db
from worker.store.candles import load_candles

log = logging.getLogger("qtrain.retrain")

CheckLLM = Callable[[Settings, str], None]


def _not_yet_analysed(cur: Any, symbol: str, found: list[PlannedWindow], model: str) -> list[PlannedWindow]:
    """``found`` minus windows with a stored analysis (same cache key) or in flight in a running batch."""
    keys = {cache_key(w.content_hash, model, PROMPT_VERSION, DEFAULT_PROMPT_STYLE): w for w in found}
    analysed = {keys[k].content_hash for k in analyses.analysed_keys(cur, list(keys))}
    in_flight = batches.in_flight_hashes(
        cur, symbol, [w.content_hash for w in found], model=model, prompt_version=PROMPT_VERSION
    )
    return [w for w in found if w.content_hash not in analysed and w.content_hash not in in_flight]


def plan_new_windows(
    database_url: str, config: RetrainConfig, model: str
) -> tuple[list[PlannedWindow], dict[str, int]]:
    """Windows over every stored candle of each symbol, minus those analysed or in flight.

    Returns (new windows oldest first per symbol, at most ``max_windows`` newest per symbol;
    per-symbol count of windows skipped for crossing a gap).
    """
    out: list[PlannedWindow] = []
    skipped: dict[str, int] = {}
    for symbol in config.symbols:
        candles = load_candles(database_url, symbol, config.timeframe)
        found, skipped[symbol] = dispatch.plan(
            candles, 0, symbol=symbol, timeframe=config.timeframe, window=config.window, stride=config.stride
        )
        if not found:
            continue
        with db.transaction(database_url) as cur:
            new = _not_yet_analysed(cur, symbol, found, model)
        out.extend(new[-config.max_windows :])
    return out, skipped


def fetch_new_candles(settings: Settings, config: RetrainConfig, *, now: float) -> dict[str, Any]:
    """Fetch closed candles after the newest stored ones; a failure is logged and reported, not raised."""
    if not config.fetch:
        return {"skipped": "QTRAIN_RETRAIN_FETCH=0"}
    from worker.clients.exchange import fetch_symbol, make_exchange

    report: dict[str, Any] = {}
    try:
        exchange = make_exchange(config.exchange, api_url=config.api_url)
    except QtrainError as exc:
        log.warning("retrain: cannot use exchange %s (%s); using stored candles", config.exchange, exc)
        return {"error": str(exc)}
    since = int(now) - config.backfill_days * 86400
    for symbol in config.symbols:
        try:
            res = fetch_symbol(
                exchange,
                settings.database_url,
                symbol,
                config.timeframe,
                since=since,
                now=now,
                max_attempts=3,
            )
            report[symbol] = res.inserted
        except Exception as exc:  # network, exchange, anything: the stored candles still serve
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            log.warning(
                "retrain: fetch %s failed (%s: %s); using stored candles", symbol, type(exc).__name__, first
            )
            report[symbol] = f"error: {first}"
    return report


def _lock_key(config: RetrainConfig) -> str:
    return f"qtrain.retrain:{config.timeframe}:{','.join(sorted(config.symbols))}"


def _batch_spec(
    config: RetrainConfig,
    new: list[PlannedWindow],
    skipped: dict[str, int],
    *,
    model: str,
    tick: str,
    key: str,
    fetched: dict[str, Any],
) -> batches.BatchSpec:
    """The batch of one tick: only symbols with new windows, over the new windows' range (+ warm-up)."""
    step = timeframe_seconds(config.timeframe)
    with_new = {w.symbol for w in new}
    return batches.BatchSpec(
        symbols=tuple(s for s in config.symbols if s in with_new),
        timeframe=config.timeframe,
        window_size=config.window,
        stride=config.stride,
        since=min(w.start_ts for w in new) - WARMUP * step,
        until=max(w.end_ts for w in new) + step,
        epochs=config.epochs,
        model=model,
        analyst=config.analyst,
        prompt_version=PROMPT_VERSION,
        seed=int(datetime.fromisoformat(tick).timestamp()) % 2**31,
        params={
            "skipped": {s: n for s, n in skipped.items() if s in with_new},
            "holdout": DEFAULT_HOLDOUT,
            "recipe": DEFAULT_RECIPE,
            "trigger": "beat",
            "prompt": DEFAULT_PROMPT_STYLE,
            "tick": tick,
            "retrain_key": key,
            "fetched": fetched,
        },
    )


def retrain(
    settings: Settings,
    config: RetrainConfig,
    *,
    now: datetime | None = None,
    enqueue: dispatch.Enqueue,
    check_llm: CheckLLM = dispatch.check_llm,
) -> dict[str, Any]:
    """One scheduled retrain tick; returns ``{"status": created|locked|duplicate|nothing_new|..., ...}``.

    ``enqueue`` is ``worker.runtime.publish.enqueue`` and ``check_llm`` ``worker.pipeline.dispatch``'s
    (tests may inject stand-ins).
    """
    now = now or datetime.now(UTC)
    tick = tick_of(config, now).isoformat()
    model = "heuristic" if config.analyst == "heuristic" else (config.model or settings.llm_model)
    base = {"tick": tick, "symbols": list(config.symbols)}
    key = _lock_key(config)
    t0 = time.monotonic()
    with db.transaction(settings.database_url) as cur:
        if not db.try_advisory_xact_lock(cur, key):
            log.warning("retrain tick %s: another retrain of %s is running; skipped", tick, base["symbols"])
            return {**base, "status": "locked"}
        made = batches.retrain_batch(cur, tick, key)
        if made is not None:
            log.warning("retrain tick %s: batch %s already made for it; skipped", tick, made)
            return {**base, "status": "duplicate", "batch_id": made}
        fetched = fetch_new_candles(settings, config, now=now.timestamp())
        if config.analyst == "ollama":
            try:
                check_llm(settings, model)
            except QtrainError as exc:
                log.warning("retrain tick %s: Ollama not ready (%s); no batch, next tick retries", tick, exc)
                return {**base, "status": "ollama_unavailable", "error": str(exc), "fetched": fetched}
        new, skipped = plan_new_windows(settings.database_url, config, model)
        if not new:
            log.warning("retrain tick %s: no window left to analyse for %s; no batch", tick, base["symbols"])
            return {**base, "status": "nothing_new", "fetched": fetched}
        spec = _batch_spec(config, new, skipped, model=model, tick=tick, key=key, fetched=fetched)
        rows = dispatch.window_rows(new)
        batch_id = batches.create_batch(settings.database_url, spec, rows)  # committed before the lock goes
    return _enqueue_tick(settings, enqueue, spec, batch_id, rows, base=base, fetched=fetched, t0=t0)


def _enqueue_tick(
    settings: Settings,
    enqueue: dispatch.Enqueue,
    spec: batches.BatchSpec,
    batch_id: int,
    rows: list[tuple[str, int, int, int, str]],
    *,
    base: dict[str, Any],
    fetched: dict[str, Any],
    t0: float,
) -> dict[str, Any]:
    """Enqueue the tick's new batch and report it (a failure says how to recover: ``qtrain resume``)."""
    tick = base["tick"]
    try:
        n = enqueue(settings, batch_id, [(s, k) for s, k, *_ in rows], spec.symbols)
    except Exception:
        log.error(
            "retrain tick %s: batch %s created but not enqueued: run `qtrain resume %s`",
            tick,
            batch_id,
            batch_id,
        )
        raise
    per_symbol: dict[str, int] = {}
    for s, *_ in rows:
        per_symbol[s] = per_symbol.get(s, 0) + 1
    log.warning(
        "retrain tick %s: batch %s with %s new windows (%s) in %.1f s",
        tick,
        batch_id,
        n,
        ", ".join(f"{s}: {c}" for s, c in per_symbol.items()),
        time.monotonic() - t0,
    )
    return {
        **base,
        "status": "created",
        "batch_id": batch_id,
        "windows": n,
        "per_symbol": per_symbol,
        "fetched": fetched,
    }
