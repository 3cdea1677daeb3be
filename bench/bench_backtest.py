"""Backtest speed: qtrain's vectorised engine against backtesting.py in the same run.

Run from the repository root: ``.venv/bin/python bench/bench_backtest.py [--n 1000000] [--bt-rows N]``.

Workload: the long-only SMA(10)/SMA(30) crossover, fee 0.1%, on (1) the shared BTC-USDT 1h candles
and (2) 1,000,000 generated candles (``model.market.synthetic.make_candles``). The ratio compares time per
candle, ours best of 5 runs (policy + engine), backtesting.py one run. Both engines must find the
same number of trades on the same rows, or the benchmark stops. backtesting.py takes ~13 s on 1e6
candles here; ``--bt-rows N`` limits it to the first N generated candles (time per candle compared).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from model.candles import Candles  # noqa: E402
from model.evaluation.backtest import run_backtest  # noqa: E402
from model.evaluation.policies import sma, sma_crossover  # noqa: E402
from model.market.synthetic import make_candles  # noqa: E402
from tests.shared_candles import load_csv_candles  # noqa: E402

FAST, SLOW, FEE = 10, 30, 0.001
BT_CASH = 1e200  # whole units: a huge account so that fees never starve backtesting.py of units
BTC_CSV = ROOT.parent / "shared" / "data" / "Binance_BTCUSDT_1h.csv"


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def ours(c: Candles) -> int:
    """Policy and engine: SMA crossover positions, then the backtest; returns the trade count."""
    return len(run_backtest(c, sma_crossover(c.close, FAST, SLOW), fee=FEE, warmup=SLOW - 1).trades)


def backtesting_py(c: Candles) -> int:
    """The same strategy in backtesting.py (event loop); returns the trade count."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):
        def init(self) -> None:
            self.f = self.I(sma, self.data.Close, FAST)
            self.s = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            if crossover(self.f, self.s) and not self.position:
                self.buy(size=0.9999)
            elif crossover(self.s, self.f) and self.position:
                self.position.close()

    df = pd.DataFrame(
        {"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume},
        index=pd.to_datetime(c.ts, unit="s"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, SmaCross, cash=BT_CASH, commission=FEE).run()
    return int(stats["# Trades"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="generated candles (default 1e6)")
    ap.add_argument("--bt-rows", type=int, default=0, help="backtesting.py rows on generated data (0: all)")
    args = ap.parse_args()

    cases: list[tuple[str, Candles, Candles]] = []
    if BTC_CSV.exists():
        btc = load_csv_candles(BTC_CSV)
        cases.append(("BTC-USDT 1h (shared)", btc, btc))
    else:
        print(f"note: {BTC_CSV} missing, skipping the real candles")
    gen = make_candles(args.n, seed=42)
    bt_rows = min(args.bt_rows, args.n) if args.bt_rows > 0 else args.n
    cases.append((f"generated {args.n:,}", gen, gen.slice(0, bt_rows)))

    print(
        f"{'data':<24}{'rows':>10}{'ours s':>10}{'bt rows':>10}{'bt s':>10}{'ours/candle':>14}"
        f"{'bt/candle':>12}{'speed-up':>10}"
    )
    for name, c, c_bt in cases:
        t_ours, _ = best_of(lambda c=c: ours(c), 5)
        t_bt, n_bt = best_of(lambda c_bt=c_bt: backtesting_py(c_bt), 1)
        check = ours(c_bt)
        if check != n_bt:
            raise SystemExit(
                f"{name}: trade counts differ on {len(c_bt)} rows: ours {check}, backtesting.py {n_bt}"
            )
        per_ours = t_ours / len(c)
        per_bt = t_bt / len(c_bt)
        print(
            f"{name:<24}{len(c):>10,}{t_ours:>10.3f}{len(c_bt):>10,}{t_bt:>10.2f}"
            f"{per_ours * 1e9:>11.0f} ns{per_bt * 1e6:>9.1f} us{per_bt / per_ours:>9.0f}x"
        )
    print(f"(ours: best of 5, SMA policy + engine; backtesting.py: one run; numpy {np.__version__})")


if __name__ == "__main__":
    main()
