"""``model.trading.live``: the run-time decision is the backtest's ensemble decision, the LLM-rules score,
weights parsing and the rule bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.analyst.rules import Condition, Rule
from model.evaluation.policy_set import policy_positions
from model.features import FEATURES, compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.market.synthetic import make_candles
from model.trading.ensemble import DEFAULT_WEIGHTS
from model.trading.live import (
    AgentConfig,
    Book,
    Brain,
    LiveInputs,
    decide_last,
    newest_rules,
    paper_step,
    parse_weights,
    rules_score,
)


def _brain(seed: int, rules: tuple[Rule, ...] = ()) -> Brain:
    space = StateSpace.default()
    learner = FastQLearning(space.n_states, seed=0)
    learner.q[...] = np.random.default_rng(seed).normal(size=learner.q.shape)
    learner.visits[...] = 1
    return Brain(1, learner, space, rules)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), with_taker=st.booleans())
def test_stepping_one_candle_at_a_time_gives_the_backtest_ensemble_positions(
    seed: int, with_taker: bool
) -> None:
    """The tick's decisions over a growing history equal ``policy_positions``'s vectorised ensemble."""
    ctx = make_candles(170, seed=seed, with_taker=with_taker)
    brain = _brain(seed)
    start = 60
    want = policy_positions(ctx, start=start, learner=brain.learner, space=brain.space, rules=None)
    book = Book(cash=1000.0)
    got = []
    for i in range(start, len(ctx)):
        step = paper_step(book, ctx.slice(0, i + 1), brain, AgentConfig(), fee=0.001)
        book = step.book
        got.append(book.target)
    assert got == want.positions["ensemble"].tolist()


def _rule(feature: str, op: str, value: float, action: int, conf: float) -> Rule:
    return Rule((Condition(feature, op, value),), action, conf)


def test_rules_score_vote_no_rules_and_nothing_fired() -> None:
    feats = {name: np.array([np.nan, 20.0, 50.0, 80.0]) for name in FEATURES}
    rules = (
        _rule("rsi", "<", 30, BUY, 0.8),
        _rule("rsi", ">", 70, SELL, 0.6),
        _rule("rsi", "<", 60, HOLD, 0.2),
    )
    s = rules_score(rules, feats)
    assert s[0] == 0.0  # NaN features fire nothing: no signal
    assert s[1] == pytest.approx(0.8 / 1.0)  # BUY 0.8 and HOLD 0.2 fired
    assert s[2] == 0.0  # only the HOLD rule fired
    assert s[3] == pytest.approx(-1.0)
    assert np.isnan(rules_score((), feats)).all()


@settings(max_examples=50, deadline=None)
@given(
    votes=st.lists(
        st.tuples(st.sampled_from([HOLD, BUY, SELL]), st.floats(0, 1), st.floats(0, 100)),
        min_size=1,
        max_size=12,
    ),
    rsi=st.lists(st.floats(0, 100), min_size=1, max_size=20),
)
def test_rules_score_is_in_range(votes: list[tuple[int, float, float]], rsi: list[float]) -> None:
    rules = tuple(_rule("rsi", "<", v, a, c) for a, c, v in votes)
    s = rules_score(rules, {"rsi": np.array(rsi)})
    assert np.all((s >= -1.0) & (s <= 1.0))


def test_newest_rules_takes_newest_windows_first_and_is_bounded() -> None:
    windows = [(_rule("rsi", "<", float(i), BUY, 0.5),) * 3 for i in range(5)]
    got = newest_rules(windows, 7)
    assert len(got) == 7 and [r.conditions[0].value for r in got] == [4.0] * 3 + [3.0] * 3 + [2.0]
    assert newest_rules(windows, 0) == ()


def test_parse_weights() -> None:
    assert parse_weights("") == DEFAULT_WEIGHTS
    w = parse_weights("llm=0.1, Technical=0.5")
    assert w["llm"] == 0.1 and w["technical"] == 0.5 and w["orderbook"] == DEFAULT_WEIGHTS["orderbook"]
    for bad in ("gamma=1", "llm", "llm=x", "llm=-1", "llm=inf"):
        with pytest.raises(ValueError):
            parse_weights(bad)


def test_live_inputs_enter_the_decision_and_renormalise() -> None:
    ctx = make_candles(120, seed=3)
    brain = _brain(3)
    without = decide_last(ctx, brain, AgentConfig(), position=0)
    assert "orderbook" in without.decision.missing and without.flow_source == "taker_buy"
    full = decide_last(ctx, brain, AgentConfig(), position=0, live=LiveInputs(orderbook=1.0, flow=-1.0))
    d = full.decision
    assert d.missing == ("llm",) and full.flow_source == "trades"
    assert d.components["orderbook"] == 1.0 and d.components["flow"] == -1.0
    assert math.isclose(sum(d.weights_used.values()), 1.0)
    assert d.weights_used["orderbook"] == pytest.approx(0.30)
    # a huge order-book weight makes the book decide
    cfg = AgentConfig(weights={**DEFAULT_WEIGHTS, "orderbook": 100.0})
    assert decide_last(ctx, brain, cfg, position=0, live=LiveInputs(orderbook=1.0)).decision.action == BUY
    assert decide_last(ctx, brain, cfg, position=1, live=LiveInputs(orderbook=-1.0)).decision.action == SELL


def test_warm_up_without_any_component_holds() -> None:
    ctx = make_candles(1, seed=1)
    ctx = ctx.__class__(ctx.ts, ctx.open, ctx.high, ctx.low, ctx.close, np.zeros(1))  # no volume: no flow
    out = decide_last(ctx, _brain(1), AgentConfig(), position=0)
    assert out.decision.action == HOLD and math.isnan(out.decision.score)
    assert compute_features(ctx)["rsi"].shape == (1,)
