"""What runs and what is stored: the Celery app and its tasks (``runtime``), a batch's path from
dispatch to promotion (``pipeline``), PostgreSQL (``store``), the LLM servers and exchanges
(``clients``), backtests and the scoreboard on stored data (``evaluation``), the agent on live data
and paper trading (``trading``), candles coming in from files and exchanges (``ingest``), the HTML
reports (``pages``), Celery workers seen from outside (``cluster``), and servers for running without
services (``embedded``); what they share (settings, errors, symbols, retry, redaction) sits at the
top. Each room's ``__init__`` says
what it holds.

``celery -A worker worker`` finds the app through the lazy ``app`` attribute below, so plain
imports of ``worker.store.db`` or ``worker.settings`` do not pay for importing Celery. A bad setting
stops ``celery -A worker ...`` with one line and exit code 2 (Celery would print a traceback).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.errors import QtrainError

        try:
            from worker.runtime.app import app
        except QtrainError as exc:  # a bad setting (CELERY_BROKER_URL=redis2://...): one line, exit 2
            import sys

            from worker.redact import redact_text

            print(f"qtrain worker: error: {redact_text(str(exc))}", file=sys.stderr)
            raise SystemExit(2) from None
        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
