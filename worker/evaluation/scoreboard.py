"""``qtrain evaluate`` from stored data: the walk-forward scoreboard of
``model.evaluation.scoreboard`` over the candles in PostgreSQL, with the heuristic analyst
in-process or the LLM analyses already cached.

``--analyst heuristic`` writes each fold's analyses in-process from its training part (no workers,
no LLM); ``--analyst cached`` uses the analyses stored in ``btc.ollama_analyses`` (a real LLM's,
from earlier batches) for the windows of each fold's training part, and never calls Ollama. Either
way each fold also scores the same recipe trained without analyses (``qtable:unshaped``) and on
the two negative controls of its analyses (``qtable:shuffled``: the same answers on the wrong
windows; ``qtable:constant``: the most common answer everywhere; ``model.evaluation.controls``), and the
scoreboard counts the folds where the analyses helped against each (``ablation``, and lines of
``notes``). The
same inputs give the same output, byte for byte: folds, analyses and every policy are
deterministic (the random baseline is seeded). A pooled recipe (the default, ``pooled``) trains
across all the symbols of the call on each fold date (``model.evaluation.pooled_folds``); a call of ONE symbol
also pools with every other symbol stored at the timeframe that covers the fold's training range
(their training candles only, unshaped, never scored; ``--pool`` names them instead, ``--pool
none`` trains each symbol alone). ``params["pooled"]`` and a line of ``notes`` say what it pooled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.evaluation import pooled_folds, scoreboard
from model.evaluation.controls import CONTROLS
from model.evaluation.folds import DEFAULT_TEST_DAYS, DEFAULT_TRAIN_DAYS, Fold, rolling_folds
from model.learning.training import DEFAULT_RECIPE, RECIPES, AnalysedWindow
from worker.errors import BadInput
from worker.settings import DEFAULT_STRIDE, DEFAULT_TIMEFRAME, DEFAULT_WINDOW
from worker.store import analyses
from worker.store.candles import load_candles, stored_counts

ANALYSTS = ("heuristic", "cached")
EQUITY_POINTS = 200
"""Points of each policy's equity kept per fold in the scoreboard (the report's fold picker)."""


@dataclass(frozen=True)
class EvaluateRequest:
    """What ``qtrain evaluate`` was asked for."""

    symbols: tuple[str, ...]
    timeframe: str = DEFAULT_TIMEFRAME
    train_days: int = DEFAULT_TRAIN_DAYS
    test_days: int = DEFAULT_TEST_DAYS
    since: int | None = None
    until: int | None = None
    analyst: str = "heuristic"
    recipes: tuple[str, ...] = (DEFAULT_RECIPE,)
    random_seeds: int = 50
    fee: float = 0.001
    seed: int = 0
    model: str | None = None
    #: With ``--analyst cached``: only analyses written with this prompt version (the prompt style of
    #: ``QTRAIN_PROMPT``, anonymous by default), so named and anonymous analyses never mix; None: any.
    prompt_version: int | None = None
    #: Stored symbols a pooled recipe also pools with (``--pool``): None: the default (one symbol:
    #: every other stored symbol covering the fold's training range; several: none besides them);
    #: ``()``: none at all, each symbol trained alone (``--pool none``).
    pool: tuple[str, ...] | None = None

    def check(self) -> None:
        """BadInput (one line) for an option out of range."""
        if self.analyst not in ANALYSTS:
            raise BadInput(f"--analyst must be one of {', '.join(ANALYSTS)}, got {self.analyst!r}")
        unknown = [r for r in self.recipes if r not in RECIPES]
        if unknown:
            raise BadInput(f"unknown --recipe {', '.join(unknown)}: use one of {', '.join(sorted(RECIPES))}")
        if self.train_days < 7 or self.test_days < 7:
            raise BadInput("--train-days and --test-days must be >= 7")
        if self.random_seeds < 1:
            raise BadInput(f"--random-seeds must be >= 1, got {self.random_seeds}")


@dataclass(frozen=True)
class Scoreboard:
    """Every fold's record (``model.evaluation.scoreboard.fold_record``), the summary, and what was used."""

    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: Per recipe's table: folds where the analyses helped / hurt / tied
    #: (``model.evaluation.scoreboard.ablation``).
    ablation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``qtrain evaluate --json`` (issue 10's shape, plus ``params``, ``notes`` and
        ``ablation``)."""
        return {
            "folds": self.folds,
            "summary": self.summary,
            "params": self.params,
            "notes": self.notes,
            "ablation": self.ablation,
        }


@dataclass(frozen=True)
class SymbolPlan:
    """One symbol's stored candles and its folds."""

    symbol: str
    candles: Any
    folds: list[Fold]


def plan(url: str, req: EvaluateRequest) -> list[SymbolPlan]:
    """Load each symbol's candles and cut its folds; BadInput when a symbol has none to evaluate."""
    req.check()
    out = []
    for symbol in req.symbols:
        candles = load_candles(url, symbol, req.timeframe)
        folds = rolling_folds(
            candles.ts,
            timeframe=req.timeframe,
            train_days=req.train_days,
            test_days=req.test_days,
            since=req.since,
            until=req.until,
        )
        if not folds:
            raise BadInput(
                f"{symbol}: no fold of {req.train_days} training + {req.test_days} test days fits the stored"
                f" {req.timeframe} candles ({len(candles)}): import more history or shorten --train-days"
            )
        out.append(SymbolPlan(symbol, candles, folds))
    return out


def _analyses_for(
    url: str, req: EvaluateRequest, p: SymbolPlan, fold: Fold, cache: Any
) -> list[AnalysedWindow]:
    """The analyses a fold trains with: heuristic ones of its training part, or the cached LLM ones."""
    if req.analyst == "heuristic":
        return scoreboard.heuristic_analyses(
            p.candles,
            since_ts=fold.train_since,
            until_ts=fold.test_since,
            window=DEFAULT_WINDOW,
            stride=DEFAULT_STRIDE,
            cache=cache,
        )
    return analyses.cached_analyses(
        url,
        p.symbol,
        req.timeframe,
        since=fold.train_since,
        until=fold.test_since,
        model=req.model,
        prompt_version=req.prompt_version,
    )


def evaluate(
    url: str, req: EvaluateRequest, *, progress: Callable[[str, int, int], None] | None = None
) -> Scoreboard:
    """The scoreboard of the module docstring; ``progress(symbol, done, total)`` after each fold."""
    plans = plan(url, req)
    total = sum(len(p.folds) for p in plans)
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    cached_found = 0
    done = 0
    caches: dict[str, dict[Any, AnalysedWindow]] = {p.symbol: {} for p in plans}
    by_symbol = {p.symbol: p for p in plans}
    series = {p.symbol: (p.candles, p.folds) for p in plans}
    peers = stored_peers(url, req, plans)
    alone = req.pool == ()
    pooled = pooled_folds.pooled_tables_by_date(  # pooled recipes: each fold date across the symbols
        series,
        lambda s, f: _analyses_for(url, req, by_symbol[s], f, caches[s]),
        recipes=req.recipes,
        peers=peers,
        alone=alone,
    )
    pooled_controls = pooled_folds.pooled_controls_by_date(
        series,
        lambda s, f: _analyses_for(url, req, by_symbol[s], f, caches[s]),
        recipes=req.recipes,
        controls=CONTROLS,
        seed=req.seed,
        peers=peers,
        alone=alone,
    )
    for p in plans:
        cache = caches[p.symbol]
        for fold in p.folds:
            analysed = _analyses_for(url, req, p, fold, cache)
            cached_found += len(analysed) if req.analyst == "cached" else 0
            curves: dict[str, Any] = {}
            policies = scoreboard.evaluate_fold(
                p.candles,
                fold,
                analysed,
                recipes=req.recipes,
                random_seeds=req.random_seeds,
                fee=req.fee,
                seed=req.seed,
                equity=curves,
                trained=pooled.get(fold.test_since, {}).get(p.symbol),
                controls=CONTROLS,
                trained_controls=pooled_controls.get(fold.test_since, {}).get(p.symbol),
            )
            records.append(scoreboard.fold_record(p.symbol, fold, policies))
            records[-1]["equity"] = equity_record(p.candles.ts[fold.test_lo : fold.test_hi], curves)
            done += 1
            if progress is not None:
                progress(p.symbol, done, total)
    if req.analyst == "cached":
        notes.append(
            f"cached analyst: {cached_found} stored analyses used over {total} folds"
            + (" (none found: the tables trained without LLM shaping)" if cached_found == 0 else "")
        )
    ablation = scoreboard.ablation(records, req.recipes)
    notes.extend(scoreboard.ablation_note(ablation, req.analyst))
    params = {
        "timeframe": req.timeframe,
        "train_days": req.train_days,
        "test_days": req.test_days,
        "analyst": req.analyst,
        "recipes": list(req.recipes),
        "random_seeds": req.random_seeds,
        "fee": req.fee,
        "seed": req.seed,
        "window": DEFAULT_WINDOW,
        "stride": DEFAULT_STRIDE,
    }
    pool = pooled_folds.pool_record(series, req.recipes, peers=peers, alone=alone)
    if pool:  # which recipe pooled what (absent without a pooled recipe: older outputs stay byte-identical)
        params["pooled"] = pool
        notes.extend(pooled_folds.pool_note(pool))
    return Scoreboard(
        folds=records, summary=scoreboard.summarise(records), notes=notes, params=params, ablation=ablation
    )


def stored_peers(url: str, req: EvaluateRequest, plans: Sequence[SymbolPlan]) -> dict[str, Any]:
    """Symbol -> candles of the stored symbols a pooled recipe also pools with (``req.pool``; see
    ``EvaluateRequest``), loaded up to the last fold's test start only; BadInput names a ``--pool``
    symbol without stored candles."""
    if not any(pooled_folds.is_pooled(r) for r in req.recipes) or req.pool == ():
        return {}
    if req.pool is None and len(plans) != 1:
        return {}
    own = {p.symbol for p in plans}
    stored = stored_counts(url, req.timeframe)
    if req.pool is None:
        names = [s for s in stored if s not in own]
    else:
        missing = [s for s in req.pool if s not in stored]
        if missing:
            raise BadInput(
                f"--pool {', '.join(missing)}: no {req.timeframe} candles stored (with volume); import"
                " them first, or give --pool none"
            )
        names = [s for s in req.pool if s not in own]
    until = max(f.test_since for p in plans for f in p.folds)
    return {s: load_candles(url, s, req.timeframe, until=until) for s in names}


def equity_record(ts: Any, curves: dict[str, Any], max_points: int = EQUITY_POINTS) -> dict[str, Any]:
    """A fold's ``"equity"``: each policy's equity relative to its start (1.0 = the starting capital)
    on at most ``max_points`` evenly spaced test candles, the first and last included."""
    n = len(ts)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(np.int64))
    relative = {k: np.asarray(eq)[idx] / eq[0] for k, eq in curves.items()}
    return {
        "ts": [int(t) for t in np.asarray(ts)[idx]],
        "policies": {k: [round(float(v), 6) for v in r] for k, r in relative.items()},
    }


def recipes_of(names: Sequence[str]) -> tuple[str, ...]:
    """The recipes to score: the default one first, then the others asked, each once."""
    out = [DEFAULT_RECIPE]
    out.extend(n for n in names if n not in out)
    return tuple(out)
