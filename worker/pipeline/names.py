"""The Celery task names: the one vocabulary of the wire between the senders (``qtrain train`` and
``resume`` through ``worker.runtime.publish``, the beat schedules, the reaper) and the tasks of
``worker.runtime`` that consume them. Here, in the pipeline, because the beat schedule it builds
names its task too; a name is part of the wire contract (Flower, ``celery call``, queued messages),
so it never changes."""

from __future__ import annotations

#: One window's analysis (queue ``analyze``).
ANALYZE_WINDOW = "qtrain.analyze_window"
#: One symbol's reducer: version, gate, model file, batch done (queue ``reduce``).
REDUCE_SYMBOL = "qtrain.reduce_symbol"
#: One scheduled retrain tick (queue ``reduce``; ``worker.pipeline.retrain``).
RETRAIN = "qtrain.retrain"
#: One paper-trading tick (queue ``reduce``; ``worker.trading.paper``).
PAPER_TICK = "qtrain.paper_tick"
#: A no-op health check (``celery -A worker call qtrain.ping``).
PING = "qtrain.ping"
