"""The walk-forward scoreboard core: per fold, train each recipe on the fold's training part only,
backtest every policy on its test range, and summarise over folds. Pure (no DB, no I/O).

Policies (names in the output):

* ``qtable``: the Q-table of ``DEFAULT_RECIPE``; ``qtable:<recipe>`` for each other recipe asked.
* ``qtable:unshaped`` (``qtable:<recipe>:unshaped``): the same recipe on the same candles without
  any analysis (shaping off): what the analyses add is the difference (``ablation``).
* ``qtable:shuffled`` and ``qtable:constant`` (``qtable:<recipe>:<control>``), when asked
  (``controls``): the same recipe trained on the negative controls of the fold's analyses
  (``model.evaluation.controls``: the same answers on the wrong windows; the most common answer everywhere).
  What the analyses' CONTENT adds is the shaped table's margin over them (``ablation``).
* ``rules``: the heuristic analyst's rules written from the fold's training part, net vote.
* ``buy_and_hold``: long from the first test candle on.
* ``random``: the MEDIAN of each metric over ``random_seeds`` seeded random policies (p_trade
  0.05, seeds ``seed .. seed + random_seeds - 1``), plus ``sharpe_p90`` (90th percentile Sharpe).
* ``flat``: never in the market (Sharpe 0).

Every policy starts flat at the test range's first candle and is backtested on the test candles
only (``model.evaluation.backtest.run_backtest``, decisions at close t filled at open t+1, ``fee`` per side).
Features and market states of the test range are computed on the fold's candles from its training
start on, so indicators are warmed up on past data only; the training sees nothing of the test
range (analyses are kept only when their window ends before the test range starts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model.analyst.heuristic import heuristic_analysis
from model.analyst.rules import fired
from model.candles import Candles, timeframe_seconds
from model.evaluation.backtest import run_backtest
from model.evaluation.baselines import random_policy_metrics
from model.evaluation.controls import CONTROLS, fold_control
from model.evaluation.folds import Fold
from model.evaluation.metrics import json_safe
from model.evaluation.policies import buy_and_hold, qtable_policy, rules_policy
from model.evaluation.policy_set import heuristic_rules
from model.features import WARMUP, compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.learning.training import DEFAULT_RECIPE, AnalysedWindow, train_qtable
from model.market.windows import plan_windows

RANDOM_P_TRADE = 0.05

AnalysisCache = dict[tuple[str, str, int, int], AnalysedWindow]
"""``(symbol, timeframe, start_ts, end_ts)`` -> analysis; share one across folds of one series."""


def policy_name(recipe: str) -> str:
    """Scoreboard name of a recipe's Q-table: ``qtable`` for the default, else ``qtable:<recipe>``."""
    return "qtable" if recipe == DEFAULT_RECIPE else f"qtable:{recipe}"


def unshaped_name(recipe: str) -> str:
    """Scoreboard name of a recipe's table trained without analyses: ``<policy_name>:unshaped``."""
    return f"{policy_name(recipe)}:unshaped"


def control_name(recipe: str, control: str) -> str:
    """Scoreboard name of a recipe's table trained on a negative control: ``<policy_name>:<control>``."""
    return f"{policy_name(recipe)}:{control}"


def heuristic_analyses(
    candles: Candles,
    *,
    until_ts: int,
    since_ts: int | None = None,
    window: int = 48,
    stride: int = 24,
    cache: AnalysisCache | None = None,
) -> list[AnalysedWindow]:
    """The heuristic analyst's analyses of the windows a batch over ``[since_ts, until_ts)`` would
    make (``model.market.windows.plan_windows`` from the first candle of the range, gaps skipped), each
    computed as the worker does: features of the window plus ``WARMUP`` candles of history before
    it, then ``model.analyst.heuristic.heuristic_analysis`` of the window's rows. Only windows that end
    before ``until_ts``. ``cache`` (optional) memoises windows across calls on the same series."""
    step = timeframe_seconds(candles.timeframe)
    ts = np.asarray(candles.ts, dtype=np.int64)
    first = 0 if since_ts is None else int(np.searchsorted(ts, since_ts, side="left"))
    last = int(np.searchsorted(ts, until_ts, side="left"))
    if last - first < window:
        return []
    plan = plan_windows(ts[first:last], size=window, stride=stride, step=step)
    out: list[AnalysedWindow] = []
    for s in (plan.starts + first).tolist():
        start_ts, end_ts = int(ts[s]), int(ts[s + window - 1])
        key = (candles.symbol, candles.timeframe, start_ts, end_ts)
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            lo = int(np.searchsorted(ts, start_ts - WARMUP * step, side="left"))
            feats = compute_features(candles.slice(lo, s + window))
            a = heuristic_analysis({k: v[s - lo :] for k, v in feats.items()})
            hit = AnalysedWindow(start_ts, end_ts, a.action, a.confidence, a.rules)
            if cache is not None:
                cache[key] = hit
        out.append(hit)
    return out


def fold_tables(
    candles: Candles,
    fold: Fold,
    analysed: Sequence[AnalysedWindow],
    *,
    recipes: Sequence[str] = (DEFAULT_RECIPE,),
    space: StateSpace | None = None,
    seed: int = 0,
) -> dict[str, FastQLearning]:
    """Each recipe's Q-table trained on the fold's training candles and the analyses among
    ``analysed`` whose window ends before the test range (recipe name -> table)."""
    space = StateSpace.default() if space is None else space
    train = candles.slice(fold.train_lo, fold.train_hi)
    past = [w for w in analysed if w.end_ts < fold.test_since]
    return {r: train_qtable(train, past, space=space, recipe=r, seed=seed)[0] for r in recipes}


def evaluate_fold(
    candles: Candles,
    fold: Fold,
    analysed: Sequence[AnalysedWindow],
    *,
    recipes: Sequence[str] = (DEFAULT_RECIPE,),
    random_seeds: int = 50,
    fee: float = 0.001,
    seed: int = 0,
    space: StateSpace | None = None,
    equity: dict[str, np.ndarray] | None = None,
    trained: Mapping[str, tuple[FastQLearning, FastQLearning]] | None = None,
    controls: Sequence[str] = (),
    trained_controls: Mapping[str, Mapping[str, FastQLearning]] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Policy name -> JSON-safe metrics (``model.evaluation.metrics``; NaN/inf -> None) of every policy of the
    module docstring on ``fold``'s test range. ``analysed``: any analyses (heuristic or cached LLM
    ones) of the series; only those ending before the test range are used. ``seed`` seeds the
    recipes that use one and the first random policy. ``equity`` (optional) receives each
    backtested policy's equity per test candle (not ``random``'s: a median is no one curve).
    ``trained``: recipe -> (table, unshaped twin) trained elsewhere, for the pooled recipes that
    train across symbols (``model.evaluation.pooled_folds.pooled_tables_by_date``); a pooled recipe not
    given is trained on this symbol alone (``train_qtable``: its own state means are the pool).
    ``controls`` (of ``model.evaluation.controls.CONTROLS``): also score each recipe trained on those
    negative controls of the fold's analyses (seeded by ``seed``); ``trained_controls``: recipe ->
    control -> table for the pooled recipes given in ``trained``
    (``model.evaluation.pooled_folds.pooled_controls_by_date``)."""
    if random_seeds < 1:
        raise ValueError(f"random_seeds must be >= 1, got {random_seeds}")
    space = StateSpace.default() if space is None else space
    given = dict(trained or {})
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control {', '.join(unknown)}: use {', '.join(CONTROLS)}")
    given_controls = dict(trained_controls or {})
    missing = [r for r in given if controls and not set(controls) <= set(given_controls.get(r, {}))]
    if missing:
        raise ValueError(
            f"recipe {', '.join(missing)} trains across symbols: pass its control tables as trained_controls="
            " (model.evaluation.pooled_folds.pooled_controls_by_date)"
        )
    own = [r for r in recipes if r not in given]
    tables = fold_tables(candles, fold, analysed, recipes=own, space=space, seed=seed)
    shaped = any(w.end_ts < fold.test_since for w in analysed)  # else the unshaped tables are the same
    twins = fold_tables(candles, fold, (), recipes=own, space=space, seed=seed) if shaped else tables
    ctl = {}
    for c in controls:  # without analyses, a control is the unshaped table
        moved = fold_control(c, analysed, fold, seed=seed)
        ctl[c] = fold_tables(candles, fold, moved, recipes=own, space=space, seed=seed) if shaped else twins
    tables, twins = (
        {r: given[r][0] if r in given else tables[r] for r in recipes},
        {r: given[r][1] if r in given else twins[r] for r in recipes},
    )
    ctl = {c: {r: given_controls[r][c] if r in given else t[r] for r in recipes} for c, t in ctl.items()}
    ctx = candles.slice(fold.train_lo, fold.test_hi)
    start = fold.test_lo - fold.train_lo
    feats = compute_features(ctx)
    m = space.encode(feats)[start:]
    test = candles.slice(fold.test_lo, fold.test_hi)
    n = len(test)
    positions: dict[str, np.ndarray] = {}
    for r, t in tables.items():
        positions[policy_name(r)] = qtable_policy(t.q, m)
        positions[unshaped_name(r)] = qtable_policy(twins[r].q, m)
        for c in controls:
            positions[control_name(r, c)] = qtable_policy(ctl[c][r].q, m)
    rules = heuristic_rules(candles.slice(fold.train_lo, fold.train_hi))
    if rules:
        f = fired(list(rules), feats)[:, start:]
        acts = np.array([r.action for r in rules])
        conf = np.array([r.confidence for r in rules])
        positions["rules"] = rules_policy(f, acts, conf)
    else:
        positions["rules"] = np.zeros(n, dtype=np.int8)
    positions["buy_and_hold"] = buy_and_hold(n)
    positions["flat"] = np.zeros(n, dtype=np.int8)
    runs = {name: run_backtest(test, pos, fee=fee) for name, pos in positions.items()}
    out: dict[str, dict[str, float | None]] = {name: json_safe(r.metrics) for name, r in runs.items()}
    if equity is not None:
        equity.update({name: r.equity for name, r in runs.items()})
    out["random"] = json_safe(
        random_policy_metrics(test, seeds=random_seeds, base_seed=seed, fee=fee, p_trade=RANDOM_P_TRADE)
    )
    return out


def iso(ts: int) -> str:
    """Epoch seconds as ISO 8601 UTC (``2021-06-10T00:00:00Z``)."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fold_record(symbol: str, fold: Fold, policies: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One entry of the scoreboard's ``folds`` list (timestamps ISO 8601 UTC)."""
    return {
        "symbol": symbol,
        "train_since": iso(fold.train_since),
        "train_until": iso(fold.train_until),
        "test_since": iso(fold.test_since),
        "test_until": iso(fold.test_until),
        "policies": {k: dict(v) for k, v in policies.items()},
    }


def _versus(folds: Sequence[Mapping[str, Any]], name: str, other: str) -> dict[str, Any]:
    """Folds where ``name``'s Sharpe is above / below / equal to ``other``'s (of those where both
    have one) and the median Sharpe margin (``name`` - ``other``)."""
    margins = []
    for f in folds:
        a = f["policies"].get(name, {}).get("sharpe")
        b = f["policies"].get(other, {}).get("sharpe")
        if a is not None and b is not None:
            margins.append(float(a) - float(b))
    arr = np.array(margins)
    return {
        "helped": int((arr > 0).sum()),
        "hurt": int((arr < 0).sum()),
        "tied": int((arr == 0).sum()),
        "folds": len(margins),
        "median_sharpe_margin": float(np.median(arr)) if arr.size else None,
    }


def ablation(
    folds: Sequence[Mapping[str, Any]], recipes: Sequence[str] = (DEFAULT_RECIPE,)
) -> dict[str, dict[str, Any]]:
    """Per recipe's table over ``folds``: in how many folds its Sharpe is above (``helped``), below
    (``hurt``) or equal to (``tied``) the same fold's unshaped table, of ``folds`` where both have
    one, and the median Sharpe margin (shaped - unshaped). When the folds score negative controls,
    ``controls`` holds the same counts against each (control -> its policy and counts)."""
    out: dict[str, dict[str, Any]] = {}
    for r in recipes:
        name, twin = policy_name(r), unshaped_name(r)
        out[name] = {"unshaped": twin, **_versus(folds, name, twin)}
        scored = [c for c in CONTROLS if any(control_name(r, c) in f["policies"] for f in folds)]
        if scored:  # absent without controls: older outputs stay byte-identical
            out[name]["controls"] = {
                c: {"policy": control_name(r, c), **_versus(folds, name, control_name(r, c))} for c in scored
            }
    return out


def _counts(a: Mapping[str, Any]) -> str:
    median = a["median_sharpe_margin"]
    return (
        f"in {a['helped']} of {a['folds']} folds, lost to it in {a['hurt']}, tied in {a['tied']};"
        f" median margin {'n/a' if median is None else f'{median:+.2f}'}"
    )


def ablation_note(record: Mapping[str, Mapping[str, Any]], analyst: str) -> list[str]:
    """One sentence per recipe's table: in how many folds the analyses helped (``ablation``'s
    counts), and one per negative control: in how many folds their content beat it."""
    lines = []
    for name, a in record.items():
        median = a["median_sharpe_margin"]
        lines.append(
            f"{analyst} analyses helped {name} in {a['helped']} of {a['folds']} folds (Sharpe above"
            f" {a['unshaped']}, the same recipe without analyses), hurt in {a['hurt']}, tied in {a['tied']};"
            " median margin"
            f" {'n/a' if median is None else f'{median:+.2f}'}"
        )
        for c, v in a.get("controls", {}).items():
            lines.append(f"{analyst} analyses' content beat {v['policy']} ({c} control) {_counts(v)}")
    return lines


def summarise(folds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per policy over ``folds`` (entries of ``fold_record``): median Sharpe, the number of folds
    where its Sharpe is above the random policies' median Sharpe and above buy-and-hold's (strictly),
    the number of folds it ran in, and its mean number of closed trades per fold."""
    names: list[str] = []
    for f in folds:
        names.extend(k for k in f["policies"] if k not in names)
    out: dict[str, dict[str, float | int | None]] = {}
    for name in names:
        sharpes, trades, beats_r, beats_bh = [], [], 0, 0
        for f in folds:
            p = f["policies"]
            if name not in p:
                continue
            s = p[name].get("sharpe")
            sharpes.append(math.nan if s is None else float(s))
            trades.append(float(p[name].get("n_trades") or 0))
            r = p.get("random", {}).get("sharpe")
            b = p.get("buy_and_hold", {}).get("sharpe")
            beats_r += int(s is not None and r is not None and s > r)
            beats_bh += int(s is not None and b is not None and s > b)
        arr = np.array(sharpes)
        arr = arr[~np.isnan(arr)]
        out[name] = {
            "median_sharpe": float(np.median(arr)) if arr.size else None,
            "beats_random_median": beats_r,
            "beats_buy_and_hold": beats_bh,
            "folds": len(sharpes),
            "trades_per_fold": float(np.mean(trades)) if trades else None,
        }
    return out
