"""Pooled recipes in the walk-forward: the tables of one fold date trained across symbols.

A pooled recipe (``model.learning.pooled``) trains every symbol's table from all symbols' data at once, so
in the scoreboard it runs once per fold DATE, not once per symbol's fold. The pool of a date is
the training part of each symbol's fold starting that date (the folds of ``model.evaluation.folds`` fall on
the same calendar-quarter dates for every symbol), with the analyses whose window ends before the
test range. Nothing of any symbol's test range, or later, is read: truncating every series at the
test start leaves the tables unchanged (``tests/test_pooled.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from model.candles import Candles
from model.evaluation.controls import fold_control
from model.evaluation.folds import Fold
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.learning.training import AnalysedWindow, Recipe, get_recipe, train_pooled

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


PEER_COVERAGE = 0.5
"""A stored peer (a symbol pooled, not scored) joins a fold date's pool when it has at least this
share of the scored symbols' training candles (the most of them) in the fold's training range."""


def peer_parts(peers: Mapping[str, Candles], fold: Fold, n_own: int) -> dict[str, PoolPart]:
    """The stored peers' parts of a fold date: each peer's candles of ``fold``'s training range
    (``[train_since, test_since)``, nothing later), unshaped, when it covers ``PEER_COVERAGE`` of
    ``n_own`` candles (else left out). Their folds carry no test range: peers are never scored."""
    out: dict[str, PoolPart] = {}
    for s, c in sorted(peers.items()):
        lo, hi = (int(x) for x in np.searchsorted(c.ts, [fold.train_since, fold.test_since], side="left"))
        if hi - lo >= max(2, PEER_COVERAGE * n_own):
            out[s] = (
                c,
                Fold(fold.train_since, fold.test_since, fold.test_since, fold.test_since, lo, hi, hi, hi),
                (),
            )
    return out


def date_groups(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]],
    *,
    peers: Mapping[str, Candles] | None = None,
    alone: bool = False,
) -> dict[int, list[tuple[dict[str, tuple[Candles, Fold]], dict[str, PoolPart]]]]:
    """Test start -> the pools trained on that date: each a pair (scored symbols -> candles and
    fold, stored peers -> their parts). One pool of every symbol with a fold that date plus the
    ``peers`` covering its training range (``peer_parts``); ``alone``: one pool per symbol, no peer."""
    dates: dict[int, dict[str, tuple[Candles, Fold]]] = {}
    for symbol, (candles, folds) in series.items():
        for fold in folds:
            dates.setdefault(fold.test_since, {})[symbol] = (candles, fold)
    out: dict[int, list[tuple[dict[str, tuple[Candles, Fold]], dict[str, PoolPart]]]] = {}
    for since in sorted(dates):
        group = dates[since]
        if alone:
            out[since] = [({s: g}, {}) for s, g in sorted(group.items())]
            continue
        fold = next(iter(group.values()))[1]
        n_own = max(f.n_train for _, f in group.values())
        extra = peer_parts({s: c for s, c in (peers or {}).items() if s not in group}, fold, n_own)
        out[since] = [(group, extra)]
    return out


def pooled_tables_by_date(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]],
    analyses: Callable[[str, Fold], Sequence[AnalysedWindow]],
    *,
    recipes: Sequence[str],
    space: StateSpace | None = None,
    peers: Mapping[str, Candles] | None = None,
    alone: bool = False,
) -> dict[int, dict[str, dict[str, Twins]]]:
    """Test start -> symbol -> pooled recipe -> (table, unshaped twin): for each date on which some
    symbols of ``series`` (symbol -> candles and folds) have a fold, every recipe of ``recipes``
    trained across those symbols' folds of that date and the stored ``peers`` (symbol -> candles;
    their training range only, unshaped, never scored) that cover it (``date_groups``; ``alone``:
    each symbol by itself). ``analyses(symbol, fold)`` gives a scored fold's analyses; the twin
    trains across the same folds with none."""
    pooled = [r for r in recipes if is_pooled(r)]
    out: dict[int, dict[str, dict[str, Twins]]] = {}
    for since, pools in date_groups(series, peers=peers, alone=alone).items() if pooled else ():
        out[since] = {}
        for group, extra in pools:
            shaped: dict[str, PoolPart] = {s: (c, f, analyses(s, f)) for s, (c, f) in group.items()} | extra
            bare: dict[str, PoolPart] = {s: (c, f, ()) for s, (c, f) in group.items()} | extra
            for s in group:
                out[since][s] = {}
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
    peers: Mapping[str, Candles] | None = None,
    alone: bool = False,
) -> dict[int, dict[str, dict[str, dict[str, FastQLearning]]]]:
    """Test start -> symbol -> pooled recipe -> control -> table: as ``pooled_tables_by_date`` (the
    same pools, stored peers and ``alone`` included), each recipe trained on a negative control
    (``model.evaluation.controls``) of the analyses, applied to each symbol's own analyses and fold
    before pooling."""
    pooled = [r for r in recipes if is_pooled(r)]
    out: dict[int, dict[str, dict[str, dict[str, FastQLearning]]]] = {}
    for since, pools in date_groups(series, peers=peers, alone=alone).items() if pooled and controls else ():
        out[since] = {}
        for group, extra in pools:
            given = {s: analyses(s, f) for s, (_, f) in group.items()}
            for s in group:
                out[since][s] = {r: {} for r in pooled}
            for c in controls:
                parts: dict[str, PoolPart] = {
                    s: (cs, f, fold_control(c, given[s], f, seed=seed)) for s, (cs, f) in group.items()
                } | extra
                for r in pooled:
                    tables = pooled_fold_tables(parts, recipe=r, space=space)
                    for s in group:
                        out[since][s][r][c] = tables[s]
    return out


def pool_record(
    series: Mapping[str, tuple[Candles, Sequence[Fold]]],
    recipes: Sequence[str],
    *,
    peers: Mapping[str, Candles] | None = None,
    alone: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per pooled recipe of ``recipes``: what it pooled, for the scoreboard's JSON and report: the
    symbols (scored and stored peers), the stored peers that joined at least one date, whether each
    symbol trained alone, the number of fold dates, the fewest and most symbols pooled on one
    date, and its parameters."""
    groups = date_groups(series, peers=peers, alone=alone)
    sizes = [len(g) + len(e) for pools in groups.values() for g, e in pools]
    used = sorted({s for pools in groups.values() for _, e in pools for s in e})
    out = {}
    for r in recipes:
        if is_pooled(r):
            out[r] = {
                "symbols": sorted(set(series) | set(used)),
                "stored": used,
                "alone": alone,
                "fold_dates": len(groups),
                "symbols_per_date": [min(sizes, default=0), max(sizes, default=0)],
                "params": dataclasses.asdict(get_recipe(r)),
            }
    return out


def pool_note(record: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per pooled recipe of ``pool_record``: which symbols it trained across."""
    out = []
    for r, p in record.items():
        if p.get("alone"):
            out.append(
                f"recipe {r} trained each of {len(p['symbols'])} symbol(s) alone (--pool none) on each of"
                f" {p['fold_dates']} fold dates"
            )
            continue
        stored = p.get("stored") or []
        own = [s for s in p["symbols"] if s not in stored]
        what = f"{len(p['symbols'])} symbols ({', '.join(p['symbols'])})"
        if stored:
            what = (
                f"{', '.join(own)} with {len(stored)} stored symbol(s) ({', '.join(stored)}: training candles"
                " only, unshaped, not scored)"
            )
        out.append(
            f"recipe {r} pooled {what} on each of {p['fold_dates']} fold dates ({p['symbols_per_date'][0]}-"
            f"{p['symbols_per_date'][1]} a date): every symbol's table learned from all of their training"
            " parts, none from any test range"
        )
    return out
