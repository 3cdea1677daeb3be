"""Celery app, tasks, Ollama client and PostgreSQL storage.

``celery -A worker worker`` finds the app through the lazy ``app`` attribute below, so plain
imports of ``worker.store.db`` or ``worker.settings`` do not pay for importing Celery.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.runtime.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
