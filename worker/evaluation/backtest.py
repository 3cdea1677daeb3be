"""Evaluation glue: load a Q-table version and candles, build each policy's positions, backtest them
on the same range, record the runs in ``btc.backtests``.

Policies compared (all causal, all start flat at the first candle of the range):

* ``qtable``: the version's greedy policy (``model.policies.qtable_policy``) on its own state space.
* ``ensemble``: ``FastTradingModel`` with the technical score, the flow score (taker-buy share, or
  the CLV proxy when no taker volume is stored) and the Q-table's ``q_score``. There is no
  order-book history, so that component is left out and the weights renormalised (the notes say
  so). ``q_score`` depends on the position, so the decision is computed for flat and for long and
  the position scan picks the right one at each candle.
* ``buy_and_hold``, ``random`` (seeded), and ``heuristic_rules``: the rules ``model.heuristic``
  writes from the candles BEFORE the range (the version's training part), fired on the range.

Features need ``WARMUP`` candles of history: the range's candles are loaded with that much history
before them; decisions are taken on the range only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.backtest import BacktestResult, run_backtest
from model.candles import Candles, minute_utc, timeframe_seconds
from model.features import WARMUP
from model.metrics import json_safe
from model.policy_set import DEFAULT_SEED, heuristic_rules, policy_positions
from worker.errors import BadInput
from worker.store import db, versions
from worker.store.candles import load_candles, load_range  # load_range: also for the gate


def run_policies(
    test: Candles, positions: dict[str, NDArray[np.int8]], *, fee: float, slippage_bps: float
) -> dict[str, BacktestResult]:
    """``run_backtest`` of each policy on ``test`` with the same fee and slippage."""
    try:
        return {
            name: run_backtest(test, pos, fee=fee, slippage_bps=slippage_bps)
            for name, pos in positions.items()
        }
    except ValueError as exc:
        raise BadInput(f"backtest: {exc}") from exc


@dataclass(frozen=True)
class Comparison:
    """The policies backtested on one range of one symbol."""

    symbol: str
    version: int | None
    since: int
    until: int
    candles: Candles
    results: dict[str, BacktestResult]
    notes: tuple[str, ...]
    params: dict[str, Any]

    def metrics(self) -> dict[str, dict[str, float | None]]:
        """Policy -> its metrics, NaN/inf as None (JSON-ready)."""
        return {name: json_safe(r.metrics) for name, r in self.results.items()}


def compare(
    url: str,
    symbol: str,
    *,
    version: int | None = None,
    since: int | None = None,
    until: int | None = None,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Backtest a version and the baselines on its held-out tail, or on ``[since, until)`` if given."""
    v = versions.load_version(url, symbol, version)
    notes: list[str] = []
    if since is None and until is None:
        tail = v.holdout()
        if tail is None:
            raise BadInput(
                f"{symbol} version {v.version} has no held-out tail (trained with --holdout 0): give"
                " --since/--until"
            )
        since, until = tail
        source = "holdout"
        notes.append(f"range: the held-out tail of version {v.version} (not seen in training)")
    else:
        source = "flags"
        t0, t1 = v.metadata.get("train_since"), v.metadata.get("train_until")
        lo = since if since is not None else -(2**62)
        hi = until if until is not None else 2**62
        if t0 is not None and t1 is not None and lo < int(t1) and hi > int(t0):
            notes.append(
                f"warning: the range overlaps version {v.version}'s training data [{minute_utc(int(t0))},"
                f" {minute_utc(int(t1))}): those results are in-sample"
            )
    ctx, start = load_range(url, symbol, v.timeframe, since, until)
    test = ctx.slice(start, len(ctx))
    rules_until = min(int(v.metadata.get("train_until", test.ts[0])), int(test.ts[0]))
    train = load_candles(url, symbol, v.timeframe, since=v.metadata.get("train_since"), until=rules_until)
    rules = heuristic_rules(train) if len(train) > WARMUP else None
    pset = policy_positions(ctx, start=start, learner=v.learner, space=v.space, rules=rules, seed=seed)
    results = run_policies(test, pset.positions, fee=fee, slippage_bps=slippage_bps)
    step = timeframe_seconds(v.timeframe)
    params = {"fee": fee, "slippage_bps": slippage_bps, "seed": seed, "range": source}
    return Comparison(
        symbol=symbol,
        version=v.version,
        since=int(test.ts[0]),
        until=int(test.ts[-1]) + step,
        candles=test,
        results=results,
        notes=tuple(notes) + pset.notes,
        params=params,
    )


def insert_backtest(
    cur: Any, symbol: str, version: int | None, since: int, until: int, policy: str, kind: str,
    params: dict[str, Any], metrics: dict[str, float],
) -> int:  # fmt: skip
    """Insert one ``btc.backtests`` row through the caller's cursor; its id."""
    cur.execute(
        "INSERT INTO btc.backtests (symbol, version, since, until, policy, kind, params, metrics)"
        " VALUES (%s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s) RETURNING id",
        (symbol, version, since, until, policy, kind, json.dumps(params), json.dumps(json_safe(metrics))),
    )
    return int(cur.fetchone()[0])


def record(
    url: str, c: Comparison, *, kind: str = "manual", extra: dict[str, Any] | None = None
) -> list[int]:
    """One ``btc.backtests`` row per policy of ``c``; their ids."""
    params = {**c.params, **(extra or {})}
    with db.transaction(url) as cur:
        return [
            insert_backtest(cur, c.symbol, c.version, c.since, c.until, name, kind, params, r.metrics)
            for name, r in c.results.items()
        ]
