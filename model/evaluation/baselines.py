"""The random-policy baseline as a distribution: what luck alone scores on a range.

One random policy's result is itself luck; the median over many seeded random policies (p_trade
0.05, the backtest's ``random``) is the bar a learned table must clear to claim any skill, and
the 90th percentile shows how high luck reaches.
"""

from __future__ import annotations

import numpy as np

from model.candles import Candles
from model.evaluation.backtest import run_backtest
from model.evaluation.metrics import METRIC_NAMES
from model.evaluation.policies import random_policy

DEFAULT_RANDOM_SEEDS = 50
"""Random policies per range: enough for a stable median (its standard error ~ 1/7 of the spread)."""


def random_policy_metrics(
    test: Candles,
    *,
    seeds: int = DEFAULT_RANDOM_SEEDS,
    base_seed: int = 0,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    p_trade: float = 0.05,
) -> dict[str, float]:
    """Median of every metric over ``seeds`` random policies (seeds ``base_seed..+seeds-1``) on
    ``test``, plus ``sharpe_p90`` (90th percentile); NaN runs are left out of each median (a metric
    NaN for every seed stays NaN)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    n = len(test)
    runs = [
        run_backtest(
            test, random_policy(n, seed=base_seed + k, p_trade=p_trade), fee=fee, slippage_bps=slippage_bps
        )
        for k in range(seeds)
    ]
    table = np.array([[r.metrics[name] for name in METRIC_NAMES] for r in runs], dtype=np.float64)
    out: dict[str, float] = {}
    for j, name in enumerate(METRIC_NAMES):
        col = table[:, j][~np.isnan(table[:, j])]
        out[name] = float(np.median(col)) if col.size else float("nan")
    out["sharpe_p90"] = float(np.quantile(table[:, METRIC_NAMES.index("sharpe")], 0.9))
    return out
