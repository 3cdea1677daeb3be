"""``btc.backtests``: the runs recorded (by the promotion gate, ``qtrain backtest``, the scoreboard)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model.evaluation.metrics import json_safe
from worker.store import db
from worker.store.db import Cursor


def insert_backtest(
    cur: Cursor,
    symbol: str,
    version: int | None,
    since: int,
    until: int,
    policy: str,
    kind: str,
    params: dict[str, Any],
    metrics: dict[str, float],
) -> int:
    """Insert one ``btc.backtests`` row through the caller's cursor; its id."""
    cur.execute(
        "INSERT INTO btc.backtests (symbol, version, since, until, policy, kind, params, metrics)"
        " VALUES (%s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s) RETURNING id",
        (symbol, version, since, until, policy, kind, json.dumps(params), json.dumps(json_safe(metrics))),
    )
    return int(cur.fetchone()[0])


@dataclass(frozen=True)
class HoldoutRun:
    """One policy's metrics on a version's held-out tail, as the gate recorded them."""

    symbol: str
    version: int
    policy: str
    metrics: dict[str, Any]


def holdout_runs(url: str, symbol: str | None = None) -> list[HoldoutRun]:
    """Every gate run on a held-out tail (kind ``holdout``) of ``symbol`` (or all), oldest first."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, version, policy, metrics FROM btc.backtests WHERE kind = 'holdout'"
            " AND (%s::text IS NULL OR symbol = %s) ORDER BY id",
            (symbol, symbol),
        )
        rows = cur.fetchall()
    return [HoldoutRun(r[0], int(r[1]), r[2], dict(r[3])) for r in rows]


def latest_holdout_runs(
    url: str, symbol: str | None = None
) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """(symbol, version) -> policy -> metrics of each policy's latest gate run on each version."""
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for run in holdout_runs(url, symbol):
        out.setdefault((run.symbol, run.version), {})[run.policy] = run.metrics
    return out
