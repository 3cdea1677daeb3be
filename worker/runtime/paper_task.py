"""The ``qtrain.paper_tick`` task and its Celery beat entry (``worker.trading.paper`` says what a tick does).

The beat sends one tick every ``QTRAIN_PAPER_EVERY_S`` seconds (default 60; 0: no entry). Each tick
catches up every active account, candle by candle, so a beat that was down, a worker that was
killed or a message that expired only delays decisions; none is skipped and none is made twice
(the decision row is unique per account, symbol and candle). Flower shows each tick and its result.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from worker.errors import BadInput
from worker.pipeline import names
from worker.runtime.app import SETTINGS, app
from worker.settings import REDUCE_QUEUE
from worker.trading import paper
from worker.trading.agent import AgentSettings

log = logging.getLogger("qtrain.paper")

ENTRY_NAME = "qtrain-paper"
PAPER_SOFT_LIMIT_S = 600.0
PAPER_HARD_LIMIT_S = PAPER_SOFT_LIMIT_S + 60


def paper_beat_schedule(env: dict[str, str] | Any) -> dict[str, dict[str, Any]]:
    """The beat entry of the paper ticks (empty when ``QTRAIN_PAPER_EVERY_S`` is 0 or invalid)."""
    try:
        every = AgentSettings.from_env(env).paper_every_s
    except BadInput as exc:
        log.error("qtrain: paper trading ticks are OFF: %s", exc)
        return {}
    if every <= 0:
        return {}
    return {
        ENTRY_NAME: {
            "task": names.PAPER_TICK,
            "schedule": timedelta(seconds=every),
            "options": {"queue": REDUCE_QUEUE, "routing_key": REDUCE_QUEUE, "expires": max(30.0, every)},
        }
    }


app.conf.beat_schedule.update(paper_beat_schedule(SETTINGS.agent_env))


@app.task(name=names.PAPER_TICK, soft_time_limit=PAPER_SOFT_LIMIT_S, time_limit=PAPER_HARD_LIMIT_S)
def paper_tick(name: str | None = None) -> dict[str, Any]:
    """Catch up every active paper account (or the one named) to the newest closed candle."""
    result = paper.tick(SETTINGS, name=name)
    return {
        acct: [{"symbol": p.symbol, "decided": len(p.decided), "error": p.error} for p in per]
        for acct, per in result.items()
    }
