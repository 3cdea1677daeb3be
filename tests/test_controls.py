"""Negative controls (``model.evaluation.controls``): the shuffled control is a seeded derangement of the
batch's own answers inside the training range, the constant one its most common answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.analyst.rules import Condition, Rule
from model.evaluation.controls import (
    CONSTANT,
    CONTROLS,
    SHUFFLED,
    apply,
    common_answer,
    constant,
    control,
    derangement,
    in_range,
    shuffled,
)
from model.learning.training import AnalysedWindow

H = 3600


def window(k: int, action: int, confidence: float, *, size: int = 48, stride: int = 24) -> AnalysedWindow:
    start = 1_600_000_000 + k * stride * H
    rule = Rule((Condition("rsi", "<", float(20 + k)),), action, confidence, f"rule of window {k}")
    return AnalysedWindow(start, start + (size - 1) * H, action, confidence, (rule,))


answers = st.lists(
    st.tuples(st.sampled_from([HOLD, BUY, SELL]), st.sampled_from([0.3, 0.5, 0.55, 0.8, 0.9])),
    min_size=0,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_derangement_has_no_fixed_point_and_is_deterministic(n, seed):
    p = derangement(n, seed=seed)
    assert sorted(p.tolist()) == list(range(n))
    if n >= 2:
        assert not np.any(p == np.arange(n))
    assert np.array_equal(p, derangement(n, seed=seed))


def test_derangement_depends_on_the_seed():
    assert len({tuple(derangement(12, seed=s).tolist()) for s in range(20)}) > 10
    with pytest.raises(ValueError, match="n must be"):
        derangement(-1, seed=0)


@settings(max_examples=150, deadline=None)
@given(
    given_answers=answers,
    seed=st.integers(0, 10_000),
    lo=st.integers(0, 10),
    span=st.integers(0, 40),
    order=st.randoms(use_true_random=False),
)
def test_shuffled_moves_every_answer_off_its_window_inside_the_range(given_answers, seed, lo, span, order):
    analysed = [window(k, a, c) for k, (a, c) in enumerate(given_answers)]
    since, until = 1_600_000_000 + lo * 24 * H, 1_600_000_000 + (lo + span) * 24 * H
    inside = in_range(analysed, since, until)
    got = shuffled(analysed, since=since, until=until, seed=seed)
    # windows keep their positions; only windows that reach the range; nothing from outside moves in
    assert [(w.start_ts, w.end_ts) for w in got] == [(w.start_ts, w.end_ts) for w in inside]
    assert all(w.start_ts < until and w.end_ts >= since for w in got)
    assert sorted(w.rules[0].rationale for w in got) == sorted(w.rules[0].rationale for w in inside)
    if len(inside) >= 2:  # no analysis on its own window (each rule names the window it was written for)
        assert all(g.rules[0].rationale != w.rules[0].rationale for g, w in zip(got, inside, strict=True))
    # deterministic, and the order the windows are given in does not matter
    mixed = list(analysed)
    order.shuffle(mixed)
    assert shuffled(mixed, since=since, until=until, seed=seed) == got


@settings(max_examples=150, deadline=None)
@given(given_answers=answers, order=st.randoms(use_true_random=False))
def test_constant_is_the_most_common_answer_with_ties_to_the_lowest_action(given_answers, order):
    analysed = [window(k, a, c) for k, (a, c) in enumerate(given_answers)]
    since, until = 1_600_000_000, 1_600_000_000 + 10**7
    got = constant(analysed, since=since, until=until)
    assert len(got) == len(analysed)
    if not analysed:
        assert common_answer(analysed) is None
        return
    counts = {a: sum(1 for x, _ in given_answers if x == a) for a in (HOLD, BUY, SELL)}
    mode = min(a for a in counts if counts[a] == max(counts.values()))
    conf = float(np.median([c for a, c in given_answers if a == mode]))
    assert {(w.action, w.confidence, w.rules) for w in got} == {(mode, conf, ())}
    mixed = list(analysed)
    order.shuffle(mixed)
    assert constant(mixed, since=since, until=until) == got


def test_a_tie_goes_to_the_lowest_action_code():
    analysed = [window(0, SELL, 0.9), window(1, BUY, 0.5), window(2, SELL, 0.7), window(3, BUY, 0.6)]
    assert common_answer(analysed) == (BUY, 0.55)
    assert common_answer([window(0, SELL, 0.9), window(1, HOLD, 0.3)]) == (HOLD, 0.3)


def test_control_names_and_per_symbol_application():
    a = [window(k, BUY if k % 3 else SELL, 0.5 + k / 100) for k in range(8)]
    b = [window(k, HOLD, 0.3) for k in range(5)]
    ranges = {"A": (a[0].start_ts, a[-1].end_ts + H), "B": (b[1].start_ts, b[3].end_ts)}
    for name in CONTROLS:
        got = apply(name, {"B": b, "A": a}, ranges, seed=7)
        assert list(got) == ["A", "B"]
        assert got["A"] == control(name, a, since=ranges["A"][0], until=ranges["A"][1], seed=7)
        assert got["B"] == control(name, b, since=ranges["B"][0], until=ranges["B"][1], seed=7)
    assert apply(SHUFFLED, {"A": a}, ranges, seed=7)["A"] != a  # the answers moved
    assert {w.action for w in apply(CONSTANT, {"A": a}, ranges, seed=7)["A"]} == {BUY}
    with pytest.raises(ValueError, match="unknown control"):
        control("reversed", a, since=0, until=1, seed=0)
    with pytest.raises(ValueError, match="no range for C"):
        apply(SHUFFLED, {"C": a}, ranges, seed=0)
    with pytest.raises(ValueError, match="before since"):
        in_range(a, 10, 5)
