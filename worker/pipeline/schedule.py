"""Scheduled retraining: its configuration, the cron arithmetic and the Celery beat entry.

Environment (read once by ``Settings``, in the beat process; the entry's kwargs carry it to the
worker that runs it):

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

What one tick does is ``worker.pipeline.retrain``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab

from model.candles import timeframe_seconds
from worker.errors import BadInput, QtrainError
from worker.pipeline import names
from worker.settings import ANALYST_NAMES, REDUCE_QUEUE, stored_analyst

log = logging.getLogger("qtrain.schedule")

ENTRY_NAME = "qtrain-retrain"
ANALYSTS = ANALYST_NAMES
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
        object.__setattr__(self, "analyst", stored_analyst(self.analyst))  # llm -> ollama, as stored
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
            "task": names.RETRAIN,
            "schedule": schedule,
            "kwargs": config.to_kwargs(),
            "options": {"queue": REDUCE_QUEUE, "routing_key": REDUCE_QUEUE, "expires": expires},
        }
    }


def beat_schedule_from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``beat_schedule`` from the environment; a bad setting logs ONE line and disables the schedule.

    Called when ``worker.runtime.app`` is imported, i.e. at worker and beat start: the line is the first
    thing the process prints, and the worker still serves batches.
    """
    try:
        return beat_schedule(RetrainConfig.from_env(env))
    except BadInput as exc:
        log.error("qtrain: scheduled retraining is OFF: %s", exc)
        return {}
