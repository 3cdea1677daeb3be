"""Look-ahead check: every feature, state and decision is causal; a leaky feature is caught."""

from __future__ import annotations

import numpy as np
import pytest

from model import BUY, SELL, features
from model.analyst import rules
from model.candles import Candles
from model.evaluation.lookahead import check_lookahead, default_cut_points
from model.evaluation.policies import (
    buy_and_hold,
    ensemble_policy,
    qtable_policy,
    random_policy,
    rules_policy,
    sma_crossover,
)
from model.learning import states
from model.market.synthetic import make_candles
from model.trading import ensemble, signals

N = 800
CUTS = tuple(range(60, N, 37)) + (N - 1,)


@pytest.fixture(scope="module")
def candles() -> Candles:
    return make_candles(N, seed=11)


def _toy_state(c: Candles) -> np.ndarray:
    """A causal 4-valued market state (sign of the last two returns), -1 in warm-up."""
    r = np.full(len(c), np.nan)
    r[1:] = np.diff(np.log(c.close))
    prev = np.concatenate(([np.nan], r[:-1]))
    s = (r > 0).astype(int) * 2 + (prev > 0).astype(int)
    return np.where(np.isnan(prev), -1, s)


def _policies(c: Candles) -> dict[str, np.ndarray]:
    q = np.random.default_rng(0).normal(size=(8, 3))
    m = _toy_state(c)
    fired = np.vstack([m == 3, m == 0])
    return {
        "buy_and_hold": buy_and_hold(len(c)),
        "random": random_policy(len(c), seed=5, p_trade=0.1),
        "sma_crossover": sma_crossover(c.close, 5, 20),
        "qtable": qtable_policy(q, m),
        "ensemble": ensemble_policy(np.where(m == 3, BUY, np.where(m == 0, SELL, 0))),
        "rules": rules_policy(fired, np.array([BUY, SELL]), np.array([0.8, 0.6])),
    }


def test_every_policy_is_causal(candles):
    report = check_lookahead(candles, _policies, cut_points=CUTS)
    assert report.ok, report.issues
    assert set(report.names) == {"buy_and_hold", "random", "sma_crossover", "qtable", "ensemble", "rules"}


def _leaky(c: Candles) -> dict[str, np.ndarray]:
    fut = np.full(len(c), np.nan)
    fut[:-1] = c.close[1:]  # close shifted by -1: tomorrow's price today
    centred = np.convolve(c.close, np.ones(5) / 5, mode="same")  # a centred moving average
    return {"close": c.close.copy(), "next_close": fut, "centred_ma": centred}


def test_leaky_features_are_caught(candles):
    report = check_lookahead(candles, _leaky, cut_points=CUTS)
    assert not report.ok
    assert report.bad_names() == ("next_close", "centred_ma")
    issue = report.issues[0]
    assert issue.first_bad_index == CUTS[0] - 1
    assert issue.n_bad == len(CUTS)


def test_leaky_decision_is_caught(candles):
    def peek(c: Candles) -> dict[str, np.ndarray]:
        up_next = np.zeros(len(c), dtype=np.int8)
        up_next[:-1] = c.close[1:] > c.close[:-1]
        return {"peek": up_next}

    assert check_lookahead(candles, peek, cut_points=CUTS).bad_names() == ("peek",)


def test_features_states_and_decisions_are_causal(candles):

    def fn(c: Candles) -> dict[str, np.ndarray]:
        f = features.compute_features(c)
        m = states.StateSpace.default().encode(f)
        q = np.random.default_rng(1).normal(size=(2 * states.StateSpace.default().n_market_states, 3))
        out = {f"feature:{k}": v for k, v in f.items()}
        out["market_state"] = m
        out["qtable_position"] = qtable_policy(q, m)
        return out

    report = check_lookahead(candles, fn, cut_points=CUTS)
    assert report.ok, report.issues
    assert {f"feature:{k}" for k in features.FEATURES} <= set(report.names)


def test_ensemble_and_rule_decisions_are_causal(candles):
    rule_list = [
        rules.Rule((rules.Condition("rsi", "<", 35.0),), BUY, 0.7),
        rules.Rule((rules.Condition("rsi", ">", 65.0), rules.Condition("ret_24", ">", 0.0)), SELL, 0.6),
    ]

    def fn(c: Candles) -> dict[str, np.ndarray]:
        f = features.compute_features(c)
        d = ensemble.FastTradingModel().decide_many(
            technical=signals.technical_score(f), flow=signals.flow_score_from_candles(c).score
        )
        fired = rules.fired(rule_list, f)
        return {
            "ensemble_action": d.action,
            "ensemble_position": ensemble_policy(d.action),
            "fired": fired,
            "rules_position": rules_policy(fired, np.array([BUY, SELL]), np.array([0.7, 0.6])),
        }

    report = check_lookahead(candles, fn, cut_points=CUTS)
    assert report.ok, report.issues


def test_default_cut_points_and_bad_input(candles):
    cuts = default_cut_points(N, n_cuts=10, min_len=50)
    assert cuts[0] == 50 and cuts[-1] == N - 1 and len(cuts) == 10
    with pytest.raises(ValueError, match="cut_points"):
        check_lookahead(candles, _leaky, cut_points=[0])
    with pytest.raises(ValueError, match="length"):
        check_lookahead(candles, lambda c: {"x": np.zeros(3)}, cut_points=[10])
