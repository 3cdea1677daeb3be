"""Walk-forward backtest: retrain on each fold's past only, test on the segment that follows.

The range is cut into ``folds + 1`` consecutive segments of (nearly) equal candle counts. Fold k
trains a fresh Q-table (``model.learning.training.train_qtable``, the reducer's recipe, from zeros: a warm
start from a stored version would carry knowledge of later data) on segments ``0..k`` with the
analyses ALREADY CACHED in ``btc.ollama_analyses`` whose windows end before segment k+1 starts (no
LLM call, no Celery), writes the heuristic rules from the same past, and backtests every policy
of ``worker.evaluation.backtest`` on segment k+1, plus ``qtable_unshaped``: the same recipe on the
same past without any analysis (what the analyses add is the difference with ``qtable``), and
``qtable_shuffled`` / ``qtable_constant``: the same recipe on the negative controls of those
analyses (``model.evaluation.controls``; what their content adds is the difference with ``qtable``). The
state space is the fixed default one (it is not fitted to data, so it cannot leak). Aggregate:
mean and median of each metric over folds, and the compounded return of the folds in sequence.

Why a second walk-forward beside ``model.evaluation.folds`` (the scoreboard's): this one serves
``qtrain backtest --walk-forward`` on ONE symbol's chosen range, cut into N equal segments with an
expanding past (a user's question: "how would this recipe have done here, retrained as it went");
``model.evaluation.folds`` fixes rolling calendar folds shared by every symbol and run (the scoreboard's
question: "does it beat chance across pairs and years"). Folds of the two are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.analyst.prompt import PROMPT_STYLES, prompt_version
from model.candles import Candles, timeframe_seconds
from model.evaluation import policy_set
from model.evaluation.backtest import BacktestResult
from model.evaluation.controls import CONTROLS, control
from model.evaluation.metrics import METRIC_NAMES, json_safe
from model.evaluation.policies import qtable_policy
from model.features import WARMUP, compute_features
from model.learning.states import StateSpace
from model.learning.training import DEFAULT_RECIPE, AnalysedWindow, get_recipe, train_qtable
from worker.errors import BadInput
from worker.evaluation import backtest as evaluate
from worker.settings import DEFAULT_EPOCHS, DEFAULT_TIMEFRAME
from worker.store import analyses, db, versions
from worker.store.candles import load_candles


@dataclass(frozen=True)
class SegmentFold:
    """One fold: its training and test spans (epoch s, end exclusive) and the policies' results."""

    fold: int
    train_since: int
    train_until: int
    test_since: int
    test_until: int
    n_windows: int
    results: dict[str, BacktestResult]


@dataclass(frozen=True)
class WalkForward:
    """All folds of one walk-forward run and what was used."""

    symbol: str
    version: int | None
    folds: tuple[SegmentFold, ...]
    notes: tuple[str, ...]
    params: dict[str, Any]

    def aggregate(self) -> dict[str, dict[str, Any]]:
        """Per policy: mean and median of each metric over folds, and the compounded return %."""
        out: dict[str, dict[str, Any]] = {}
        for policy in self.folds[0].results:
            rows = [f.results[policy].metrics for f in self.folds if policy in f.results]
            agg: dict[str, Any] = {}
            for name in METRIC_NAMES:
                x = np.array([r[name] for r in rows], dtype=np.float64)
                x = x[np.isfinite(x)]
                agg[name] = json_safe(
                    {
                        "mean": float(x.mean()) if x.size else np.nan,
                        "median": float(np.median(x)) if x.size else np.nan,
                    }
                )
            growth = np.prod([1.0 + r["total_return_pct"] / 100.0 for r in rows])
            agg["compounded_return_pct"] = float((growth - 1.0) * 100.0)
            out[policy] = agg
        return out


def _segments(n: int, folds: int) -> np.ndarray:
    if folds < 1:
        raise BadInput(f"--folds must be >= 1, got {folds}")
    bounds = np.linspace(0, n, folds + 2).round().astype(np.int64)
    if np.min(np.diff(bounds)) < max(2, WARMUP // 2):
        raise BadInput(
            f"--folds {folds} cuts {n} candles into segments of fewer than {max(2, WARMUP // 2)}:"
            " use fewer folds or a longer --since/--until range"
        )
    return bounds


def _trained_with(v: versions.StoredVersion | None, epochs: int | None) -> dict[str, Any]:
    """Training options of the walk-forward: the version's recipe (a version from before recipes
    were recorded trained ``qlearning`` with its ``hyper_parameters``), else the default recipe."""
    meta = v.metadata if v is not None else {}
    given = meta.get("hyper_parameters", {})
    if "recipe" in meta:
        recipe, params = meta["recipe"]["name"], dict(meta["recipe"]["params"])
    elif v is not None:
        fields = get_recipe("qlearning").__dataclass_fields__
        recipe, params = "qlearning", {k: given[k] for k in given if k in fields and k != "epochs"}
    else:
        recipe, params = DEFAULT_RECIPE, {}
    return {
        "recipe": recipe,
        "overrides": {k: p for k, p in params.items() if k != "epochs"},
        "epochs": int(epochs if epochs is not None else given.get("epochs", DEFAULT_EPOCHS)),
        "seed": int(given.get("seed", 0)),
    }


def _fold(
    candles: Candles,
    k: int,
    bounds: np.ndarray,
    windows: list[AnalysedWindow],
    trained: dict[str, Any],
    *,
    fee: float,
    slippage_bps: float,
    seed: int,
) -> tuple[SegmentFold, tuple[str, ...]]:
    """Train on segments ``0..k`` with the analyses that ended before segment k+1; test on it."""
    a, b = int(bounds[k + 1]), int(bounds[k + 2])
    train: Candles = candles.slice(0, a)
    test_since = int(candles.ts[a])
    past = [w for w in windows if w.end_ts < test_since]
    space = StateSpace.default()
    learner, _, data = train_qtable(
        train,
        past,
        space=space,
        recipe=trained["recipe"],
        epochs=trained["epochs"],
        seed=trained["seed"],
        **trained["overrides"],
    )
    lo = max(0, a - WARMUP)
    ctx = candles.slice(lo, b)
    rules = policy_set.heuristic_rules(train) if len(train) > WARMUP else None
    pset = policy_set.policy_positions(
        ctx, start=a - lo, learner=learner, space=space, rules=rules, seed=seed
    )
    test = ctx.slice(a - lo, len(ctx))
    twin = learner
    if past:  # the same fold without analyses (else it is the same table)
        twin = train_qtable(
            train,
            [],
            space=space,
            recipe=trained["recipe"],
            epochs=trained["epochs"],
            seed=trained["seed"],
            **trained["overrides"],
        )[0]
    m = space.encode(compute_features(ctx))[a - lo :]
    positions = {"qtable": pset.positions["qtable"], "qtable_unshaped": qtable_policy(twin.q, m)}
    for c in CONTROLS:  # the negative controls of the same past (without analyses: the twin)
        table = twin
        if past:
            moved = control(c, past, since=int(candles.ts[0]), until=test_since, seed=trained["seed"])
            table = train_qtable(
                train,
                moved,
                space=space,
                recipe=trained["recipe"],
                epochs=trained["epochs"],
                seed=trained["seed"],
                **trained["overrides"],
            )[0]
        positions[f"qtable_{c}"] = qtable_policy(table.q, m)
    positions.update(pset.positions)
    results = evaluate.run_policies(test, positions, fee=fee, slippage_bps=slippage_bps)
    step = timeframe_seconds(candles.timeframe)
    fold = SegmentFold(
        k, int(candles.ts[0]), test_since, test_since, int(candles.ts[b - 1]) + step, data.n_windows, results
    )
    return fold, pset.notes


def walk_forward(
    url: str,
    symbol: str,
    *,
    folds: int,
    version: int | None = None,
    since: int | None = None,
    until: int | None = None,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    seed: int = policy_set.DEFAULT_SEED,
    epochs: int | None = None,
) -> WalkForward:
    """Run the walk-forward of the module docstring; the range defaults to the version's whole
    range, else all stored candles. Hyper-parameters, epochs, seed and analyst model come from
    the version when there is one, else the reducer's defaults."""
    v = None
    try:
        v = versions.load_version(url, symbol, version, prefer_promoted=True)
    except BadInput:
        if version is not None:
            raise
    meta = v.metadata if v is not None else {}
    timeframe = v.timeframe if v is not None else DEFAULT_TIMEFRAME
    if since is None and until is None and v is not None:
        since, until = meta.get("train_since"), meta.get("holdout_until")
    candles = load_candles(url, symbol, timeframe, since=since, until=until)
    if len(candles) == 0:
        raise BadInput(
            f"no {timeframe} candles for {symbol} in the range: run `qtrain candles import` or"
            " `qtrain candles fetch`"
        )
    bounds = _segments(len(candles), folds)
    trained = _trained_with(v, epochs)
    model = meta.get("model")
    until_ts = int(candles.ts[-1]) + timeframe_seconds(timeframe)
    style = meta.get("prompt")  # the version's prompt style (absent: written before styles existed)
    version = prompt_version(style) if style in PROMPT_STYLES else None
    windows = analyses.cached_analyses(
        url, symbol, timeframe, until=until_ts, model=model, prompt_version=version
    )
    out: list[SegmentFold] = []
    notes: list[str] = []
    for k in range(folds):
        fold, fold_notes = _fold(
            candles, k, bounds, windows, trained, fee=fee, slippage_bps=slippage_bps, seed=seed
        )
        out.append(fold)
        notes.extend(n for n in fold_notes if n not in notes)
    params = {
        "fee": fee,
        "slippage_bps": slippage_bps,
        "seed": seed,
        "folds": folds,
        "recipe": trained["recipe"],
        "epochs": trained["epochs"],
        "train_seed": trained["seed"],
        "analyses_model": model,
        "analyses_available": len(windows),
    }
    return WalkForward(symbol, v.version if v is not None else None, tuple(out), tuple(notes), params)


def record(url: str, wf: WalkForward) -> list[int]:
    """One ``btc.backtests`` row (kind ``walk_forward``) per fold and policy; their ids."""
    ids = []
    with db.transaction(url) as cur:
        for f in wf.folds:
            params = {
                **wf.params,
                "fold": f.fold,
                "train_since": f.train_since,
                "train_until": f.train_until,
                "n_windows": f.n_windows,
            }
            for policy, r in f.results.items():
                ids.append(
                    evaluate.insert_backtest(
                        cur,
                        wf.symbol,
                        wf.version,
                        f.test_since,
                        f.test_until,
                        policy,
                        "walk_forward",
                        params,
                        r.metrics,
                    )
                )
    return ids
