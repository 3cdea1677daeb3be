"""Volatility sizing's kernel (``model.trading.sizing``): sizes in [floor, 1], nothing read from later
candles, the band, and one clear error per bad parameter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.market.synthetic import make_candles
from model.trading.sizing import VolSizing, held_fractions, target_sizes, trailing_sigma

SIZING = VolSizing()


def test_trailing_sigma_reads_no_later_candle_and_matches_the_definition():
    close = make_candles(600, seed=3).close
    sig = trailing_sigma(close, 24)
    assert np.isnan(sig[:24]).all() and np.isfinite(sig[24:]).all()
    r = np.diff(np.log(close))
    assert sig[100] == pytest.approx(np.std(r[76:100], ddof=1), rel=1e-12)
    cut = trailing_sigma(close[:301], 24)
    np.testing.assert_array_equal(cut, sig[:301])  # the future changes nothing before it


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 1), min_size=1, max_size=200),
    st.floats(0.0001, 0.1),
    st.lists(st.floats(0.00001, 1.0), min_size=200, max_size=200),
)
def test_held_fractions_are_zero_when_flat_in_floor_one_when_long_and_keep_the_band(pos, ref, sig):
    positions = np.array(pos)
    targets = target_sizes(np.array(sig[: len(pos)]), ref, SIZING)
    assert ((targets >= SIZING.floor) & (targets <= 1.0)).all()
    w = held_fractions(positions, targets, SIZING)
    assert (w[positions == 0] == 0).all()
    assert ((w[positions == 1] >= SIZING.floor) & (w[positions == 1] <= 1.0)).all()
    for t in range(1, len(w)):
        if positions[t] == 1 and positions[t - 1] == 1 and w[t] != w[t - 1]:
            assert abs(targets[t] - w[t - 1]) > SIZING.band and w[t] == targets[t]  # a rebalance: out of band
        if positions[t] == 1 and positions[t - 1] == 0:
            assert w[t] == targets[t]  # an entry buys the target


def test_unknown_volatility_sizes_one_and_bad_parameters_say_which():
    assert (target_sizes(np.array([np.nan, 0.01]), float("nan"), SIZING) == 1.0).all()
    assert target_sizes(np.array([np.nan, 0.04]), 0.01, SIZING).tolist() == [1.0, 0.25]
    for kw, says in (({"lookback": 1}, "lookback"), ({"floor": 0.0}, "floor"), ({"band": 1.0}, "band")):
        with pytest.raises(ValueError, match=says):
            VolSizing(**kw)
    with pytest.raises(ValueError, match="one shape"):
        held_fractions(np.zeros(3, dtype=int), np.ones(4), SIZING)
