"""Training time of each recipe of ``model.learning.training.RECIPES`` on 4 years of hourly candles.

Run from the repository root: ``.venv/bin/python bench/bench_learning.py [--repeat 3] [--epochs 5]``.

Workload: the shared BTC-USDT 1h file (2017-08 .. 2021-06, about 33,400 candles after the
importer's clean-up; read through ``worker.ingest.importer.parse_candles``, never copied) with the
heuristic analyst's analyses of 48-candle windows every 24 candles (computed once, not timed).
Each recipe trains one table on all of it through ``model.learning.training.train_qtable`` (the reducer's
and the scoreboard's entry point): features, states and shaping (``training_data``) plus the
learner, best of ``--repeat`` wall times. The ``learn`` column is the learner alone (``qlearning``:
``FastQLearning.train``, ``--epochs`` passes; ``sweep``: value iteration to convergence); the ratio
compares each recipe's total with the ``qlearning`` baseline measured in the same run.

``--universe``: the ``pooled`` recipe trained across the 8 pairs of ``../shared/data/universe``
(2020-08 .. 2021-11, all of each pair's candles, one ``train_pooled`` call) against the ``sweep``
trained on each pair alone (8 ``train_qtable`` calls), best of ``--repeat``; ``learn`` sums the
value iterations alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from scoreboard_research import load  # noqa: E402

from model.evaluation.scoreboard import heuristic_analyses  # noqa: E402
from model.learning.states import StateSpace  # noqa: E402
from model.learning.training import RECIPES, train_pooled, train_qtable  # noqa: E402

UNIVERSE = ("CELR", "DASH", "EOS", "ETC", "ONE", "QTUM", "XMR", "ZEC")


def universe(repeat: int) -> None:
    """Time the pooled recipe across the universe against one sweep per pair."""
    series = {f"{s}-USDT": load(s) for s in UNIVERSE}
    analysed = {s: heuristic_analyses(c, until_ts=int(c.ts[-1]) + 3600) for s, c in series.items()}
    space = StateSpace.default()
    n = sum(len(c) for c in series.values())
    print(f"universe: {len(series)} pairs, {n:,} candles, {sum(map(len, analysed.values())):,} analyses")
    best: dict[str, tuple[float, float, str]] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = train_pooled(series, analysed, space=space, recipe="pooled")
        total = time.perf_counter() - t0
        learn = sum(st.seconds for _, st, _ in out.values())
        sweeps = sum(st.sweeps for _, st, _ in out.values())
        if total < best.get("pooled", (np.inf,))[0]:
            best["pooled"] = (total, learn, f"1 call, {sweeps} sweeps over 8 tables")
        t0 = time.perf_counter()
        stats = [train_qtable(c, analysed[s], space=space, recipe="sweep")[1] for s, c in series.items()]
        total = time.perf_counter() - t0
        if total < best.get("sweep", (np.inf,))[0]:
            best["sweep"] = (
                total,
                sum(st.seconds for st in stats),
                f"8 calls, {sum(st.sweeps for st in stats)} sweeps",
            )
    print(f"{'recipe':<12}{'total s':>10}{'learn s':>10}{'vs sweep':>10}  detail")
    for name in ("sweep", "pooled"):
        total, learn, detail = best[name]
        print(f"{name:<12}{total:>10.3f}{learn:>10.3f}{total / best['sweep'][0]:>9.2f}x  {detail}")


def main() -> None:
    """Time each recipe and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="passes of the qlearning recipe")
    ap.add_argument("--universe", action="store_true", help="pooled across the universe vs a sweep per pair")
    a = ap.parse_args()
    np.seterr(all="ignore")
    if a.universe:
        universe(a.repeat)
        return
    candles = load("BTC")
    years = (candles.ts[-1] - candles.ts[0]) / (365.25 * 86_400)
    t0 = time.perf_counter()
    analysed = heuristic_analyses(candles, until_ts=int(candles.ts[-1]) + 3600)
    t_an = time.perf_counter() - t0
    space = StateSpace.default()
    print(
        f"BTC-USDT 1h: {len(candles):,} candles ({years:.1f} years), {len(analysed):,} heuristic analyses"
        f" ({t_an:.1f} s, not timed below)"
    )
    rows = []
    for name in sorted(RECIPES, key=lambda r: r != "qlearning"):
        best, learn, stats = float("inf"), 0.0, None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            _, stats, _ = train_qtable(candles, analysed, space=space, recipe=name, epochs=a.epochs, seed=0)
            total = time.perf_counter() - t0
            if total < best:
                best, learn = total, stats.seconds
        detail = f"{a.epochs} epochs" if name == "qlearning" else f"{getattr(stats, 'sweeps', 0)} sweeps"
        rows.append((name, best, learn, detail))
    base = rows[0][1]
    print(f"{'recipe':<12}{'total s':>10}{'learn s':>10}{'vs qlearning':>14}  detail")
    for name, total, learn, detail in rows:
        print(f"{name:<12}{total:>10.3f}{learn:>10.3f}{total / base:>13.2f}x  {detail}")


if __name__ == "__main__":
    main()
