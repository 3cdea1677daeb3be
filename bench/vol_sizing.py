"""Volatility position sizing for the pooled default (issue 28, item 4): a smaller long position when
recent volatility is high, within the same HOLD/BUY/SELL decisions and long-only spot.

    python bench/vol_sizing.py [--json FILE]

The same folds, analyses and pooled tables as ``qtrain evaluate --analyst heuristic`` (182-day train,
91-day test; ``bench/pooled_research.py``'s loading, the CSVs of ``../shared/data`` read through the
importer's parser): BTC-USDT with ETH-USDT pooled (26 folds), the 8 universe pairs pooled (24 folds).

RULE (fixed and committed before the first run; nothing below is tuned after it):

* Sizing: at each decision candle t (its close), the size is ``s_t = clip(sig_ref / sig_t, 0.25,
  1)``: ``sig_t`` the std of the last 168 hourly log returns up to close t (one week), ``sig_ref``
  the median of ``sig`` over the fold's TRAINING candles of that symbol (known when the table is
  trained). An entry buys ``s_t`` of equity; while long, the held fraction is reset to ``s_t`` when
  they differ by more than 0.2 (a band against churn). Exits as the table decides. Fee 0.1% a
  side on every traded notional, rebalances included.
* One simulator for every policy compared (the decision at close t is held over the return from
  close t to close t+1; fees on each change of the held fraction; Sharpe of the hourly equity
  returns): the unsized table (fraction 0/1), the sized table, buy-and-hold (1 from the first
  test candle) and the median of 50 seeded random policies (``model.evaluation.policies.random_policy``,
  seeds 0-49, as the scoreboard's). So every comparison is within the same accounting.
* Kept (and then carried into the backtest, the paper trader and ``signal`` with a parity test)
  only if, on BOTH sets, the sized table is above buy-and-hold's Sharpe in MORE folds than the
  unsized table AND above the random median in AT LEAST as many folds. Otherwise it is not kept,
  and the README says so with the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scoreboard_research import load  # noqa: E402

from model.evaluation.folds import rolling_folds  # noqa: E402
from model.evaluation.policies import qtable_policy, random_policy  # noqa: E402
from model.evaluation.pooled_folds import pooled_tables_by_date  # noqa: E402
from model.evaluation.scoreboard import heuristic_analyses  # noqa: E402
from model.features import compute_features  # noqa: E402
from model.learning.states import StateSpace  # noqa: E402
from model.trading.sizing import VolSizing, held_fractions, target_sizes, trailing_sigma  # noqa: E402

SIZING = VolSizing(lookback=168, floor=0.25, band=0.2)  # the RULE's
FEE, SEEDS = 0.001, 50
SETS = {"btc_eth": ("BTC", "ETH"), "universe": ("CELR", "DASH", "EOS", "ETC", "ONE", "QTUM", "XMR", "ZEC")}
HOURS_A_YEAR = 24 * 365


def sizes(sig: np.ndarray, sig_ref: float) -> np.ndarray:
    """The RULE's target size at each decision candle (``model.trading.sizing.target_sizes``)."""
    return target_sizes(sig, sig_ref, SIZING)


def held_fraction(pos: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    """The fraction of equity held after each decision: 0/1 unsized, else
    ``model.trading.sizing.held_fractions``."""
    return pos.astype(np.float64) if target is None else held_fractions(pos, target, SIZING)


def sharpe(close: np.ndarray, w: np.ndarray) -> float:
    """Sharpe (hourly, annualised) of holding ``w[t]`` from close t to close t+1, fees on every change."""
    r = close[1:] / close[:-1] - 1.0
    change = np.abs(np.diff(w, prepend=0.0))[:-1]
    eq = w[:-1] * r - FEE * change
    sd = eq.std(ddof=1)
    return float(eq.mean() / sd * np.sqrt(HOURS_A_YEAR)) if sd > 0 else 0.0


def run_set(symbols: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per fold of the set: the Sharpe of each policy in the one simulator."""
    space = StateSpace.default()
    series = {}
    for sym in symbols:
        c = load(sym)
        series[c.symbol] = (c, rolling_folds(c.ts, timeframe="1h"))
    caches: dict[str, dict[Any, Any]] = {s: {} for s in series}

    def analyses(symbol: str, fold: Any) -> Any:
        return heuristic_analyses(
            series[symbol][0],
            since_ts=fold.train_since,
            until_ts=fold.train_until,
            window=48,
            stride=24,
            cache=caches[symbol],
        )

    tables = pooled_tables_by_date(series, analyses, recipes=("pooled",), space=space)
    rows = []
    for sym, (c, folds) in series.items():
        sig = trailing_sigma(np.asarray(c.close, dtype=np.float64), SIZING.lookback)
        for f in folds:
            q = tables[f.test_since][sym]["pooled"][0].q
            m = space.encode(compute_features(c.slice(f.train_lo, f.test_hi)))[f.test_lo - f.train_lo :]
            pos = qtable_policy(q, m)
            close = np.asarray(c.close[f.test_lo : f.test_hi], dtype=np.float64)
            target = sizes(sig[f.test_lo : f.test_hi], float(np.nanmedian(sig[f.train_lo : f.train_hi])))
            n = len(close)
            rnd = [sharpe(close, held_fraction(random_policy(n, seed=s), None)) for s in range(SEEDS)]
            w_sized = held_fraction(pos, target)
            mean_size = float(w_sized[pos == 1].mean()) if pos.any() else 0.0
            rows.append(
                {
                    "symbol": sym,
                    "test_since": int(f.test_since),
                    "unsized": sharpe(close, held_fraction(pos, None)),
                    "sized": sharpe(close, w_sized),
                    "buy_and_hold": sharpe(close, np.ones(n)),
                    "random_median": float(np.median(rnd)),
                    "exposure": float(np.mean(pos)),
                    "mean_size_when_long": mean_size,
                }
            )
    return rows


def counts(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Folds above buy-and-hold and the random median, median Sharpe, of policy ``key``."""
    return {
        "folds": len(rows),
        "above_bh": sum(r[key] > r["buy_and_hold"] for r in rows),
        "above_random": sum(r[key] > r["random_median"] for r in rows),
        "median_sharpe": float(np.median([r[key] for r in rows])),
    }


def main() -> None:
    """Run both sets, apply the RULE, print (and optionally save) everything."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    keep = True
    for name, symbols in SETS.items():
        rows = run_set(symbols)
        un, sz = counts(rows, "unsized"), counts(rows, "sized")
        bh = float(np.median([r["buy_and_hold"] for r in rows]))
        rnd = float(np.median([r["random_median"] for r in rows]))
        wins = sz["above_bh"] > un["above_bh"] and sz["above_random"] >= un["above_random"]
        keep = keep and wins
        out[name] = {"rows": rows, "unsized": un, "sized": sz, "median_bh": bh, "median_random": rnd}
        for label, s in (("unsized", un), ("sized", sz)):
            print(
                f"{name:8s} {label:7s}: {s['above_bh']}/{s['folds']} above B&H,"
                f" {s['above_random']}/{s['folds']} above the random median,"
                f" median Sharpe {s['median_sharpe']:+.2f} (B&H {bh:+.2f}, random {rnd:+.2f})"
            )
        print(f"{name:8s} sized wins by the rule: {wins}")
    out["keep"] = keep
    print(f"RULE: {'keep' if keep else 'do not keep'} volatility sizing ({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
