"""Training time of each recipe of ``model.training.RECIPES`` on 4 years of hourly candles.

Run from the repository root: ``.venv/bin/python bench/bench_learning.py [--repeat 3] [--epochs 5]``.

Workload: the shared BTC-USDT 1h file (2017-08 .. 2021-06, about 33,400 candles after the
importer's clean-up; read through ``producer.importer.parse_candles``, never copied) with the
heuristic analyst's analyses of 48-candle windows every 24 candles (computed once, not timed).
Each recipe trains one table on all of it through ``model.training.train_qtable`` (the reducer's
and the scoreboard's entry point): features, states and shaping (``training_data``) plus the
learner, best of ``--repeat`` wall times. The ``learn`` column is the learner alone (``qlearning``:
``FastQLearning.train``, ``--epochs`` passes; ``sweep``: value iteration to convergence); the ratio
compares each recipe's total with the ``qlearning`` baseline measured in the same run.
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

from model.scoreboard import heuristic_analyses  # noqa: E402
from model.states import StateSpace  # noqa: E402
from model.training import RECIPES, train_qtable  # noqa: E402


def main() -> None:
    """Time each recipe and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="passes of the qlearning recipe")
    a = ap.parse_args()
    np.seterr(all="ignore")
    candles = load("BTC")
    years = (candles.ts[-1] - candles.ts[0]) / (365.25 * 86_400)
    t0 = time.perf_counter()
    analysed = heuristic_analyses(candles, until_ts=int(candles.ts[-1]) + 3600)
    t_an = time.perf_counter() - t0
    space = StateSpace.default()
    print(f"BTC-USDT 1h: {len(candles):,} candles ({years:.1f} years), {len(analysed):,} heuristic analyses"
          f" ({t_an:.1f} s, not timed below)")  # fmt: skip
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
