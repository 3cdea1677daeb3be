"""Evaluation glue: load a Q-table version and candles, build each policy's positions, backtest them
on the same range, record the runs in ``btc.backtests``.

Policies compared (all causal, all start flat at the first candle of the range):

* ``qtable``: the version's greedy policy (``model.evaluation.policies.qtable_policy``) on its own
  state space.
* ``ensemble``: ``FastTradingModel`` with the technical score, the flow score (taker-buy share, or
  the CLV proxy when no taker volume is stored) and the Q-table's ``q_score``. There is no
  order-book history, so that component is left out and the weights renormalised (the notes say
  so). ``q_score`` depends on the position, so the decision is computed for flat and for long and
  the position scan picks the right one at each candle.
* ``buy_and_hold``, ``random`` (the median of the promotion gate's 50 seeded random policies), and
  ``heuristic_rules``: the rules ``model.analyst.heuristic`` writes from the candles BEFORE the range (the
  version's training part), fired on the range.

Features need ``WARMUP`` candles of history: the range's candles are loaded with that much history
before them; decisions are taken on the range only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.candles import Candles, minute_utc, timeframe_seconds
from model.evaluation.backtest import BacktestResult, run_backtest
from model.evaluation.baselines import DEFAULT_RANDOM_SEEDS, random_policy_metrics
from model.evaluation.metrics import (
    ANNUALISED,
    MIN_DAYS_TO_ANNUALISE,
    json_safe,
    too_short_to_annualise,
    without_annualised,
)
from model.evaluation.policy_set import DEFAULT_SEED, heuristic_rules, policy_positions
from model.features import WARMUP
from worker.errors import BadInput
from worker.store import db, versions
from worker.store.backtests import insert_backtest  # also evaluate.insert_backtest for its callers
from worker.store.candles import load_candles, load_range
from worker.symbols import is_synthetic  # load_range: also for the gate


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
    #: The median metrics of the gate's random policies on the range (``random`` in ``metrics``).
    random_median: dict[str, float] | None = None
    #: Days the range spans (annualised metrics are left out under ``MIN_DAYS_TO_ANNUALISE``).
    days: float | None = None

    def raw_metrics(self) -> dict[str, dict[str, float]]:
        """Policy -> its metrics as computed; ``random`` is the median of the gate's random policies."""
        out = {name: dict(r.metrics) for name, r in self.results.items()}
        if self.random_median is not None and "random" in out:
            out["random"] = dict(self.random_median)
        return out

    def metrics(self) -> dict[str, dict[str, float | None]]:
        """Policy -> its metrics, NaN/inf as None (JSON-ready); annualised ones None on a range
        too short for them."""
        days = math.inf if self.days is None else self.days
        return {name: json_safe(without_annualised(m, days)) for name, m in self.raw_metrics().items()}


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
    """Backtest a version (default: the promoted one, else the latest, as ``models export`` and the
    model file) and the baselines on its held-out tail, or on ``[since, until)`` if given. The
    ``random`` column is the median of ``DEFAULT_RANDOM_SEEDS`` random policies, the promotion
    gate's bar (``model.evaluation.baselines``); its equity curve in a report is the one of ``seed``."""
    v = versions.load_version(url, symbol, version, prefer_promoted=True)
    notes: list[str] = [f"version: {versions.which(v, version)}"]
    if is_synthetic(symbol):
        notes.insert(0, f"synthetic data: {symbol} is qtrain demo's seeded random walk, no market's prices")
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
    random_median = random_policy_metrics(
        test, seeds=DEFAULT_RANDOM_SEEDS, fee=fee, slippage_bps=slippage_bps
    )
    notes.append(
        f"random: the median of {DEFAULT_RANDOM_SEEDS} seeded random policies (the promotion gate's bar);"
        f" a report's random curve is seed {seed}'s"
    )
    step = timeframe_seconds(v.timeframe)
    days = (int(test.ts[-1]) + step - int(test.ts[0])) / 86_400
    if too_short_to_annualise(days):
        notes.append(
            f"{days:.1f} days: annualised figures ({', '.join(ANNUALISED)}) are not shown under"
            f" {MIN_DAYS_TO_ANNUALISE:g} days (they would extrapolate a few days' luck to a year)"
        )
    params = {
        "fee": fee,
        "slippage_bps": slippage_bps,
        "seed": seed,
        "range": source,
        "random_seeds": DEFAULT_RANDOM_SEEDS,
        "promoted": v.promoted,
    }
    return Comparison(
        symbol=symbol,
        version=v.version,
        since=int(test.ts[0]),
        until=int(test.ts[-1]) + step,
        candles=test,
        results=results,
        notes=tuple(notes) + pset.notes,
        params=params,
        random_median=random_median,
        days=days,
    )


def record(
    url: str, c: Comparison, *, kind: str = "manual", extra: dict[str, Any] | None = None
) -> list[int]:
    """One ``btc.backtests`` row per policy of ``c``; their ids."""
    params = {**c.params, **(extra or {})}
    with db.transaction(url) as cur:
        return [
            insert_backtest(cur, c.symbol, c.version, c.since, c.until, name, kind, params, m)
            for name, m in c.raw_metrics().items()
        ]
