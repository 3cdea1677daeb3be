"""One symbol, pooled with the other stored symbols or strictly alone (issue 28, item 2).

    python bench/one_symbol_pool.py [--json FILE]      # DATABASE_URL: a database holding the candles

Runs ``qtrain evaluate``'s scoreboard (``worker.evaluation.scoreboard.evaluate``; heuristic
analyst, 182-day train, 91-day test, fee 0.1%, 50 random policies, the default recipe ``pooled``)
once per universe symbol, that symbol alone in the call, twice: with the default pool (every other
symbol stored at the same timeframe that covers the fold's training range; pooled from its
training candles only, unshaped) and with ``--pool none`` (strictly alone). The measurement
database holds what the README's scoreboards read: BTC-USDT, ETH-USDT and the 8 pairs of
``../shared/data/universe`` (1h), so a universe pair's stored others are the 7 other universe pairs
and, where they cover the training range, BTC-USDT and ETH-USDT.

RULE (fixed and committed before the first run; the git history has it before any result):

* Folds: every fold of the 8 universe symbols (CELR, DASH, EOS, ETC, ONE, QTUM, XMR, ZEC; the same
  24 folds for both behaviours). Policy scored: ``qtable`` (the default recipe's table).
* The winner is the behaviour with MORE folds (of 24) whose Sharpe is above the fold's random
  median. Tie: the higher median Sharpe over the 24 folds. Still tied: pooling with the stored
  others (the issue's proposal).
* The winner is the default for a batch, or an evaluate call, of one symbol; the other stays
  reachable with ``--pool``. Reported, not used to decide: folds above buy-and-hold, closed trades
  a fold, median exposure, and the same two runs on BTC-USDT and ETH-USDT.
* Caveat written before: the ``pooled`` parameters were chosen (issue 22) on folds that include
  CELR, EOS, ONE and XMR, pooled with each other; nothing is re-tuned here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.evaluation.scoreboard import summarise  # noqa: E402
from worker.evaluation.scoreboard import EvaluateRequest, evaluate  # noqa: E402

UNIVERSE = ("CELR-USDT", "DASH-USDT", "EOS-USDT", "ETC-USDT", "ONE-USDT", "QTUM-USDT", "XMR-USDT", "ZEC-USDT")
EXTRA = ("BTC-USDT", "ETH-USDT")
BEHAVIOURS = {"stored": None, "alone": ()}  # --pool default / --pool none


def run(url: str, symbols: tuple[str, ...]) -> dict[str, Any]:
    """Per behaviour: every fold's record of each symbol evaluated alone in its call, what it pooled."""
    out: dict[str, Any] = {}
    for name, pool in BEHAVIOURS.items():
        folds: list[dict[str, Any]] = []
        pooled: dict[str, Any] = {}
        for s in symbols:
            board = evaluate(url, EvaluateRequest(symbols=(s,), analyst="heuristic", pool=pool))
            folds.extend({k: v for k, v in f.items() if k != "equity"} for f in board.folds)
            pooled[s] = board.params.get("pooled", {}).get("pooled")
        out[name] = {"folds": folds, "pooled": pooled}
    return out


def score(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """``qtable``'s counts over ``folds`` (the scoreboard's summary) and its median exposure."""
    s = summarise(folds)["qtable"]
    exposure = statistics.median(f["policies"]["qtable"]["exposure_pct"] for f in folds)
    return {**s, "median_exposure_pct": exposure}


def decide(stored: dict[str, Any], alone: dict[str, Any]) -> str:
    """The RULE: more folds above the random median; tie: higher median Sharpe; tie: stored."""
    if stored["beats_random_median"] != alone["beats_random_median"]:
        return "stored" if stored["beats_random_median"] > alone["beats_random_median"] else "alone"
    if stored["median_sharpe"] != alone["median_sharpe"]:
        return "stored" if stored["median_sharpe"] > alone["median_sharpe"] else "alone"
    return "stored"


def main() -> None:
    """Run both behaviours on the universe (the RULE's folds) and on BTC/ETH (reported only)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write every fold's record and the scores here")
    args = ap.parse_args()
    url = os.environ["DATABASE_URL"]
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    for label, symbols in (("universe", UNIVERSE), ("btc_eth", EXTRA)):
        runs = run(url, symbols)
        scores = {name: score(r["folds"]) for name, r in runs.items()}
        result[label] = {"scores": scores, "pooled": {n: r["pooled"] for n, r in runs.items()}, "runs": runs}
        for name, s in scores.items():
            print(
                f"{label:8s} {name:6s}: {s['beats_random_median']}/{s['folds']} above the random median,"
                f" median Sharpe {s['median_sharpe']:+.2f}, {s['beats_buy_and_hold']}/{s['folds']} above"
                f" buy-and-hold, {s['trades_per_fold']:.1f} trades a fold,"
                f" exposure {s['median_exposure_pct']:.0f}%"
            )
    winner = decide(result["universe"]["scores"]["stored"], result["universe"]["scores"]["alone"])
    result["winner"] = winner
    print(f"RULE (universe folds): {winner} wins ({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
