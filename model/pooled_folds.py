"""Pooled recipes in the walk-forward: the tables of one fold date trained across symbols.

A pooled recipe (``model.pooled``) trains every symbol's table from all symbols' data at once, so
in the scoreboard it runs once per fold DATE, not once per symbol's fold. The pool of a date is
the training part of each symbol's fold starting that date (the folds of ``model.folds`` fall on
the same calendar-quarter dates for every symbol), with the analyses whose window ends before the
test range. Nothing of any symbol's test range, or later, is read: truncating every series at the
test start leaves the tables unchanged (``tests/test_pooled.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model.candles import Candles
from model.folds import Fold
from model.qlearning import FastQLearning
from model.states import StateSpace
from model.training import AnalysedWindow, Recipe, get_recipe, train_pooled

PoolPart = tuple[Candles, Fold, Sequence[AnalysedWindow]]
"""One symbol's part of a fold date: its candles, its fold of that date, its analyses (any)."""


def is_pooled(recipe: str | Recipe) -> bool:
    """Whether ``recipe`` trains across symbols (then train it with ``pooled_fold_tables``)."""
    return get_recipe(recipe).name == "pooled"


def pooled_fold_tables(
    parts: Mapping[str, PoolPart], *, recipe: str | Recipe = "pooled", space: StateSpace | None = None
) -> dict[str, FastQLearning]:
    """Symbol -> its table of ``recipe`` trained across all ``parts`` (symbol -> part), each on its
    fold's training candles and the analyses ending before the test range. The folds must share
    one test start (ValueError otherwise: pooling across dates would mix one fold's test range
    into another's training)."""
    if not parts:
        raise ValueError("parts is empty: give at least one symbol's candles, fold and analyses")
    starts = {fold.test_since for _, fold, _ in parts.values()}
    if len(starts) != 1:
        raise ValueError(f"the folds of a pool must share one test start, got {sorted(starts)}")
    space = StateSpace.default() if space is None else space
    trains = {s: c.slice(f.train_lo, f.train_hi) for s, (c, f, _) in parts.items()}
    past = {s: [w for w in a if w.end_ts < f.test_since] for s, (_, f, a) in parts.items()}
    trained = train_pooled(trains, past, space=space, recipe=recipe)
    return {s: trained[s][0] for s in parts}
