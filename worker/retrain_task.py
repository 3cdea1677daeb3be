"""The ``qtrain.retrain`` task that Celery beat sends (see ``worker.retrain`` for what one tick does)."""

from __future__ import annotations

from typing import Any

from worker import retrain as retrain_tick
from worker import schedule
from worker.app import SETTINGS, app

RETRAIN_SOFT_LIMIT_S = 1800.0
RETRAIN_HARD_LIMIT_S = RETRAIN_SOFT_LIMIT_S + 120


@app.task(
    name=schedule.RETRAIN_TASK,
    soft_time_limit=RETRAIN_SOFT_LIMIT_S,
    time_limit=RETRAIN_HARD_LIMIT_S,
)
def retrain(**config: Any) -> dict[str, Any]:
    """Fetch new candles, then enqueue one batch for the windows not yet analysed (once per tick)."""
    return retrain_tick.retrain(SETTINGS, schedule.RetrainConfig.from_kwargs(config))
