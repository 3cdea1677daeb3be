"""Q-learning inputs and training from candles and analysed windows: shared by the reducer and the
walk-forward backtest, so both train the same way.

Market states come from the features of ``train`` (``StateSpace.encode``); the return of step t is
``log(close[t+1] / close[t])``; a step whose next candle is not contiguous (a gap, or the last
candle) gets state -1 (no reward across a gap). Analysed windows are mapped to the candles they
cover by timestamp and turned into the reward bonus of ``model.shaping``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.candles import Candles, timeframe_seconds
from model.features import compute_features
from model.qlearning import FastQLearning, TrainStats
from model.rules import Rule
from model.shaping import DEFAULT_KAPPA, WindowAnalysis, shaping_matrix
from model.states import StateSpace
from model.windows import next_is_contiguous


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
    """What ``FastQLearning.train`` consumes, and how many analysed windows touched the candles."""

    states: NDArray[np.int64]
    returns: NDArray[np.float64]
    shaping: NDArray[np.float64]
    n_windows: int


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
    epochs: int,
    seed: int,
    kappa: float = DEFAULT_KAPPA,
    alpha: float = 0.1,
    gamma: float = 0.95,
    epsilon_start: float = 1.0,
    epsilon_end: float = 0.05,
    fee: float = 0.001,
    initial: FastQLearning | None = None,
) -> tuple[FastQLearning, TrainStats, TrainingData]:
    """A Q-table trained on ``train`` shaped by ``analysed`` (the reducer's recipe): from zeros, or
    continuing from ``initial``'s values and visit counts (a warm start; ``initial`` is not changed)."""
    data = training_data(train, analysed, space=space, kappa=kappa)
    learner = FastQLearning(
        space.n_states,
        seed=seed,
        alpha=alpha,
        gamma=gamma,
        epsilon_start=epsilon_start,
        epsilon_end=epsilon_end,
        fee=fee,
    )
    if initial is not None:
        learner.q[...] = initial.q
        learner.visits[...] = initial.visits
    stats = learner.train(data.states, data.returns, epochs=epochs, shaping=data.shaping)
    return learner, stats, data
