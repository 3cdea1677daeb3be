"""The walk-forward scoreboard on the shared BTC/ETH hourly CSVs, without PostgreSQL or workers:
what ``qtrain evaluate --symbols BTC-USDT,ETH-USDT --analyst heuristic --json`` computes, so the
numbers of the README and of issue 10 can be reproduced from the files alone.

    python bench/scoreboard_research.py [--recipe NAME]... [--symbols BTC,ETH] [--json] [--first-half]
                                        [--null N]

``--symbols`` also takes the 8 pairs of ``../shared/data/universe`` (``CELR,DASH,EOS,ETC,ONE,QTUM,
XMR,ZEC``); a pooled recipe (``--recipe pooled``) trains across the symbols given on each fold date.
The CSVs are read through the project's importer parser (duplicates resolved, bad rows dropped);
they are never copied into the repository. ``--first-half`` scores only the older half of each
symbol's folds (the split used to choose parameters; the report uses all folds). ``--null N`` adds
a permutation test of the ``sweep`` recipe (the ``pooled`` default's, trained across symbols, is
``bench/pooled_research.py --null N``): N times, each fold's table is trained on its training
returns SHUFFLED among the training candles (states, gaps and analyses kept, any link between a
state and what follows destroyed) and scored like the real one; a real result inside the spread of
these is no evidence that the table learned timing from the returns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.candles import Candles  # noqa: E402
from model.evaluation.backtest import run_backtest  # noqa: E402
from model.evaluation.folds import Fold, rolling_folds  # noqa: E402
from model.evaluation.policies import qtable_policy  # noqa: E402
from model.evaluation.pooled_folds import pooled_tables_by_date  # noqa: E402
from model.evaluation.scoreboard import evaluate_fold, fold_record, heuristic_analyses, summarise  # noqa: E402
from model.features import compute_features  # noqa: E402
from model.learning.states import StateSpace  # noqa: E402
from model.learning.sweep import value_iteration  # noqa: E402
from model.learning.training import DEFAULT_RECIPE, RECIPES, AnalysedWindow, SweepRecipe, training_data  # noqa: E402
from worker.ingest.importer import parse_candles, read_file  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NOW = 2_000_000_000.0  # fixed "now" for the importer's future-timestamp check: same output every run


def load(symbol: str) -> Candles:
    """Candles of ``symbol`` (e.g. ``BTC``) from ``../shared/data/Binance_{symbol}USDT_1h.csv`` or, for
    the 8 pairs of the universe (``DASH``, ...), ``../shared/data/universe/`` (memoised per process)."""
    if symbol not in _LOADED:
        name = f"Binance_{symbol}USDT_1h.csv"
        path = DATA / name if (DATA / name).exists() else DATA / "universe" / name
        _LOADED[symbol] = _parse(path, symbol)
    return _LOADED[symbol]


_LOADED: dict[str, Candles] = {}


def _parse(path: Path, symbol: str) -> Candles:
    p = parse_candles(read_file(path), symbol=f"{symbol}-USDT", now=NOW)
    return Candles(p.ts, p.open, p.high, p.low, p.close, p.volume, symbol=f"{symbol}-USDT", timeframe="1h")


def null_sharpes(
    candles: Candles, fold: Fold, analysed: list[AnalysedWindow], reps: int
) -> list[tuple[float, int]]:
    """(Sharpe, trades) on the fold's test range of ``reps`` ``sweep`` tables trained on
    shuffled training returns (seeded by the fold and the replicate: reproducible)."""
    rec = RECIPES["sweep"]  # the pooled default's null (across symbols): bench/pooled_research.py --null
    assert isinstance(rec, SweepRecipe), "the null test is written for the sweep recipe"
    space = StateSpace.default()
    train = candles.slice(fold.train_lo, fold.train_hi)
    past = [w for w in analysed if w.end_ts < fold.test_since]
    data = training_data(train, past, space=space, kappa=rec.kappa)
    ctx = candles.slice(fold.train_lo, fold.test_hi)
    m = space.encode(compute_features(ctx))[fold.test_lo - fold.train_lo :]
    test = candles.slice(fold.test_lo, fold.test_hi)
    idx = np.flatnonzero((data.states >= 0) & np.isfinite(data.returns))
    out = []
    for rep in range(reps):
        r = data.returns.copy()
        r[idx] = r[np.random.default_rng([rep, fold.test_since]).permutation(idx)]
        q, _, _ = value_iteration(
            data.states,
            r,
            data.shaping,
            n_market=space.n_market_states,
            gamma=rec.gamma,
            turnover_cost=rec.turnover_cost,
            prior_strength=rec.prior_strength,
        )
        met = run_backtest(test, qtable_policy(q, m)).metrics
        out.append((float(met["sharpe"]), int(met["n_trades"])))
    return out


def scoreboard(
    symbols: list[str],
    recipes: list[str],
    *,
    first_half: bool = False,
    random_seeds: int = 50,
    window: int = 48,
    stride: int = 24,
    fee: float = 0.001,
    null: int = 0,
) -> dict:
    """``{"folds": [...], "summary": {...}}`` as ``qtrain evaluate --json`` prints it (a pooled
    recipe trains across ``symbols`` on each fold date, as there)."""
    records = []
    series = {}
    caches: dict[str, dict] = {}
    for sym in symbols:
        candles = load(sym)
        folds = rolling_folds(candles.ts, timeframe="1h")
        series[candles.symbol] = (candles, folds[: len(folds) // 2] if first_half else folds)
        caches[candles.symbol] = {}

    def analyses(symbol: str, fold: Fold) -> list[AnalysedWindow]:
        return heuristic_analyses(
            series[symbol][0],
            since_ts=fold.train_since,
            until_ts=fold.train_until,
            window=window,
            stride=stride,
            cache=caches[symbol],
        )

    pooled = pooled_tables_by_date(series, analyses, recipes=recipes)
    for sym, (candles, folds) in series.items():
        for fold in folds:
            analysed = analyses(sym, fold)
            pol = evaluate_fold(
                candles,
                fold,
                analysed,
                recipes=recipes,
                random_seeds=random_seeds,
                fee=fee,
                trained=pooled.get(fold.test_since, {}).get(sym),
            )
            records.append(fold_record(candles.symbol, fold, pol))
            if null:
                records[-1]["null"] = null_sharpes(candles, fold, analysed, null)
    return {"folds": records, "summary": summarise(records)}


def print_null(records: list[dict], reps: int) -> None:
    """Per shuffled replicate: what the ``sweep`` recipe scores without any state-return link."""
    print("permutation null of 'sweep' (training returns shuffled within each fold):")
    for rep in range(reps):
        sh = [f["null"][rep][0] for f in records]
        beats_r = sum(s > f["policies"]["random"]["sharpe"] for s, f in zip(sh, records, strict=True))
        beats_b = sum(s > f["policies"]["buy_and_hold"]["sharpe"] for s, f in zip(sh, records, strict=True))
        trades = np.mean([f["null"][rep][1] for f in records])
        n = len(records)
        print(
            f"  shuffle {rep}: median Sharpe {np.median(sh):+.2f}, above random median {beats_r}/{n},"
            f" above B&H {beats_b}/{n}, {trades:.1f} trades/fold"
        )


def print_summary(summary: dict, n_folds: int) -> None:
    """The summary as an aligned text table."""
    print(f"{'policy':<24}{'median Sharpe':>14}{'> random med':>14}{'> B&H':>8}{'trades/fold':>13}")
    for name, s in summary.items():
        med = "-" if s["median_sharpe"] is None else f"{s['median_sharpe']:+.2f}"
        print(
            f"{name:<24}{med:>14}{s['beats_random_median']:>9}/{s['folds']:<4}"
            f"{s['beats_buy_and_hold']:>4}/{s['folds']:<3}{s['trades_per_fold']:>13.1f}"
        )


def main() -> None:
    """Parse the options, run the scoreboard, print it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", default="BTC,ETH")
    ap.add_argument("--recipe", action="append", default=None, help=f"one of {sorted(RECIPES)}")
    ap.add_argument("--first-half", action="store_true")
    ap.add_argument("--random-seeds", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--null", type=int, default=0, help="shuffled-returns replicates of the sweep recipe")
    a = ap.parse_args()
    recipes = a.recipe or [DEFAULT_RECIPE] + sorted(r for r in RECIPES if r != DEFAULT_RECIPE)
    t0 = time.perf_counter()
    out = scoreboard(
        a.symbols.split(","), recipes, first_half=a.first_half, random_seeds=a.random_seeds, null=a.null
    )
    if a.json:
        print(json.dumps(out, sort_keys=True))
        return
    print_summary(out["summary"], len(out["folds"]))
    if a.null:
        print_null(out["folds"], a.null)
    print(f"{len(out['folds'])} folds in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
