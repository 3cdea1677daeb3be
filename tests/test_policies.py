"""Policies: the vectorised position scan against a loop, and each generator's semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model import BUY, HOLD, SELL
from model.evaluation.policies import (
    compose_position_maps,
    positions_from_actions,
    qtable_policy,
    random_policy,
    rules_actions,
    sma,
    sma_crossover,
)


def _loop(f0, f1, initial):
    pos, out = initial, []
    for a, b in zip(f0, f1, strict=True):
        pos = int(a) if pos == 0 else int(b)
        out.append(pos)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=80), st.integers(0, 1))
def test_scan_equals_loop(maps, initial):
    f0 = np.array([m[0] for m in maps], dtype=bool)
    f1 = np.array([m[1] for m in maps], dtype=bool)
    assert compose_position_maps(f0, f1, initial=initial).tolist() == _loop(f0, f1, initial)


def test_positions_from_actions():
    a = np.array([HOLD, BUY, HOLD, BUY, SELL, HOLD, SELL, BUY])
    assert positions_from_actions(a).tolist() == [0, 1, 1, 1, 0, 0, 0, 1]
    assert positions_from_actions(np.array([HOLD, HOLD]), initial=1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="actions"):
        positions_from_actions(np.array([3]))


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, (6, 3), elements=st.floats(-1, 1)),
    st.lists(st.integers(-1, 2), max_size=60),
)
def test_qtable_policy_equals_greedy_loop(q, market):
    m = np.array(market, dtype=np.int64)
    pos, want = 0, []
    for s in m:
        if s >= 0:
            a = int(np.argmax(q[s * 2 + pos]))
            pos = 1 if a == BUY else 0 if a == SELL else pos
        want.append(pos)
    assert qtable_policy(q, m).tolist() == want


def test_qtable_policy_checks_shapes():
    with pytest.raises(ValueError, match="q must"):
        qtable_policy(np.zeros((3, 3)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="market_states"):
        qtable_policy(np.zeros((4, 3)), np.array([2]))


def test_random_policy_is_seeded_and_prefix_stable():
    a = random_policy(1000, seed=3, p_trade=0.1)
    assert np.array_equal(a, random_policy(1000, seed=3, p_trade=0.1))
    assert np.array_equal(a[:400], random_policy(400, seed=3, p_trade=0.1))
    assert not np.array_equal(a, random_policy(1000, seed=4, p_trade=0.1))
    assert 0.2 < a.mean() < 0.8
    assert random_policy(100, seed=1, p_trade=0.0).sum() == 0


def test_sma_and_crossover():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(sma(x, 2), [np.nan, 1.5, 2.5, 3.5])
    close = np.array([5, 4, 3, 2, 3, 4, 5, 6, 5, 4, 3, 2], dtype=float)
    pos = sma_crossover(close, 1, 3)
    fast, slow = close, sma(close, 3)
    want, p = [], 0
    for t in range(len(close)):
        if t and fast[t - 1] < slow[t - 1] and fast[t] > slow[t]:
            p = 1
        elif t and fast[t - 1] > slow[t - 1] and fast[t] < slow[t]:
            p = 0
        want.append(p)
    assert pos.tolist() == want and 0 < sum(want) < len(want)


def test_rules_vote():
    fired = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=bool)
    acts = rules_actions(fired, np.array([BUY, SELL]), np.array([0.7, 0.5]))
    assert acts.tolist() == [BUY, BUY, SELL, HOLD]
    acts = rules_actions(fired, np.array([BUY, SELL]), np.array([0.7, 0.5]), threshold=0.3)
    assert acts.tolist() == [BUY, HOLD, SELL, HOLD]
