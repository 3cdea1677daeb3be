"""Named, documented defaults and the one place the environment is read (at the edge).

Every knob has a conventional environment variable (see DESIGN.md). ``Settings.from_env()`` is
called by the CLI and by the Celery app at start-up; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/qtrain"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
DEFAULT_OLLAMA_MODEL = "qwen2.5-coder:7b"
DEFAULT_MODELS_DIR = "./models"
#: Batch defaults, shared by ``qtrain train``, the beat's retrain and the walk-forward: candles
#: per analysed window, candles between window starts, the tail share of a batch's range kept
#: out of training for the promotion backtest, and Q-learning passes for recipes that use epochs.
DEFAULT_TIMEFRAME = "1h"
DEFAULT_WINDOW = 48
DEFAULT_STRIDE = 24
DEFAULT_HOLDOUT = 0.2
DEFAULT_EPOCHS = 5
#: Seconds one Ollama call may take before it counts as a timeout (a 7B model on a homelab GPU
#: answers a window in 5-60 s; 300 s leaves room for a cold model load).
DEFAULT_OLLAMA_TIMEOUT_S = 300.0
#: Attempts per window (first try included) before it is recorded as failed.
DEFAULT_MAX_ATTEMPTS = 4
#: First delay (s) before a window's next attempt; doubles per attempt, with jitter, capped at 300 s.
DEFAULT_RETRY_BASE_S = 5.0


RETRAIN_PREFIXES = ("QTRAIN_RETRAIN_", "QTRAIN_EXCHANGE_API_URL")
"""Variables of the beat's scheduled retraining (``worker.schedule``)."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one qtrain process (CLI or worker)."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_RESULT_BACKEND
    ollama_hosts: tuple[str, ...] = (DEFAULT_OLLAMA_HOST,)
    ollama_model: str = DEFAULT_OLLAMA_MODEL
    ollama_timeout_s: float = DEFAULT_OLLAMA_TIMEOUT_S
    models_dir: str = DEFAULT_MODELS_DIR
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    promotion_metric: str = "sharpe"
    promotion_margin: str = "0"
    #: The ``QTRAIN_RETRAIN_*`` and ``QTRAIN_EXCHANGE_API_URL`` variables as given (parsed and
    #: checked by ``worker.schedule.RetrainConfig.from_env``).
    retrain_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        hosts = tuple(
            h.strip().rstrip("/") for h in e.get("OLLAMA_HOST", DEFAULT_OLLAMA_HOST).split(",") if h.strip()
        )
        hosts = tuple(h if "://" in h else f"http://{h}" for h in hosts) or (DEFAULT_OLLAMA_HOST,)
        return cls(
            database_url=e.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            broker_url=e.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL),
            result_backend=e.get("CELERY_RESULT_BACKEND", DEFAULT_RESULT_BACKEND),
            ollama_hosts=hosts,
            ollama_model=e.get("OLLAMA_MODEL", DEFAULT_OLLAMA_MODEL),
            ollama_timeout_s=float(e.get("OLLAMA_TIMEOUT", DEFAULT_OLLAMA_TIMEOUT_S)),
            models_dir=e.get("QTRAIN_MODELS_DIR", DEFAULT_MODELS_DIR),
            max_attempts=int(e.get("QTRAIN_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)),
            retry_base_s=float(e.get("QTRAIN_RETRY_BASE_S", DEFAULT_RETRY_BASE_S)),
            promotion_metric=e.get("QTRAIN_PROMOTION_METRIC", "sharpe"),
            promotion_margin=e.get("QTRAIN_PROMOTION_MARGIN", "0"),
            retrain_env={k: v for k, v in e.items() if k.startswith(RETRAIN_PREFIXES)},
        )
