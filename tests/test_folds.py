"""Rolling walk-forward folds: back to back, no overlap, trained only on the past, quarter-anchored."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.evaluation.folds import DAY, rolling_folds

HOUR = 3600


def utc(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp())


def hourly(since: str, until: str) -> np.ndarray:
    return np.arange(utc(since), utc(until) + HOUR, HOUR, dtype=np.int64)


def test_shared_files_range_gives_the_26_folds_of_issue_10():
    """BTC/ETH files run 2017-08-17 04:00 .. 2021-06-10 00:00: 13 folds each, tests from 2018-04-01."""
    ts = hourly("2017-08-17T04:00", "2021-06-10T00:00")
    folds = rolling_folds(ts, timeframe="1h")
    assert len(folds) == 13
    assert folds[0].test_since == utc("2018-04-01T00:00") and folds[0].train_since == utc("2017-10-01T00:00")
    assert folds[-1].test_until == utc("2021-06-10T01:00")  # the last test range is cut at the data's end
    assert all(f.test_until - f.test_since == 91 * DAY for f in folds[:-1])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(200, 6000),
    gaps=st.lists(st.tuples(st.integers(0, 5999), st.integers(1, 500)), max_size=5),
    train_days=st.integers(5, 60),
    test_days=st.integers(2, 30),
    offset=st.integers(0, 23),
)
def test_folds_are_back_to_back_and_train_only_on_the_past(n, gaps, train_days, test_days, offset):
    ts = (np.arange(n, dtype=np.int64) + offset) * HOUR + 1_600_000_000 - 1_600_000_000 % DAY
    for at, hours in gaps:  # holes in the data
        ts[min(at, n - 1) :] += hours * HOUR
    folds = rolling_folds(ts, timeframe="1h", train_days=train_days, test_days=test_days, min_candles=1)
    for f in folds:
        assert f.train_until == f.test_since and f.train_hi == f.test_lo
        assert f.test_since - f.train_since == train_days * DAY
        assert f.test_until - f.test_since <= test_days * DAY
        train, test = ts[f.train_lo : f.train_hi], ts[f.test_lo : f.test_hi]
        assert np.all((train >= f.train_since) & (train < f.train_until))
        assert np.all((test >= f.test_since) & (test < f.test_until))
        # every candle of the spans is in the index ranges (nothing dropped or borrowed)
        assert f.n_train == int(((ts >= f.train_since) & (ts < f.train_until)).sum())
        assert f.n_test == int(((ts >= f.test_since) & (ts < f.test_until)).sum())
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test_until <= b.test_since  # no overlap of test ranges
        if a.n_test and b.n_test:
            assert a.test_hi <= b.test_lo


def test_consecutive_folds_with_data_leave_no_candle_untested():
    ts = hourly("2020-01-01T00:00", "2021-12-31T23:00")
    folds = rolling_folds(ts, train_days=100, test_days=30, since=utc("2020-05-01T00:00"))
    assert folds[0].test_since == utc("2020-05-01T00:00")
    assert all(a.test_until == b.test_since for a, b in zip(folds, folds[1:], strict=False))
    tested = np.concatenate([ts[f.test_lo : f.test_hi] for f in folds])
    assert np.array_equal(tested, ts[ts >= utc("2020-05-01T00:00")])


def test_until_cuts_and_short_folds_are_left_out():
    ts = hourly("2020-01-01T00:00", "2021-12-31T23:00")
    folds = rolling_folds(ts, since=utc("2020-07-01T00:00"), until=utc("2021-01-03T00:00"))
    assert [f.test_until for f in folds] == [
        utc("2020-09-30T00:00"),
        utc("2020-12-30T00:00"),
    ]  # 3-day stub < 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"train_days": 0}, "train_days must be an int >= 1"), ({"test_days": 1.5}, "test_days must be an int")],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rolling_folds(hourly("2020-01-01T00:00", "2020-02-01T00:00"), **kwargs)


def test_unsorted_timestamps_are_refused_and_empty_gives_no_folds():
    with pytest.raises(ValueError, match="strictly increasing"):
        rolling_folds(np.array([2 * HOUR, HOUR]))
    assert rolling_folds(np.zeros(0, dtype=np.int64)) == []
