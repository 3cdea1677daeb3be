"""Pooled recipes in the walk-forward: the tables of one fold date trained across symbols.

A pooled recipe (``model.pooled``) trains every symbol's table from all symbols' data at once, so
in the scoreboard it runs once per fold DATE, not once per symbol's fold. The pool of a date is
the training part of each symbol's fold starting that date (the folds of ``model.folds`` fall on
the same calendar-quarter dates for every symbol), with the analyses whose window ends before the
test range. Nothing of any symbol's test range, or later, is read: truncating every series at the
test start leaves the tables unchanged (``tests/test_pooled.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from model.candles import Candles
from model.controls import fold_control
from model.folds import Fold
from model.qlearning import FastQLearning
from model.states import StateSpace
from model.training import AnalysedWindow, Recipe, get_recipe, train_pooled

PoolPart = tuple[Candles, Fold, Sequence[AnalysedWindow]]
Twins = tuple[FastQLearning, FastQLearning]
"""A recipe's table of one fold and its unshaped twin (the same recipe trained without analyses)."""
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


def pooled_tables_by_date(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]],
    analyses: Callable[[str, Fold], Sequence[AnalysedWindow]],
    *,
    recipes: Sequence[str],
    space: StateSpace | None = None,
) -> dict[int, dict[str, dict[str, Twins]]]:
    """Test start -> symbol -> pooled recipe -> (table, unshaped twin): for each date on which some
    symbols of ``series`` (symbol -> candles and folds) have a fold, every recipe of ``recipes``
    trained across those symbols' folds of that date (``analyses(symbol, fold)`` gives a fold's
    analyses; the twin trains across the same folds with none)."""
    pooled = [r for r in recipes if is_pooled(r)]
    dates: dict[int, dict[str, tuple[Candles, Fold]]] = {}
    for symbol, (candles, folds) in series.items():
        for fold in folds:
            dates.setdefault(fold.test_since, {})[symbol] = (candles, fold)
    out: dict[int, dict[str, dict[str, Twins]]] = {}
    for since in sorted(dates) if pooled else ():
        group = dates[since]
        shaped = {s: (c, f, analyses(s, f)) for s, (c, f) in group.items()}
        bare: dict[str, PoolPart] = {s: (c, f, ()) for s, (c, f) in group.items()}
        out[since] = {s: {} for s in group}
        for r in pooled:
            tables = pooled_fold_tables(shaped, recipe=r, space=space)
            twins = pooled_fold_tables(bare, recipe=r, space=space)
            for s in group:
                out[since][s][r] = (tables[s], twins[s])
    return out


def pooled_controls_by_date(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]],
    analyses: Callable[[str, Fold], Sequence[AnalysedWindow]],
    *,
    recipes: Sequence[str],
    controls: Sequence[str],
    seed: int,
    space: StateSpace | None = None,
) -> dict[int, dict[str, dict[str, dict[str, FastQLearning]]]]:
    """Test start -> symbol -> pooled recipe -> control -> table: as ``pooled_tables_by_date``, each
    recipe trained across the symbols of a date on a negative control (``model.controls``) of their
    analyses, the control applied to each symbol's own analyses and fold before pooling."""
    pooled = [r for r in recipes if is_pooled(r)]
    dates: dict[int, dict[str, tuple[Candles, Fold]]] = {}
    for symbol, (candles, folds) in series.items():
        for fold in folds:
            dates.setdefault(fold.test_since, {})[symbol] = (candles, fold)
    out: dict[int, dict[str, dict[str, dict[str, FastQLearning]]]] = {}
    for since in sorted(dates) if pooled and controls else ():
        group = dates[since]
        given = {s: analyses(s, f) for s, (_, f) in group.items()}
        out[since] = {s: {r: {} for r in pooled} for s in group}
        for c in controls:
            parts: dict[str, PoolPart] = {
                s: (cs, f, fold_control(c, given[s], f, seed=seed)) for s, (cs, f) in group.items()
            }
            for r in pooled:
                tables = pooled_fold_tables(parts, recipe=r, space=space)
                for s in group:
                    out[since][s][r][c] = tables[s]
    return out


def pool_record(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]], recipes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per pooled recipe of ``recipes``: what it pooled, for the scoreboard's JSON and report: the
    symbols, the number of fold dates, the fewest and most symbols pooled on one date, and its
    parameters."""
    counts: dict[int, int] = {}
    for _, folds in series.values():
        for fold in folds:
            counts[fold.test_since] = counts.get(fold.test_since, 0) + 1
    out = {}
    for r in recipes:
        if is_pooled(r):
            out[r] = {
                "symbols": sorted(series),
                "fold_dates": len(counts),
                "symbols_per_date": [min(counts.values(), default=0), max(counts.values(), default=0)],
                "params": dataclasses.asdict(get_recipe(r)),
            }
    return out


def pool_note(record: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per pooled recipe of ``pool_record``: which symbols it trained across."""
    return [
        f"recipe {r} pooled {len(p['symbols'])} symbols ({', '.join(p['symbols'])}) on each of"
        f" {p['fold_dates']} fold dates ({p['symbols_per_date'][0]}-{p['symbols_per_date'][1]} a date):"
        " every symbol's table learned from all of their training parts, none from any test range"
        for r, p in record.items()
    ]
