"""The three HTML reports built from seeded synthetic data, as their commands build them.

``backtest`` (a Q-table-like policy against buy-and-hold), ``paper`` (an account whose decisions
come from two versions) and ``evaluate`` (two symbols' walk-forward folds, every policy of
``model.evaluation.scoreboard`` plus an extra one no code lists, as an "unshaped" twin would be).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from model.evaluation import scoreboard as ms
from model.evaluation.backtest import run_backtest
from model.evaluation.folds import rolling_folds
from model.evaluation.policies import buy_and_hold, sma_crossover
from model.market.synthetic import make_candles
from worker.evaluation.scoreboard import Scoreboard, equity_record
from worker.pages.report import render_report
from worker.pages.scoreboard import render_scoreboard

EXTRA_POLICY = "qtable:unlisted"
"""A policy only the data names: the report must draw it like the others."""


def backtest_page(n: int = 3000) -> str:
    """``qtrain backtest --report``'s page for a moving-average policy on ``n`` candles."""
    c = make_candles(n, seed=9)
    res = run_backtest(c, sma_crossover(c.close, 12, 48))
    bh = run_backtest(c, buy_and_hold(len(c)))
    return render_report(
        res,
        title="qtrain backtest: BTC-USDT Q-table v3 <&>",
        candles=c,
        bh_equity=bh.equity,
        metrics_table={"qtable": res.metrics, "buy_and_hold": bh.metrics},
        notes=["fee 0.001/side"],
    )


def paper_decisions(n: int = 600, switch: int = 400) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Candles, a backtest standing in for the account, and one decision per candle: version 3
    until ``switch``, then version 4."""
    c = make_candles(n, seed=5)
    res = run_backtest(c, sma_crossover(c.close, 6, 24))
    decisions = [
        {
            "ts": int(t),
            "version": 3 if i < switch else 4,
            "action": int(res.position[i]),
            "confidence": 0.62,
            "score": 0.1,
            "components": {"qtable": 0.2, "technical": -0.1},
            "missing": ["orderbook"],
            "source": "beat",
            "equity": float(res.equity[i]),
        }
        for i, t in enumerate(c.ts)
    ]
    return c, res, decisions


def paper_page() -> str:
    """``qtrain paper report``'s page for the account of ``paper_decisions``."""
    c, res, decisions = paper_decisions()
    return render_report(
        res,
        title="qtrain paper: demo BTC-USDT",
        candles=c,
        metrics_table={"paper": res.metrics},
        decisions=decisions,
        notes=["paper only: no real order was placed; versions used: v3, v4"],
    )


@cache
def scoreboard_board() -> Scoreboard:
    """A walk-forward scoreboard of two symbols (folds of 20 + 10 days), with per-fold equity."""
    records = []
    for symbol, seed in (("BTC-USDT", 3), ("ETH-USDT", 4)):
        c = make_candles(24 * 62, seed=seed, symbol=symbol)
        folds = rolling_folds(
            c.ts, timeframe="1h", train_days=20, test_days=10, since=int(c.ts[0]) + 21 * 86400
        )
        for f in folds:
            curves: dict[str, Any] = {}
            analysed = ms.heuristic_analyses(c, since_ts=f.train_since, until_ts=f.test_since)
            policies = ms.evaluate_fold(c, f, analysed, random_seeds=5, equity=curves)
            policies[EXTRA_POLICY] = dict(policies["qtable"], sharpe=(policies["qtable"]["sharpe"] or 0) - 1)
            curves[EXTRA_POLICY] = curves["qtable"] * 0.99
            rec = ms.fold_record(symbol, f, policies)
            rec["equity"] = equity_record(c.ts[f.test_lo : f.test_hi], curves)
            records.append(rec)
    params = {
        "timeframe": "1h",
        "train_days": 20,
        "test_days": 10,
        "analyst": "heuristic",
        "recipes": ["pooled"],
        "random_seeds": 5,
        "fee": 0.001,
        "seed": 0,
        "window": 48,
        "stride": 24,
    }
    return Scoreboard(folds=records, summary=ms.summarise(records), notes=["a note <b>"], params=params)


def evaluate_page() -> str:
    """``qtrain evaluate --report``'s page for ``scoreboard_board``."""
    return render_scoreboard(scoreboard_board())


PAGES = {"backtest": backtest_page, "paper": paper_page, "evaluate": evaluate_page}
