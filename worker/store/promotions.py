"""The promotion log (``btc.promotions``): every switch of a symbol's promoted version, and every
gate that could not run, with who, when, the previous version and why."""

from __future__ import annotations

import json
from typing import Any

from worker.store.db import Cursor


def log_promotion(
    cur: Cursor,
    symbol: str,
    version: int,
    previous: int | None,
    *,
    by: str,
    kind: str,
    details: dict[str, Any],
) -> None:
    """Append one entry (``kind``: gate, manual, rollback or gate_failed) in the caller's transaction."""
    cur.execute(
        "INSERT INTO btc.promotions (symbol, version, previous_version, by, kind, details)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (symbol, version, previous, by, kind, json.dumps(details)),
    )


def switch_history(cur: Cursor, symbol: str) -> list[tuple[int, str]]:
    """``(version, kind)`` of the symbol's switches (gate, manual, rollback), oldest first: what a
    rollback replays to find the version promoted before the current one."""
    cur.execute(
        "SELECT version, kind FROM btc.promotions WHERE symbol = %s"
        " AND kind IN ('gate', 'manual', 'rollback') ORDER BY id",
        (symbol,),
    )
    return [(int(v), str(k)) for v, k in cur.fetchall()]
