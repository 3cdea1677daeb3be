"""Rolling walk-forward folds over one candle series: test ranges back to back, each trained only
on the ``train_days`` before it.

Anchoring: the first test range starts at ``since``; by default at the first UTC calendar-quarter
start (1 Jan, 1 Apr, 1 Jul, 1 Oct) that leaves ``train_days`` of history after the first candle,
so folds fall on the same dates for every symbol and every run (on the shared BTC/ETH files,
which start 2017-08-17: 2018-04-01, the 26 folds of issue 10). Test ranges then follow back to
back every ``test_days`` until ``until`` (default: one candle after the last candle); the last one
is cut at ``until`` and kept when it still has ``min_candles``. Each fold trains on the
``train_days`` before its test range (fewer candles where the data starts later or has gaps).

Spans are in epoch seconds, end exclusive. Index fields are positions in the ``ts`` the folds were
built from: ``train = [train_lo, train_hi)``, ``test = [test_lo, test_hi)`` with
``train_hi == test_lo``. Nothing of a test range is in its training span by construction.

These are the scoreboard's folds (``qtrain evaluate``); ``worker.evaluation.walk_forward`` keeps
the expanding segments of ``qtrain backtest --walk-forward`` on one chosen range (its docstring
says why both exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from model.candles import timeframe_seconds

DAY = 86_400
DEFAULT_TRAIN_DAYS = 182
DEFAULT_TEST_DAYS = 91


@dataclass(frozen=True)
class Fold:
    """One fold: its train and test spans (epoch s, end exclusive) and their index ranges."""

    train_since: int
    train_until: int
    test_since: int
    test_until: int
    train_lo: int
    train_hi: int
    test_lo: int
    test_hi: int

    @property
    def n_train(self) -> int:
        """Training candles in the fold."""
        return self.train_hi - self.train_lo

    @property
    def n_test(self) -> int:
        """Test candles in the fold."""
        return self.test_hi - self.test_lo


def rolling_folds(
    ts: NDArray[np.integer],
    *,
    timeframe: str = "1h",
    train_days: int = DEFAULT_TRAIN_DAYS,
    test_days: int = DEFAULT_TEST_DAYS,
    since: int | None = None,
    until: int | None = None,
    min_candles: int = 100,
) -> list[Fold]:
    """The folds of the module docstring, oldest first; folds with fewer than ``min_candles`` train
    or test candles (a long gap in the data) are left out. ``ts`` ascending epoch seconds."""
    for name, value in (("train_days", train_days), ("test_days", test_days)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    step = timeframe_seconds(timeframe)
    t = np.asarray(ts, dtype=np.int64)
    if t.ndim != 1:
        raise ValueError(f"ts must be 1-D, got shape {t.shape}")
    if t.size == 0:
        return []
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("ts must be strictly increasing (sorted, de-duplicated candles)")
    train_s, test_s = int(train_days) * DAY, int(test_days) * DAY
    start = quarter_start_after(int(t[0]) + train_s) if since is None else int(since)
    end = int(t[-1]) + step if until is None else int(until)
    folds: list[Fold] = []
    test_since = start
    while test_since < end:
        test_until = min(test_since + test_s, end)
        train_since = test_since - train_s
        lo, mid, hi = (int(x) for x in np.searchsorted(t, [train_since, test_since, test_until], side="left"))
        if mid - lo >= min_candles and hi - mid >= min_candles:
            folds.append(Fold(train_since, test_since, test_since, test_until, lo, mid, mid, hi))
        test_since = test_until
    return folds


def quarter_start_after(ts: int) -> int:
    """The first UTC calendar-quarter start (1 Jan/Apr/Jul/Oct 00:00) at or after epoch ``ts``."""
    d = datetime.fromtimestamp(ts, tz=UTC)
    q = datetime(d.year, 3 * ((d.month - 1) // 3) + 1, 1, tzinfo=UTC)
    if q.timestamp() < ts:
        month = q.month + 3
        q = datetime(q.year + (month > 12), (month - 1) % 12 + 1, 1, tzinfo=UTC)
    return int(q.timestamp())
