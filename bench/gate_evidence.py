"""How much evidence a first real training gives the promotion gate: days and closed trades on the
held-out tail of a batch, per recipe (issue 29: ``QTRAIN_PROMOTION_MIN_DAYS`` / ``_MIN_TRADES``).

Cases: BTC-USDT and ETH-USDT from ``../shared/data`` (the importer's parser), batches of one year
and of six months ending on the first of Jan and Jul 2019-2021 (6 ends x 2 symbols = 12 cases per
length), trained as the reducer does (the first 80% of the range, the default ``--holdout`` 0.2;
both symbols pooled together for ``pooled``; the heuristic analyst's analyses as shaping), and the
table's greedy policy backtested on the tail with the gate's engine (``promotion.tail_metrics``).

The rule, written before any number was seen: the defaults (30 days, 3 closed trades) stand if,
for the ``pooled`` recipe on ONE-YEAR batches (a 73-day tail), the median of the 12 cases' closed
trades is >= 3 and at least 8 of 12 cases have >= 3; otherwise ``DEFAULT_MIN_TRADES`` becomes the
25th percentile of those 12 counts (at least 1). Six-month batches (a 36-day tail) are reported,
not used to choose.

    python bench/gate_evidence.py        # about a minute on 2 cores
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoreboard_research import load  # noqa: E402

from model.candles import Candles  # noqa: E402
from model.evaluation.scoreboard import heuristic_analyses  # noqa: E402
from model.learning.states import StateSpace  # noqa: E402
from model.learning.training import train_pooled, train_qtable  # noqa: E402
from worker.pipeline.promotion import tail_metrics  # noqa: E402

ENDS = [datetime(y, m, 1, tzinfo=UTC) for y in (2019, 2020, 2021) for m in (1, 7)]
HOLDOUT = 0.2
DAY = 86_400


def _cut(c: Candles, since: int, until: int) -> Candles:
    lo, hi = np.searchsorted(c.ts, [since, until])
    return c.slice(int(lo), int(hi))


def cases(days: int, recipe: str) -> list[tuple[str, str, float, int]]:
    """(symbol, end, tail days, closed trades on the tail) of each case."""
    space = StateSpace.default()
    full = {s: load(s.split("-")[0]) for s in ("BTC-USDT", "ETH-USDT")}
    out = []
    for end in ENDS:
        until = int(end.timestamp())
        ranges = {s: _cut(c, until - days * DAY, until) for s, c in full.items()}
        n_train = {s: int(round(len(r) * (1 - HOLDOUT))) for s, r in ranges.items()}
        train_until = min(int(r.ts[n_train[s]]) for s, r in ranges.items())  # the pooled common cut
        trains = {s: _cut(r, int(r.ts[0]), train_until) for s, r in ranges.items()}
        analysed = {s: heuristic_analyses(r, until_ts=train_until) for s, r in ranges.items()}
        if recipe == "pooled":
            tables = {s: t[0] for s, t in train_pooled(trains, analysed, space=space).items()}
        else:
            tables = {
                s: train_qtable(trains[s], analysed[s], space=space, recipe=recipe, seed=1)[0] for s in trains
            }
        for s in ranges:
            ctx = _cut(full[s], train_until - 200 * 3600, until)
            start = int(np.searchsorted(ctx.ts, train_until))
            m = tail_metrics(tables[s].q, space, ctx, start)
            out.append((s, end.date().isoformat(), (until - train_until) / DAY, int(m["n_trades"])))
    return out


def main() -> None:
    for recipe in ("pooled", "sweep"):
        for days in (365, 182):
            rows = cases(days, recipe)
            trades = np.array([t for *_, t in rows])
            tail = np.median([d for _, _, d, _ in rows])
            enough = int((trades >= 3).sum())
            print(
                f"{recipe:7} {days:3}-day batches (tail {tail:.0f} d): closed trades on the tail"
                f" {sorted(trades.tolist())}; median {np.median(trades):g}, >= 3 in {enough}/{len(trades)},"
                f" p25 {np.percentile(trades, 25):g}"
            )


if __name__ == "__main__":
    main()
