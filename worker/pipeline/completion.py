"""Finishing a symbol of a batch once its windows are final: reduce, gate, export, batch done.

The order is the contract ``qtrain train --wait`` relies on: the batch is marked ``done`` only
after each symbol's version is written (``agent_state`` and ``models/versions/``), its promotion
gate has run (or its failure is recorded) and ``models/fast_model_{SYMBOL}.npz`` is in sync. Each
step is idempotent, so a redelivered or retried reducer task finishes whatever a crash left. A
symbol with too many failed windows (``reduce.TooManyFailed``) gets no version: the batch is marked
``failed`` with the reason, which ``train --wait`` and ``status`` show.
"""

from __future__ import annotations

from typing import Any

from worker.pipeline import promotion, reduce
from worker.settings import Settings
from worker.store import batches, versions


def complete_symbol(settings: Settings, batch_id: int, symbol: str) -> dict[str, Any]:
    """Reduce ``symbol`` of ``batch_id``, gate the version, sync the model file, maybe mark the batch
    done; a tiny JSON-able summary (``waiting`` while windows are unfinished)."""
    try:
        made = reduce.make_version(settings, batch_id, symbol)
    except reduce.TooManyFailed as exc:
        batches.fail_batch(settings.database_url, batch_id, str(exc))
        return {"symbol": symbol, "version": None, "created": False, "failed": str(exc)}
    if made.busy:  # a duplicate (two last windows finishing at once): the running reducer does it
        return {"symbol": symbol, "version": None, "created": False, "busy": True}
    if made.version is None:
        return {"symbol": symbol, "version": None, "created": False, "waiting": True}
    out: dict[str, Any] = {"symbol": symbol, "version": made.version, "created": made.created}
    if made.sha256 is not None:
        out["sha256"] = made.sha256
    if not made.gated:
        out["promotion"] = promotion.gate(settings, symbol, made.version)  # syncs the model file itself
    else:  # a redelivery: the gate ran, but a crash may have come before the file was written
        versions.sync_model_file(settings, symbol)
    out["batch_done"] = batches.mark_batch_done_if_complete(settings.database_url, batch_id)
    return out
