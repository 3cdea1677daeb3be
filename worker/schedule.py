"""Scheduled retraining: the Celery beat entry from the environment, and the retrain step.

Environment (read by the beat process; the entry's kwargs carry it to the worker that runs it):

- ``QTRAIN_RETRAIN_CRON``: 5 cron fields ``minute hour day-of-month month day-of-week`` (Celery's
  crontab: day-of-week 0 = Sunday; day-of-month and day-of-week must both match), e.g. ``0 3 * * *``.
- ``QTRAIN_RETRAIN_EVERY_S``: instead of cron, every N seconds (tests, demos). Neither set: no schedule.
- ``QTRAIN_RETRAIN_SYMBOLS`` (required with a schedule, comma list), ``QTRAIN_RETRAIN_EXCHANGE``
  (ccxt id, default kucoin), ``QTRAIN_RETRAIN_TIMEFRAME`` (1h), ``QTRAIN_RETRAIN_ANALYST``
  (ollama|heuristic, default ollama), ``QTRAIN_RETRAIN_MODEL`` (default: the worker's OLLAMA_MODEL),
  ``QTRAIN_RETRAIN_EPOCHS`` (5), ``QTRAIN_RETRAIN_WINDOW`` (48), ``QTRAIN_RETRAIN_STRIDE`` (24),
  ``QTRAIN_RETRAIN_BACKFILL_DAYS`` (30: how far back the first fetch of a symbol without candles
  goes), ``QTRAIN_RETRAIN_MAX_WINDOWS`` (500 new windows per symbol per tick at most, newest first),
  ``QTRAIN_RETRAIN_FETCH`` (1; 0 = use stored candles only), ``QTRAIN_EXCHANGE_API_URL`` (the same
  hidden override ``qtrain candles fetch`` honours).

One tick (``retrain``): under ``pg_try_advisory_xact_lock`` (a second run that finds the lock
taken skips), skip when a batch with ``params.trigger='beat'`` and the same ``params.tick`` (the
scheduled time this run belongs to) already exists for these symbols; fetch new candles (a fetch
failure is logged, the stored candles are used); plan windows over every stored candle of each
symbol (so window starts stay aligned from tick to tick) and keep only windows NOT yet analysed:
no analysis under their cache key (content + model + prompt version) in ``btc.ollama_analyses``,
and not pending/running in an unfinished batch. Nothing new: no batch (logged). Otherwise one batch
over the new windows is created and enqueued; the normal completion counter runs the reducer
(warm start from the previous Q-table), over ``[earliest new window - WARMUP candles, newest
window end)``, whose tail ``holdout`` share is kept for the promotion backtest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab

from model.candles import timeframe_seconds
from model.features import WARMUP
from model.prompt import PROMPT_VERSION, cache_key, window_content_hash
from model.windows import plan_windows
from worker import batches, db
from worker.candles_store import load_candles
from worker.errors import BadInput, QtrainError
from worker.settings import Settings

log = logging.getLogger("qtrain.schedule")

RETRAIN_TASK = "qtrain.retrain"
ENTRY_NAME = "qtrain-retrain"
ANALYSTS = ("ollama", "heuristic")
CRON_HELP = "5 fields 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *'"
#: A cron-scheduled message not started within this many seconds is dropped (the next tick covers it).
CRON_EXPIRES_S = 3600.0
#: How many days back ``previous_fire`` looks for a cron match before giving up.
_CRON_LOOKBACK_DAYS = 366 * 8


@dataclass(frozen=True)
class RetrainConfig:
    """What a scheduled retrain does; JSON-able, sent to the worker as the beat entry's kwargs."""

    symbols: tuple[str, ...]
    cron: str | None = None
    every_s: float | None = None
    exchange: str = "kucoin"
    timeframe: str = "1h"
    analyst: str = "ollama"
    model: str | None = None
    epochs: int = 5
    window: int = 48
    stride: int = 24
    backfill_days: int = 30
    max_windows: int = 500
    fetch: bool = True
    api_url: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise BadInput("set exactly one of QTRAIN_RETRAIN_CRON and QTRAIN_RETRAIN_EVERY_S")
        if self.cron is not None:
            parse_cron(self.cron)
        if self.every_s is not None and not self.every_s >= 1:
            raise BadInput(f"QTRAIN_RETRAIN_EVERY_S must be >= 1 second, got {self.every_s}")
        if not self.symbols:
            raise BadInput("QTRAIN_RETRAIN_SYMBOLS is empty: give e.g. BTC-USDT,ETH-USDT")
        if self.analyst not in ANALYSTS:
            raise BadInput(
                f"QTRAIN_RETRAIN_ANALYST must be one of {', '.join(ANALYSTS)}, got {self.analyst!r}"
            )
        try:
            timeframe_seconds(self.timeframe)
        except ValueError as exc:
            raise BadInput(f"QTRAIN_RETRAIN_TIMEFRAME: {exc}") from None
        for name in ("epochs", "window", "stride", "max_windows", "backfill_days"):
            low = 2 if name == "window" else 1
            if getattr(self, name) < low:
                raise BadInput(f"QTRAIN_RETRAIN_{name.upper()} must be >= {low}, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetrainConfig | None:
        """The configuration in ``env``; None when no schedule is set; BadInput (one line) when wrong."""
        cron = env.get("QTRAIN_RETRAIN_CRON", "").strip() or None
        every = env.get("QTRAIN_RETRAIN_EVERY_S", "").strip() or None
        if cron is None and every is None:
            return None
        from worker.symbols import normalize_symbol

        try:
            symbols = tuple(
                normalize_symbol(s) for s in env.get("QTRAIN_RETRAIN_SYMBOLS", "").split(",") if s.strip()
            )
        except (ValueError, QtrainError) as exc:
            raise BadInput(f"QTRAIN_RETRAIN_SYMBOLS: {exc}") from None

        def number(name: str, default: int) -> int:
            text = env.get(f"QTRAIN_RETRAIN_{name}", "").strip()
            try:
                return int(text) if text else default
            except ValueError:
                raise BadInput(f"QTRAIN_RETRAIN_{name} must be an integer, got {text!r}") from None

        try:
            every_s = None if every is None else float(every)
        except ValueError:
            raise BadInput(f"QTRAIN_RETRAIN_EVERY_S must be a number of seconds, got {every!r}") from None
        return cls(
            symbols=symbols,
            cron=cron,
            every_s=every_s,
            exchange=env.get("QTRAIN_RETRAIN_EXCHANGE", "").strip() or "kucoin",
            timeframe=env.get("QTRAIN_RETRAIN_TIMEFRAME", "").strip() or "1h",
            analyst=env.get("QTRAIN_RETRAIN_ANALYST", "").strip() or "ollama",
            model=env.get("QTRAIN_RETRAIN_MODEL", "").strip() or None,
            epochs=number("EPOCHS", 5),
            window=number("WINDOW", 48),
            stride=number("STRIDE", 24),
            backfill_days=number("BACKFILL_DAYS", 30),
            max_windows=number("MAX_WINDOWS", 500),
            fetch=env.get("QTRAIN_RETRAIN_FETCH", "1").strip().lower() not in ("0", "false", "no", "off"),
            api_url=env.get("QTRAIN_EXCHANGE_API_URL", "").strip() or None,
        )

    def to_kwargs(self) -> dict[str, Any]:
        """JSON-able kwargs of the ``qtrain.retrain`` task (``from_kwargs`` reads them back)."""
        out = asdict(self)
        out["symbols"] = list(self.symbols)
        return out

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RetrainConfig:
        """Inverse of ``to_kwargs`` (unknown keys are refused, so a typo is not silently ignored)."""
        known = set(cls.__dataclass_fields__)
        extra = set(kwargs) - known
        if extra:
            raise BadInput(f"unknown retrain option(s): {', '.join(sorted(extra))}")
        return cls(**{**kwargs, "symbols": tuple(kwargs.get("symbols", ()))})


def parse_cron(text: str) -> crontab:
    """Celery crontab from 5 cron fields; BadInput naming the expression when it is not one."""
    fields = text.split()
    if len(fields) != 5:
        raise BadInput(f"QTRAIN_RETRAIN_CRON={text!r} has {len(fields)} fields, want {CRON_HELP}")
    try:
        minute, hour, day_of_month, month_of_year, day_of_week = fields  # cron order, not crontab()'s
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInput(
            f"QTRAIN_RETRAIN_CRON={text!r} is not a cron expression ({exc}); want {CRON_HELP}"
        ) from None


def previous_fire(cron: crontab, now: datetime) -> datetime:
    """The latest minute <= ``now`` (UTC) that ``cron`` matches: the tick a run at ``now`` belongs to."""
    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    day = now.replace(hour=0, minute=0)
    for back in range(_CRON_LOOKBACK_DAYS):
        d = day - timedelta(days=back)
        dow = d.isoweekday() % 7  # Celery: 0 = Sunday
        if d.month not in cron.month_of_year or d.day not in cron.day_of_month or dow not in cron.day_of_week:
            continue
        for hour in sorted(cron.hour, reverse=True):
            for minute in sorted(cron.minute, reverse=True):
                t = d.replace(hour=hour, minute=minute)
                if t <= now:
                    return t
    raise BadInput(f"the cron schedule {cron} matches no time in the last {_CRON_LOOKBACK_DAYS} days")


def tick_of(config: RetrainConfig, now: datetime) -> datetime:
    """The scheduled time a run at ``now`` belongs to (cron: previous match; every: floor to N s)."""
    if config.cron is not None:
        return previous_fire(parse_cron(config.cron), now)
    assert config.every_s is not None
    stamp = now.timestamp()
    return datetime.fromtimestamp(stamp - stamp % config.every_s, tz=UTC)


def beat_schedule(config: RetrainConfig | None) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` setting for ``config`` (empty without a schedule)."""
    if config is None:
        return {}
    if config.cron is not None:
        schedule: Any = parse_cron(config.cron)
        expires = CRON_EXPIRES_S
    else:
        assert config.every_s is not None
        schedule = timedelta(seconds=config.every_s)
        expires = max(30.0, config.every_s)
    return {
        ENTRY_NAME: {
            "task": RETRAIN_TASK,
            "schedule": schedule,
            "kwargs": config.to_kwargs(),
            "options": {"queue": "reduce", "routing_key": "reduce", "expires": expires},
        }
    }


def beat_schedule_from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``beat_schedule`` from the environment; a bad setting logs ONE line and disables the schedule.

    Called when ``worker.app`` is imported, i.e. at worker and beat start: the line is the first
    thing the process prints, and the worker still serves batches.
    """
    try:
        return beat_schedule(RetrainConfig.from_env(env))
    except BadInput as exc:
        log.error("qtrain: scheduled retraining is OFF: %s", exc)
        return {}


# --------------------------------------------------------------------------- the retrain step


@dataclass(frozen=True)
class PlannedWindow:
    """A window of a symbol not yet analysed: ``(symbol, start_ts, end_ts, content_hash)``."""

    symbol: str
    start_ts: int
    end_ts: int
    content_hash: str


def plan_new_windows(
    database_url: str, config: RetrainConfig, model: str
) -> tuple[list[PlannedWindow], dict[str, int]]:
    """Windows over every stored candle of each symbol, minus those analysed or in flight.

    Returns (new windows oldest first per symbol, at most ``max_windows`` newest per symbol;
    per-symbol count of windows skipped for crossing a gap).
    """
    step = timeframe_seconds(config.timeframe)
    out: list[PlannedWindow] = []
    skipped: dict[str, int] = {}
    for symbol in config.symbols:
        candles = load_candles(database_url, symbol, config.timeframe)
        plan = plan_windows(candles.ts, size=config.window, stride=config.stride, step=step)
        skipped[symbol] = plan.skipped
        found: list[PlannedWindow] = []
        for start in plan.starts.tolist():
            start_ts = int(candles.ts[start])
            lo = int(candles.ts.searchsorted(start_ts - WARMUP * step, side="left"))
            ctx = candles.slice(lo, start + config.window)
            digest = window_content_hash(ctx, symbol=symbol, timeframe=config.timeframe)
            found.append(PlannedWindow(symbol, start_ts, int(candles.ts[start + config.window - 1]), digest))
        if not found:
            continue
        keys = {cache_key(w.content_hash, model, PROMPT_VERSION): w for w in found}
        with db.transaction(database_url) as cur:
            cur.execute("SELECT cache_key FROM btc.ollama_analyses WHERE cache_key = ANY(%s)", (list(keys),))
            analysed = {keys[r[0]].content_hash for r in cur.fetchall()}
            cur.execute(
                "SELECT DISTINCT w.content_hash FROM btc.windows w JOIN btc.batches b ON b.id = w.batch_id"
                " WHERE b.state = 'running' AND w.symbol = %s AND w.status IN ('pending', 'running')"
                " AND b.model = %s AND b.prompt_version = %s AND w.content_hash = ANY(%s)",
                (symbol, model, PROMPT_VERSION, [w.content_hash for w in found]),
            )
            in_flight = {r[0] for r in cur.fetchall()}
        new = [w for w in found if w.content_hash not in analysed and w.content_hash not in in_flight]
        out.extend(new[-config.max_windows :])
    return out, skipped


def fetch_new_candles(settings: Settings, config: RetrainConfig, *, now: float) -> dict[str, Any]:
    """Fetch closed candles after the newest stored ones; a failure is logged and reported, not raised."""
    if not config.fetch:
        return {"skipped": "QTRAIN_RETRAIN_FETCH=0"}
    from producer.fetch import fetch_symbol, make_exchange

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


def retrain(
    settings: Settings,
    config: RetrainConfig,
    *,
    now: datetime | None = None,
    enqueue: Callable[[Settings, int, Sequence[tuple[str, int]], Sequence[str]], int] | None = None,
    check_ollama: Callable[[Settings, str], None] | None = None,
) -> dict[str, Any]:
    """One scheduled retrain tick; returns ``{"status": created|locked|duplicate|nothing_new|..., ...}``.

    ``enqueue`` and ``check_ollama`` default to ``producer.enqueue``'s (tests may inject stand-ins).
    """
    if enqueue is None or check_ollama is None:
        from producer import enqueue as enq

        enqueue = enqueue or enq.enqueue
        check_ollama = check_ollama or enq.check_ollama
    now = now or datetime.now(UTC)
    tick = tick_of(config, now).isoformat()
    model = "heuristic" if config.analyst == "heuristic" else (config.model or settings.ollama_model)
    url = settings.database_url
    base = {"tick": tick, "symbols": list(config.symbols)}
    key = _lock_key(config)
    with db.transaction(url) as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (key,))
        if not cur.fetchone()[0]:
            log.warning("retrain tick %s: another retrain of %s is running; skipped", tick, base["symbols"])
            return {**base, "status": "locked"}
        cur.execute(
            "SELECT id FROM btc.batches WHERE params->>'trigger' = 'beat' AND params->>'tick' = %s"
            " AND params->>'retrain_key' = %s",
            (tick, key),
        )
        row = cur.fetchone()
        if row is not None:
            log.warning("retrain tick %s: batch %s already made for it; skipped", tick, row[0])
            return {**base, "status": "duplicate", "batch_id": int(row[0])}
        t0 = time.monotonic()
        fetched = fetch_new_candles(settings, config, now=now.timestamp())
        if config.analyst == "ollama":
            try:
                check_ollama(settings, model)
            except QtrainError as exc:
                log.warning("retrain tick %s: Ollama not ready (%s); no batch, next tick retries", tick, exc)
                return {**base, "status": "ollama_unavailable", "error": str(exc), "fetched": fetched}
        new, skipped = plan_new_windows(url, config, model)
        if not new:
            log.warning("retrain tick %s: no window left to analyse for %s; no batch", tick, base["symbols"])
            return {**base, "status": "nothing_new", "fetched": fetched}
        step = timeframe_seconds(config.timeframe)
        idx: dict[str, int] = {}
        rows = []
        for w in new:
            k = idx.get(w.symbol, 0)
            idx[w.symbol] = k + 1
            rows.append((w.symbol, k, w.start_ts, w.end_ts, w.content_hash))
        spec = batches.BatchSpec(
            symbols=tuple(s for s in config.symbols if s in idx),  # only symbols with new windows
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
                "skipped": {s: n for s, n in skipped.items() if s in idx},
                "holdout": 0.2,
                "trigger": "beat",
                "tick": tick,
                "retrain_key": key,
                "fetched": fetched,
            },
        )
        batch_id = batches.create_batch(url, spec, rows)  # committed before the lock is released
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
    log.warning(
        "retrain tick %s: batch %s with %s new windows (%s) in %.1f s",
        tick, batch_id, n, ", ".join(f"{s}: {c}" for s, c in idx.items()), time.monotonic() - t0,
    )  # fmt: skip
    return {
        **base,
        "status": "created",
        "batch_id": batch_id,
        "windows": n,
        "per_symbol": idx,
        "fetched": fetched,
    }
