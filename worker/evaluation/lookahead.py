"""``qtrain check-lookahead``'s work: the stored candles and a Q-table version's features, states and
decisions recomputed on truncated histories (``model.evaluation.lookahead``), by the backtest's code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.candles import Candles
from model.evaluation import policy_set
from model.evaluation.lookahead import LookaheadReport, check_lookahead, default_cut_points
from model.features import compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from worker.errors import BadInput
from worker.store import versions
from worker.store.candles import load_candles


def lookahead_series(
    candles: Candles, learner: FastQLearning | None, space: StateSpace
) -> dict[str, np.ndarray]:
    """The series ``check-lookahead`` checks: every feature, the market state, the Q-table's
    positions and the ensemble's decisions, computed by the same code as the backtest."""
    feats = compute_features(candles)
    out = {f"feature:{k}": v for k, v in feats.items()}
    out["market_state"] = space.encode(feats)
    if learner is not None:
        pset = policy_set.policy_positions(candles, start=0, learner=learner, space=space, rules=None)
        out["qtable_position"] = pset.positions["qtable"]
        out["ensemble_action_flat"] = pset.series["ensemble_action_flat"]
        out["ensemble_action_long"] = pset.series["ensemble_action_long"]
        out["ensemble_position"] = pset.positions["ensemble"]
    return out


SERIES = lookahead_series
"""What ``check-lookahead`` computes; tests replace it (``monkeypatch``) to inject a leaky series."""


@dataclass(frozen=True)
class LookaheadRun:
    """One check: what was checked (symbol, timeframe, which version) on which candles, and the report."""

    symbol: str
    timeframe: str
    note: str
    candles: Candles
    report: LookaheadReport

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: the run, the series checked and each series that changed."""
        r, ts = self.report, self.candles.ts
        found = [
            {
                "name": i.name,
                "first_bad_index": i.first_bad_index,
                "n_bad": i.n_bad,
                "first_cut": i.first_cut,
                "first_bad_ts": int(ts[i.first_bad_index]),
            }
            for i in r.issues
        ]
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "n_candles": len(self.candles),
            "note": self.note,
            "cuts": list(r.cut_points),
            "ok": r.ok,
            "checked": list(r.names),
            "issues": found,
        }


def run(
    database_url: str,
    symbol: str,
    *,
    version: int | None,
    timeframe: str | None,
    since: int | None,
    until: int | None,
    cuts: int,
) -> LookaheadRun:
    """Check ``symbol``'s stored candles with ``version`` (default: the promoted one, else the
    latest; without any, features and market states only); BadInput under 3 candles."""
    learner: FastQLearning | None = None
    space = StateSpace.default()
    tf = timeframe or "1h"
    try:
        v = versions.load_version(database_url, symbol, version, prefer_promoted=True)
        learner, space, tf = v.learner, v.space, timeframe or v.timeframe
        note = f"Q-table {versions.which(v, version)}"
    except BadInput:
        if version is not None:
            raise
        note = "no Q-table version: features, market states only"
    candles = load_candles(database_url, symbol, tf, since=since, until=until)
    if len(candles) < 3:
        raise BadInput(
            f"fewer than 3 {tf} candles for {symbol}: run `qtrain candles import` or `qtrain candles fetch`"
        )
    points = default_cut_points(len(candles), n_cuts=cuts, min_len=2)
    report = check_lookahead(candles, lambda c: SERIES(c, learner, space), cut_points=points)
    return LookaheadRun(symbol, tf, note, candles, report)
