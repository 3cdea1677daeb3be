"""Every baseline policy's positions on a range, decided causally from the candles alone.

Pure: shared by the backtest, the walk-forward, the promotion gate and the scoreboard, so they all
compare the same policies the same way (see ``worker.evaluation.backtest`` for the list and what each means).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import BUY, SELL
from model.analyst.heuristic import heuristic_analysis
from model.analyst.rules import Rule, fired
from model.candles import Candles
from model.evaluation.policies import (
    buy_and_hold,
    compose_position_maps,
    qtable_policy,
    random_policy,
    rules_policy,
)
from model.features import compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.trading.ensemble import DEFAULT_WEIGHTS, FastTradingModel
from model.trading.signals import FLOW_CLV_PROXY, flow_score_from_candles, technical_score

DEFAULT_SEED = 42
"""Seed of the random baseline (recorded with each run)."""
POLICIES = ("qtable", "ensemble", "buy_and_hold", "heuristic_rules", "random")


def heuristic_rules(train: Candles) -> tuple[Rule, ...]:
    """The heuristic analyst's rules written from ``train`` (its features' quantiles)."""
    return heuristic_analysis(compute_features(train)).rules


def ensemble_note(flow_source: str) -> str:
    """How the ensemble was assembled in a backtest (what is missing, how weights were renormalised)."""
    used = {k: DEFAULT_WEIGHTS[k] for k in ("technical", "flow", "qlearning")}
    total = sum(used.values())
    weights = ", ".join(f"{k} {v / total:.2f}" for k, v in used.items())
    flow = "CLV proxy (no taker-buy volume stored)" if flow_source == FLOW_CLV_PROXY else "taker-buy share"
    return (
        "ensemble: no order-book history, orderbook left out; weights renormalised to"
        f" {weights}; flow from {flow}"
    )


@dataclass(frozen=True)
class PolicySet:
    """Target positions of each policy on the range, and what the reader should know about them."""

    positions: dict[str, NDArray[np.int8]]
    notes: tuple[str, ...] = ()
    series: dict[str, NDArray[Any]] = field(default_factory=dict)


def policy_positions(
    ctx: Candles,
    *,
    start: int,
    learner: FastQLearning,
    space: StateSpace,
    rules: tuple[Rule, ...] | None,
    seed: int = DEFAULT_SEED,
) -> PolicySet:
    """Every policy's positions on ``ctx[start:]``, decided from data up to each candle only."""
    feats = compute_features(ctx)
    m = space.encode(feats)
    n = len(ctx) - start
    tech = technical_score(feats)
    flow = flow_score_from_candles(ctx)
    model = FastTradingModel()
    acts = {
        pos: model.decide_many(technical=tech, flow=flow.score, qlearning=learner.q_score(m, pos)).action
        for pos in (0, 1)
    }
    positions: dict[str, NDArray[np.int8]] = {
        "qtable": qtable_policy(learner.q, m[start:]),
        "ensemble": compose_position_maps(acts[0][start:] == BUY, acts[1][start:] != SELL),
        "buy_and_hold": buy_and_hold(n),
        "random": random_policy(n, seed=seed),
    }
    notes = [ensemble_note(flow.source)]
    fired_rules = np.zeros((0, len(ctx)), dtype=bool)
    if rules:
        fired_rules = fired(list(rules), feats)
        positions["heuristic_rules"] = rules_policy(
            fired_rules[:, start:],
            np.array([r.action for r in rules]),
            np.array([r.confidence for r in rules]),
        )
    else:
        notes.append("heuristic_rules: no training candles before the range to write rules from; left out")
    series = {
        "market_state": m,
        "ensemble_action_flat": acts[0],
        "ensemble_action_long": acts[1],
        "fired_rules": fired_rules,
    }
    ordered = {k: positions[k] for k in POLICIES if k in positions}
    return PolicySet(positions=ordered, notes=tuple(notes), series=series)
