"""FastTradingModel: weighting, renormalisation over missing components, thresholds, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.trading.ensemble import COMPONENTS, DEFAULT_WEIGHTS, FastTradingModel

score_or_none = st.one_of(st.none(), st.floats(-1.0, 1.0, allow_nan=False))
weight = st.floats(0.0, 10.0, allow_nan=False)


def test_default_weights_and_a_worked_example() -> None:
    model = FastTradingModel()
    assert model.weights == DEFAULT_WEIGHTS
    d = model.decide(technical=0.8, orderbook=-0.6, flow=0.3)
    num = 0.35 * 0.8 - 0.30 * 0.6 + 0.25 * 0.3
    assert d.score == pytest.approx(num / 0.90)
    assert d.confidence == pytest.approx(num / (0.35 * 0.8 + 0.30 * 0.6 + 0.25 * 0.3))
    assert d.action == HOLD  # score 0.19 < 0.2
    assert d.missing == ("qlearning", "llm")
    assert d.weights_used == pytest.approx(
        {"technical": 0.35 / 0.9, "orderbook": 0.3 / 0.9, "flow": 0.25 / 0.9}
    )
    assert d.components == {"technical": 0.8, "orderbook": -0.6, "flow": 0.3}
    assert "qlearning" in d.note and "renormalised" in d.note


def test_missing_components_renormalise() -> None:
    model = FastTradingModel()
    full = model.decide(technical=0.5, orderbook=0.5, flow=0.5, qlearning=0.5)
    no_book = model.decide(technical=0.5, flow=0.5, qlearning=0.5)
    assert full.score == pytest.approx(0.5) and no_book.score == pytest.approx(0.5)
    assert sum(no_book.weights_used.values()) == pytest.approx(1.0)
    assert no_book.weights_used["technical"] == pytest.approx(0.35 / 0.70)
    assert no_book.missing == ("orderbook", "llm")
    assert "orderbook" in no_book.note
    assert full.note == "all weighted components present"
    # NaN means "no data" as well
    nan_book = model.decide(technical=0.5, orderbook=float("nan"), flow=0.5, qlearning=0.5)
    assert nan_book == no_book
    # a missing component does not drag the score to 0 the way a neutral 0.0 would
    assert model.decide(technical=0.5, orderbook=0.0, flow=0.5, qlearning=0.5).score < no_book.score


def test_thresholds_and_min_confidence() -> None:
    model = FastTradingModel(buy_threshold=0.2, sell_threshold=-0.2, min_confidence=0.3)
    assert model.decide(technical=0.2).action == BUY  # score == threshold counts
    assert model.decide(technical=0.19).action == HOLD
    assert model.decide(technical=-0.2).action == SELL
    assert model.decide(technical=-0.5, flow=-0.5).action == SELL
    # score 0.2 reached through disagreement: confidence too low -> HOLD
    split = model.decide(technical=1.0, orderbook=-1.0, flow=1.0, qlearning=-0.9)
    assert split.score >= 0.2 and split.confidence < 0.3 and split.action == HOLD
    assert model.decide(technical=0.0).confidence == 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(*[score_or_none for _ in COMPONENTS]),
    st.tuples(*[weight for _ in COMPONENTS]),
    st.floats(1e-3, 1e3),
)
def test_scaling_all_weights_changes_no_decision(
    scores: tuple[float | None, ...], weights: tuple[float, ...], scale: float
) -> None:
    given_ = dict(zip(COMPONENTS, scores, strict=True))
    w = dict(zip(COMPONENTS, weights, strict=True))
    assume(sum(w[k] for k, v in given_.items() if v is not None) > 1e-6)
    a = FastTradingModel(weights=w).decide(**given_)
    b = FastTradingModel(weights={k: v * scale for k, v in w.items()}).decide(**given_)
    assert b.score == pytest.approx(a.score, abs=1e-12)
    assert b.confidence == pytest.approx(a.confidence, abs=1e-12)
    # away from the exact boundaries (where the last bit of rounding decides), actions agree
    assume(min(abs(a.score - 0.2), abs(a.score + 0.2), abs(a.confidence - 0.3)) > 1e-9)
    assert a.action == b.action
    assert a.weights_used == pytest.approx(b.weights_used)
    assert a.missing == b.missing


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            *[st.lists(st.floats(-1.0, 1.0) | st.just(math.nan), min_size=n, max_size=n) for _ in range(4)]
        )
    )
)
def test_decide_many_matches_decide_row_by_row(cols: tuple[list[float], ...]) -> None:
    model = FastTradingModel()
    names = ("technical", "orderbook", "flow", "qlearning")
    arrays = {k: np.array(v) for k, v in zip(names, cols, strict=True)}
    many = model.decide_many(**arrays)
    assert many.action.dtype == np.int64
    for t in range(len(cols[0])):
        row = {k: float(v[t]) for k, v in arrays.items()}
        if all(math.isnan(v) for v in row.values()):
            assert many.action[t] == HOLD and np.isnan(many.score[t]) and many.confidence[t] == 0.0
            continue
        d = model.decide(**row)
        assert many.action[t] == d.action
        assert many.score[t] == d.score and many.confidence[t] == d.confidence


def test_decide_many_leaves_out_whole_components() -> None:
    model = FastTradingModel()
    tech = np.array([0.5, -0.5, np.nan])
    d = model.decide_many(technical=tech, flow=np.array([0.5, np.nan, np.nan]))
    np.testing.assert_array_equal(d.action, [BUY, SELL, HOLD])
    np.testing.assert_allclose(d.score, [0.5, -0.5, np.nan])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {"technical": -0.1, "flow": 1.0}}, r"weights\['technical'\] is negative"),
        ({"weights": {"sentiment": 1.0}}, "unknown components"),
        ({"weights": {"technical": 0.0}}, "all zero"),
        ({"weights": {"technical": math.inf}}, "finite"),
        ({"buy_threshold": -0.3}, "sell_threshold"),
        ({"min_confidence": 1.5}, "min_confidence"),
    ],
)
def test_bad_configuration_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FastTradingModel(**kwargs)  # type: ignore[arg-type]


def test_bad_calls_rejected() -> None:
    model = FastTradingModel()
    with pytest.raises(ValueError, match="no component with a positive weight"):
        model.decide(llm=0.9)  # llm weighs 0 by default
    with pytest.raises(ValueError, match="no component with a positive weight"):
        model.decide()
    with pytest.raises(ValueError, match=r"flow score must be in \[-1, 1\]"):
        model.decide(technical=0.1, flow=1.5)
    with pytest.raises(ValueError, match="orderbook has scores outside"):
        model.decide_many(technical=np.zeros(2), orderbook=np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="flow must be 1-D with 2 rows"):
        model.decide_many(technical=np.zeros(2), flow=np.zeros(3))
    with pytest.raises(ValueError, match="no component with a positive weight"):
        model.decide_many(llm=np.zeros(3))


def test_end_to_end_with_real_features() -> None:
    """features -> states -> Q-learning -> signals -> ensemble on seeded candles."""
    from model.features import compute_features
    from model.learning.qlearning import FastQLearning
    from model.learning.states import StateSpace
    from model.market.synthetic import make_candles
    from model.trading.signals import flow_score_from_candles, technical_score

    candles = make_candles(2_000, seed=4)
    feats = compute_features(candles)
    space = StateSpace.default()
    m = space.encode(feats)
    warm = np.any(np.vstack([np.isnan(feats[f]) for f in space.features]), axis=0)
    np.testing.assert_array_equal(m == -1, warm)
    assert warm[:40].all() and not warm[100:].any()

    returns = np.full(len(candles), np.nan)
    returns[:-1] = np.diff(np.log(candles.close))
    train = np.arange(len(candles)) < 1_500
    fitted = StateSpace.fit(feats, names=space.features, n_bins=3, train_mask=train)
    mf = fitted.encode(feats)
    learner = FastQLearning(fitted.n_states, seed=1)
    stats = learner.train(np.where(train, mf, -1), returns, epochs=3)
    assert stats.steps == int(np.sum(train & (mf >= 0)))

    tech = technical_score(feats)
    flow = flow_score_from_candles(candles).score
    qs = learner.q_score(mf, 0)
    d = FastTradingModel().decide_many(technical=tech, flow=flow, qlearning=qs)
    assert set(np.unique(d.action)) <= {HOLD, BUY, SELL}
    assert np.all(np.isnan(d.score) | (np.abs(d.score) <= 1.0))
    assert np.isfinite(d.score[100:]).all()
