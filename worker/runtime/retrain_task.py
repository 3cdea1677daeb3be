"""The ``qtrain.retrain`` task that Celery beat sends (``worker.pipeline.retrain`` says what a tick does)."""

from __future__ import annotations

from typing import Any

from worker.pipeline import names, schedule
from worker.pipeline import retrain as retrain_tick
from worker.runtime.app import SETTINGS, app
from worker.runtime.publish import enqueue

RETRAIN_SOFT_LIMIT_S = 1800.0
RETRAIN_HARD_LIMIT_S = RETRAIN_SOFT_LIMIT_S + 120


@app.task(
    name=names.RETRAIN,
    soft_time_limit=RETRAIN_SOFT_LIMIT_S,
    time_limit=RETRAIN_HARD_LIMIT_S,
)
def retrain(**config: Any) -> dict[str, Any]:
    """Fetch new candles, then enqueue one batch for the windows not yet analysed (once per tick)."""
    return retrain_tick.retrain(SETTINGS, schedule.RetrainConfig.from_kwargs(config), enqueue=enqueue)
