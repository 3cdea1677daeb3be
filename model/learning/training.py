"""Q-learning inputs and THE training entry point, shared by the reducer, the walk-forward and the
scoreboard (``model.evaluation.scoreboard``), so all of them train the same way.

Market states come from the features of ``train`` (``StateSpace.encode``); the return of step t is
``log(close[t+1] / close[t])``; a step whose next candle is not contiguous (a gap, or the last
candle) gets state -1 (no reward across a gap). Analysed windows are mapped to the candles they
cover by timestamp and turned into the reward bonus of ``model.learning.shaping``.

Recipes: ``RECIPES`` maps a recipe name to a frozen dataclass holding every training parameter
with its default; it is the one home for training defaults. ``train_qtable(..., recipe=NAME,
**overrides)`` trains with ``dataclasses.replace(RECIPES[NAME], **overrides)``; an override the
recipe does not have is a ``ValueError`` naming it. ``recipe_metadata`` gives what to store in the
table's metadata. ``"qlearning"`` is the original epsilon-greedy learner (``FastQLearning.train``):
same inputs, same table, byte for byte.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from model.analyst.rules import Rule
from model.candles import Candles, timeframe_seconds
from model.features import compute_features
from model.learning.pooled import PooledRecipe, pooled_value_iteration
from model.learning.qlearning import FastQLearning, TrainStats
from model.learning.shaping import DEFAULT_KAPPA, WindowAnalysis, shaping_matrix
from model.learning.states import StateSpace
from model.learning.sweep import SweepStats, value_iteration
from model.market.windows import next_is_contiguous


@dataclass(frozen=True)
class AnalysedWindow:
    """One analysis of a window ``[start_ts, end_ts]`` (inclusive, epoch s): its call and rules."""

    start_ts: int
    end_ts: int
    action: int
    confidence: float
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class TrainingData:
    """What a recipe consumes, and how many analysed windows touched the candles."""

    states: NDArray[np.int64]
    returns: NDArray[np.float64]
    shaping: NDArray[np.float64]
    n_windows: int


@dataclass(frozen=True)
class QLearningRecipe:
    """The original learner: epsilon-greedy tabular Q-learning along the one training trajectory
    (``FastQLearning.train``), ``epochs`` passes, exploration falling linearly per epoch; the
    result depends on ``seed``. ``fee`` is the turnover cost in the reward."""

    name: ClassVar[str] = "qlearning"
    alpha: float = 0.1
    gamma: float = 0.95
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    fee: float = 0.001
    kappa: float = DEFAULT_KAPPA
    epochs: int = 5


@dataclass(frozen=True)
class SweepRecipe:
    """Counterfactual sweeps (``model.learning.sweep.value_iteration``): the Q-table of the empirical
    market solved by value iteration over every (candle, position, action) triple, each state's
    value shrunk toward a no-edge prior worth ``prior_strength`` candles, trading penalised by
    ``turnover_cost`` (above the real fee on purpose). Deterministic: ``seed`` and ``epochs`` are
    not used. See ``model.learning.sweep`` for the model and why each part is there.

    Defaults were chosen on the OLDER half of the BTC/ETH walk-forward folds only (2018-04 ..
    2019-09, 12 folds), by a rule fixed before looking at the rest: among settings that trade
    (>= 10 trades a fold) and shrink (k > 0), the most folds above the random-policy median.
    ``gamma`` 0.9 is a ~10-hour horizon; ``kappa`` 0.1 keeps the analysts' shaping at a fifth of
    the old weight (0.5 added mostly a long bias and churn). See bench/README.md for all folds."""

    name: ClassVar[str] = "sweep"
    gamma: float = 0.9
    turnover_cost: float = 0.003
    prior_strength: float = 5.0
    kappa: float = 0.1


Recipe = QLearningRecipe | SweepRecipe | PooledRecipe
"""Any recipe dataclass of ``RECIPES``."""

RECIPES: dict[str, Recipe] = {r.name: r for r in (QLearningRecipe(), SweepRecipe(), PooledRecipe())}
"""Recipe name -> its parameters with their defaults (the one home for training defaults)."""

DEFAULT_RECIPE = "pooled"
"""Name of the recipe ``qtrain train``, the reducer, the retrain schedule, the demo, the walk-forward
and ``qtrain evaluate`` use by default (issue 28: ``pooled`` held out of sample on pairs nobody
tuned on; ``sweep`` and ``qlearning`` stay, by name)."""


def get_recipe(recipe: str | Recipe, **overrides: Any) -> Recipe:
    """The recipe named ``recipe`` (or given) with ``overrides`` applied; ValueError names a bad one."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(sorted(RECIPES))}")
        base = RECIPES[recipe]
    elif isinstance(recipe, tuple(type(r) for r in RECIPES.values())):
        base = recipe
    else:
        raise ValueError(f"recipe must be a recipe name or one of RECIPES' dataclasses, got {recipe!r}")
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"recipe {base.name!r} has no parameter {', '.join(unknown)}: its parameters are "
            f"{', '.join(sorted(fields))}"
        )
    return dataclasses.replace(base, **overrides)


def recipe_metadata(recipe: str | Recipe, **overrides: Any) -> dict[str, Any]:
    """``{"name": ..., "params": {...}}`` of the recipe (with overrides), to store in the metadata."""
    r = get_recipe(recipe, **overrides)
    return {"name": r.name, "params": dataclasses.asdict(r)}


def training_data(
    train: Candles,
    analysed: Sequence[AnalysedWindow],
    *,
    space: StateSpace,
    kappa: float = DEFAULT_KAPPA,
) -> TrainingData:
    """States, next-candle log returns and the shaping matrix of ``train`` (see module doc)."""
    n = len(train)
    if n < 2:
        raise ValueError(f"train has {n} candles: need at least 2")
    step = timeframe_seconds(train.timeframe)
    feats = compute_features(train)
    states = space.encode(feats).astype(np.int64)
    returns = np.zeros(n)
    returns[:-1] = np.log(train.close[1:] / train.close[:-1])
    states[~next_is_contiguous(train.ts, step=step)] = -1  # no reward across a gap or at the end
    windows = []
    for a in analysed:
        lo = int(np.searchsorted(train.ts, a.start_ts, side="left"))
        hi = int(np.searchsorted(train.ts, a.end_ts, side="right"))
        if hi > lo:
            windows.append(WindowAnalysis(lo, hi, a.action, a.confidence, a.rules))
    shaping = shaping_matrix(feats, feats["volatility"] / 100.0, windows, kappa=kappa)
    return TrainingData(states=states, returns=returns, shaping=shaping, n_windows=len(windows))


def train_qtable(
    train: Candles,
    analysed: Sequence[AnalysedWindow],
    *,
    space: StateSpace,
    recipe: str | Recipe = DEFAULT_RECIPE,
    epochs: int | None = None,
    seed: int = 0,
    initial: FastQLearning | None = None,
    **overrides: Any,
) -> tuple[FastQLearning, TrainStats | SweepStats, TrainingData]:
    """A Q-table trained on ``train`` shaped by ``analysed`` with ``recipe`` plus ``overrides`` of
    its parameters (a parameter the recipe lacks is a ValueError). ``epochs`` (None: the recipe's)
    and ``initial`` (a warm start from its values and visit counts; not changed) apply to the
    iterative ``qlearning`` recipe; ``sweep`` solves the batch's data to convergence, so it needs
    neither and ignores both (its stats say ``warm_start_used: False``)."""
    r = get_recipe(recipe, **overrides)
    if epochs is not None and isinstance(r, QLearningRecipe):
        r = dataclasses.replace(r, epochs=epochs)
    if isinstance(r, PooledRecipe):  # one symbol: its own state means are the pool (see train_pooled)
        table, pooled_stats, data = train_pooled(
            {train.symbol: train}, {train.symbol: analysed}, space=space, recipe=r
        )[train.symbol]
        return table, pooled_stats, data
    data = training_data(train, analysed, space=space, kappa=r.kappa)
    if isinstance(r, SweepRecipe):
        q, visits, sweep_stats = value_iteration(
            data.states,
            data.returns,
            data.shaping,
            n_market=space.n_market_states,
            gamma=r.gamma,
            turnover_cost=r.turnover_cost,
            prior_strength=r.prior_strength,
        )
        # seed 0 whatever ``seed``: the sweep uses none, so the table's bytes cannot depend on it
        table = FastQLearning(
            space.n_states, alpha=1.0, gamma=r.gamma, epsilon_start=0.0, epsilon_end=0.0, fee=r.turnover_cost
        )
        table.q, table.visits = q, visits
        return table, sweep_stats, data
    learner = FastQLearning(
        space.n_states,
        seed=seed,
        alpha=r.alpha,
        gamma=r.gamma,
        epsilon_start=r.epsilon_start,
        epsilon_end=r.epsilon_end,
        fee=r.fee,
    )
    if initial is not None:
        learner.q[...] = initial.q
        learner.visits[...] = initial.visits
    stats = learner.train(data.states, data.returns, epochs=r.epochs, shaping=data.shaping)
    return learner, stats, data


def train_pooled(
    trains: Mapping[str, Candles],
    analysed: Mapping[str, Sequence[AnalysedWindow]],
    *,
    space: StateSpace,
    recipe: str | Recipe = "pooled",
    **overrides: Any,
) -> dict[str, tuple[FastQLearning, SweepStats, TrainingData]]:
    """Per symbol of ``trains`` (its training candles; ``analysed``: its analyses, missing = none):
    the table of a ``pooled`` recipe trained on ALL of ``trains`` at once (``model.learning.pooled``), its
    stats and training data. The caller cuts every symbol's candles before the test range: nothing
    else is read, so no candle beyond them reaches any table. Symbols are pooled in sorted order,
    so the result does not depend on the mapping's order."""
    r = get_recipe(recipe, **overrides)
    if not isinstance(r, PooledRecipe):
        raise ValueError(f"train_pooled needs a pooled recipe, got {r.name!r}: use train_qtable")
    if not trains:
        raise ValueError("trains is empty: give at least one symbol's training candles")
    names = sorted(trains)
    data = {s: training_data(trains[s], analysed.get(s, ()), space=space, kappa=r.kappa) for s in names}
    solved = pooled_value_iteration(
        [data[s].states for s in names],
        [data[s].returns for s in names],
        [data[s].shaping for s in names],
        n_market=space.n_market_states,
        gamma=r.gamma,
        turnover_cost=r.turnover_cost,
        cost_per_sigma=r.cost_per_sigma,
        prior_strength=r.prior_strength,
        symbol_strength=math.inf if r.symbol_strength is None else r.symbol_strength,
    )
    out = {}
    for s, (q, visits, stats) in zip(names, solved, strict=True):
        table = FastQLearning(
            space.n_states, alpha=1.0, gamma=r.gamma, epsilon_start=0.0, epsilon_end=0.0, fee=r.turnover_cost
        )
        table.q, table.visits = q, visits
        out[s] = (table, stats, data[s])
    return out
