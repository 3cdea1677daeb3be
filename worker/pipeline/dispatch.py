"""Create a training batch and enqueue it: preflight, window planning, enqueue, resume.

Used by the CLI (``qtrain train``, ``resume``, ``demo``) and by the beat's retrain tick, so it sits
below both. Messages carry ids only (batch id, symbol, window index): a window's candles are read
by the worker from PostgreSQL. Enqueueing reuses one broker connection for the whole batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from model.analyst.prompt import prompt_version, window_content_hashes
from model.candles import Candles, timeframe_seconds
from model.evaluation.pooled_folds import PEER_COVERAGE
from model.features import WARMUP
from model.learning.pooled import PooledRecipe
from model.learning.training import DEFAULT_RECIPE, RECIPES
from model.market.windows import plan_windows
from worker.errors import BadInput, ServiceUnavailable
from worker.settings import (
    ANALYST_NAMES,
    DEFAULT_EPOCHS,
    DEFAULT_HOLDOUT,
    DEFAULT_STRIDE,
    DEFAULT_TIMEFRAME,
    DEFAULT_WINDOW,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_STRIDE,
    MAX_WINDOW,
    Settings,
    stored_analyst,
)
from worker.store import batches, db, migrate, versions
from worker.store.candles import count_missing_volume, load_candles, stored_counts

#: ``--analyst``: ``llm`` (any LLM server; ``ollama``, its stored name, as before) or ``heuristic``.
ANALYSTS = ANALYST_NAMES


@dataclass(frozen=True)
class TrainRequest:
    """What ``qtrain train`` was asked for."""

    symbols: tuple[str, ...]
    timeframe: str = DEFAULT_TIMEFRAME
    window: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    since: int | None = None
    until: int | None = None
    epochs: int = DEFAULT_EPOCHS
    model: str | None = None
    analyst: str = "ollama"
    seed: int | None = None
    holdout: float = DEFAULT_HOLDOUT
    recipe: str = DEFAULT_RECIPE
    #: Stored symbols a pooled recipe also pools with (``--pool``): None: the default (one symbol:
    #: every other stored symbol covering its training range; several: each other only); ``()``:
    #: none, each symbol trained alone (``--pool none``).
    pool: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "analyst", stored_analyst(self.analyst))  # llm -> ollama, as stored

    def check(self) -> None:
        """BadInput (one line) for an option out of range."""
        if self.analyst not in ANALYSTS:
            raise BadInput(f"--analyst must be one of {', '.join(ANALYSTS)}, got {self.analyst!r}")
        for flag, value, low, high in (
            ("--epochs", self.epochs, 1, MAX_EPOCHS),
            ("--window", self.window, 2, MAX_WINDOW),
            ("--stride", self.stride, 1, MAX_STRIDE),
            ("--seed", self.seed, 0, MAX_SEED),
        ):
            if value is not None and not low <= value <= high:
                raise BadInput(f"{flag} must be from {low:,} to {high:,}, got {value:,}")
        if not 0.0 <= self.holdout < 0.9:
            raise BadInput(f"--holdout must be in [0, 0.9), got {self.holdout}")
        if self.recipe not in RECIPES:
            raise BadInput(f"--recipe must be one of {', '.join(sorted(RECIPES))}, got {self.recipe!r}")
        if self.pool is not None and not isinstance(RECIPES[self.recipe], PooledRecipe):
            raise BadInput(f"--pool applies to the pooled recipe only, not {self.recipe!r}: drop --pool")
        try:
            timeframe_seconds(self.timeframe)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc


@dataclass(frozen=True)
class PlannedWindow:
    """A window to analyse: ``(symbol, start_ts, end_ts, content_hash)``, end inclusive."""

    symbol: str
    start_ts: int
    end_ts: int
    content_hash: str


@dataclass(frozen=True)
class CreatedBatch:
    """A batch just written: its id, window count, windows skipped for gaps per symbol, seed."""

    batch_id: int
    windows: int
    skipped: dict[str, int]
    seed: int
    recipe: str = DEFAULT_RECIPE
    #: The batch's ``params.pool`` (``pool_param``): stored symbols pooled with, or "none".
    pool: list[str] | str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON ``qtrain train --json`` prints."""
        return asdict(self)


def check_database(settings: Settings) -> None:
    """PostgreSQL answers and the schema exists (else one line: what to run)."""
    migrate.require_schema(settings.database_url)


def check_broker(settings: Settings) -> None:
    """The Celery broker (Redis or RabbitMQ) answers."""
    from kombu import Connection

    try:
        with Connection(settings.broker_url) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises many kinds: all mean "unreachable" here
        start = (
            "RabbitMQ: rabbitmq-server -detached"
            if settings.broker_url.startswith(("amqp", "pyamqp"))
            else "Redis: redis-server --daemonize yes --port 6379"
        )
        where = db.redact(settings.broker_url)
        why = type(exc).__name__
        raise ServiceUnavailable(f"cannot reach the broker at {where} ({why}); start {start}") from exc


def check_llm(settings: Settings, model: str) -> None:
    """Every LLM host of ``settings.llm_api`` answers and serves ``model``: Ollama's version and
    pulled models, or an OpenAI-compatible server's ``/models`` list (one line otherwise)."""
    from worker.clients.factory import chat_client

    client = chat_client(replace(settings, llm_model=model), max_retries=0)
    try:
        client.preflight()
    finally:
        client.close()


def plan(
    full: Candles, first: int, *, symbol: str, timeframe: str, window: int, stride: int
) -> tuple[list[PlannedWindow], int]:
    """Windows over ``full[first:]`` (gaps skipped) and how many were skipped.

    Each window's content hash covers its indicator warm-up, taken from ``full`` (which may start
    before ``first``), exactly as the worker sees the window: the same candles give the same hash
    whether planned by ``qtrain train`` or by the beat's retrain tick.
    """
    step = timeframe_seconds(timeframe)
    candles = full.slice(first, len(full))
    windows = plan_windows(candles.ts, size=window, stride=stride, step=step)
    starts = np.asarray(windows.starts, dtype=np.int64)
    start_ts = candles.ts[starts].astype(np.int64)
    end_ts = candles.ts[starts + window - 1].astype(np.int64)
    lo = full.ts.searchsorted(start_ts - WARMUP * step, side="left")
    digests = window_content_hashes(full, lo, first + starts + window, symbol=symbol, timeframe=timeframe)
    out = [
        PlannedWindow(symbol, a, b, d)
        for a, b, d in zip(start_ts.tolist(), end_ts.tolist(), digests, strict=True)
    ]
    return out, windows.skipped


def window_rows(windows: Sequence[PlannedWindow]) -> list[tuple[str, int, int, int, str]]:
    """The ``btc.windows`` rows of planned windows: indices numbered per symbol from 0, in order."""
    seen: dict[str, int] = {}
    rows = []
    for w in windows:
        k = seen.get(w.symbol, 0)
        seen[w.symbol] = k + 1
        rows.append((w.symbol, k, w.start_ts, w.end_ts, w.content_hash))
    return rows


def _symbol_windows(settings: Settings, req: TrainRequest, symbol: str) -> tuple[list[PlannedWindow], int]:
    step = timeframe_seconds(req.timeframe)
    # history before --since too: a window's hash covers its indicator warm-up, as the worker sees it
    history_since = None if req.since is None else req.since - WARMUP * step
    full = load_candles(settings.database_url, symbol, req.timeframe, since=history_since, until=req.until)
    first = 0 if req.since is None else int(full.ts.searchsorted(req.since, side="left"))
    if len(full) - first == 0:
        raise BadInput(
            f"no {req.timeframe} candles for {symbol} in the range: run `qtrain candles import` or"
            " `qtrain candles fetch` first"
        )
    missing = count_missing_volume(
        settings.database_url, symbol, req.timeframe, since=history_since, until=req.until
    )
    if missing:
        raise BadInput(
            f"{symbol}: {missing} candles in the range have no volume (the file had no volume column);"
            " training needs it (feature volume_z): import a file with volume, or fetch the pair with"
            " `qtrain candles fetch`"
        )
    return plan(full, first, symbol=symbol, timeframe=req.timeframe, window=req.window, stride=req.stride)


def create(settings: Settings, req: TrainRequest) -> CreatedBatch:
    """Preflight, plan windows per symbol, write the batch and its windows."""
    req.check()
    model = req.model or settings.llm_model
    check_database(settings)
    check_broker(settings)
    if req.analyst == "ollama":
        check_llm(settings, model)
    planned: list[PlannedWindow] = []
    skipped: dict[str, int] = {}
    for symbol in req.symbols:
        found, skipped[symbol] = _symbol_windows(settings, req, symbol)
        planned.extend(found)
    pool = pool_param(settings, req)
    params: dict[str, Any] = {
        "skipped": skipped,
        "holdout": req.holdout,
        "recipe": req.recipe,
        "prompt": settings.prompt_style,
    }
    if pool is not None:
        params["pool"] = pool
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
        prompt_version=prompt_version(settings.prompt_style),
        seed=seed,
        params=params,
    )
    batch_id = batches.create_batch(settings.database_url, spec, window_rows(planned))
    return CreatedBatch(
        batch_id=batch_id, windows=len(planned), skipped=skipped, seed=seed, recipe=req.recipe, pool=pool
    )


def training_span(settings: Settings, req: TrainRequest, symbol: str) -> tuple[int, int, int]:
    """(first candle, training end (exclusive), training candles) of ``symbol`` in the batch's range,
    as the reducer cuts it (``worker.pipeline.reduce.train_inputs``: the range minus the holdout)."""
    candles = load_candles(settings.database_url, symbol, req.timeframe, since=req.since, until=req.until)
    n_train = max(2, int(round(len(candles) * (1.0 - req.holdout))))
    n_train = min(n_train, len(candles))
    return int(candles.ts[0]), int(candles.ts[n_train - 1]) + timeframe_seconds(req.timeframe), n_train


def pool_param(settings: Settings, req: TrainRequest) -> list[str] | str | None:
    """The batch's ``params.pool``: None without a pooled recipe; "none" (``--pool none``: each
    symbol alone); else the stored symbols outside the batch it pools with (their training candles,
    unshaped, up to the batch's training end; ``[]``: the batch's symbols only). Default: a batch
    of ONE symbol pools with every other symbol stored at its timeframe (with volume) that has at
    least ``PEER_COVERAGE`` of its training candles in its training range; a batch of several, with
    none besides them. ``--pool A,B`` names them (BadInput when one has no candles in that range)."""
    if not isinstance(RECIPES[req.recipe], PooledRecipe):
        return None
    if req.pool == ():
        return "none"
    if req.pool is None and len(req.symbols) > 1:
        return []
    spans = [training_span(settings, req, s) for s in req.symbols]
    since, until = min(a for a, _, _ in spans), min(b for _, b, _ in spans)
    n_own = max(n for _, _, n in spans)
    counts = stored_counts(settings.database_url, req.timeframe, since=since, until=until)
    if req.pool is None:
        return [s for s, n in counts.items() if s not in req.symbols and n >= max(2, PEER_COVERAGE * n_own)]
    missing = [s for s in req.pool if counts.get(s, 0) < 2]
    if missing:
        raise BadInput(
            f"--pool {', '.join(missing)}: no {req.timeframe} candles (with volume) stored over the batch's"
            " training range; import them first, or give --pool none"
        )
    return sorted(s for s in req.pool if s not in req.symbols)


def pool_line(symbols: Sequence[str], recipe: str, pool: list[str] | str | None) -> str:
    """One line saying what the batch's pooled recipe pools (``pool``: its ``params.pool``)."""
    if pool is None:
        return f"recipe {recipe}: each symbol on its own candles"
    if pool == "none":
        return f"recipe {recipe}: each symbol alone (--pool none)"
    own = ", ".join(symbols)
    across = f"pooled across {own}" if len(symbols) > 1 else f"{own} pooled"
    if not pool:
        alone = " with no other symbol (none stored over its training range)" if len(symbols) == 1 else ""
        return f"recipe {recipe}: {across}{alone}"
    return (
        f"recipe {recipe}: {across} with the stored {', '.join(pool)}"
        " (training candles up to the batch's training end, unshaped)"
    )


#: Messages buffered before one Redis round trip (a pipeline of LPUSHes and their sent events).
PUBLISH_CHUNK = 1000

Progress = Callable[[int, int], None]
"""``progress(sent, total)``: called after each chunk of messages has reached the broker."""


class Enqueue(Protocol):
    """Sends a batch's windows to the workers (``worker.runtime.publish.enqueue``; tests inject
    stand-ins): one analyse task per window, then the reducer of each symbol with none left.
    Passed in, so planning sits below the Celery runtime that does the sending."""

    def __call__(
        self,
        settings: Settings,
        batch_id: int,
        windows: Sequence[tuple[str, int]],
        symbols: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> int: ...


def task_argsrepr(batch_id: int, symbol: str, idx: int) -> str:
    """An analyse task's ``argsrepr`` header, as Celery's ``saferepr`` writes it for these args."""
    return f"({batch_id}, {symbol!r}, {idx})"


def enqueue_batch(
    settings: Settings,
    batch_id: int,
    symbols: Sequence[str],
    *,
    enqueue: Enqueue,
    progress: Progress | None = None,
) -> int:
    """Enqueue every window of a batch that is not final (a new batch: all of them)."""
    return enqueue(
        settings,
        batch_id,
        batches.unfinished_windows(settings.database_url, batch_id),
        symbols,
        progress=progress,
    )


@dataclass(frozen=True)
class Resumed:
    """What ``qtrain resume`` re-enqueued."""

    batch_id: int
    requeued_windows: int
    reducers_pending: list[str]

    def to_json(self) -> dict[str, Any]:
        """The JSON ``qtrain resume --json`` prints."""
        return asdict(self)


def resume(settings: Settings, batch_id: int, *, enqueue: Enqueue) -> Resumed:
    """Re-enqueue every window not final and every reducer not run; safe at any time, any number of times.

    A window still running elsewhere may then run twice: harmless, tasks are idempotent.
    """
    check_database(settings)
    check_broker(settings)
    loaded = batches.load_batch(settings.database_url, batch_id)
    if loaded is None:
        raise BadInput(f"batch {batch_id} does not exist: `qtrain status` lists the latest")
    spec, _ = loaded
    done = versions.gated_symbols(settings.database_url, batch_id)
    pending = [s for s in spec.symbols if s not in done]
    n = enqueue_batch(settings, batch_id, pending, enqueue=enqueue)
    return Resumed(batch_id=batch_id, requeued_windows=n, reducers_pending=pending)
