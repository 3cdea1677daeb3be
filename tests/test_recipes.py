"""Training recipes: the registry, today's learner unchanged, and the counterfactual sweeps
(against a plain-loop reference, deterministic, learning a known edge, holding on pure noise)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.evaluation.policies import qtable_policy
from model.features import compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.learning.sweep import value_iteration
from model.learning.training import (
    DEFAULT_RECIPE,
    RECIPES,
    AnalysedWindow,
    QLearningRecipe,
    SweepRecipe,
    get_recipe,
    recipe_metadata,
    train_qtable,
    training_data,
)
from model.market.synthetic import make_candles

SPACE = StateSpace.default()


def reference_sweeps(m, r, sh, *, n_market, gamma, cost, k, sweeps):
    """Value iteration of ``model.learning.sweep`` written as plain loops over candles (the obvious way)."""
    q = np.zeros((n_market, 2, 3))
    valid = [t for t in range(len(m)) if m[t] >= 0 and np.isfinite(r[t])]
    for _ in range(sweeps):
        v = q.max(axis=2)
        tot = np.zeros((n_market, 2))
        cnt = np.zeros(n_market)
        shs = np.zeros((n_market, 3))
        pooled = np.zeros(2)
        for t in valid:
            nxt = m[t + 1] if t + 1 < len(m) and t + 1 in valid else -1
            for p in (0, 1):
                cont = gamma * v[nxt, p] if nxt >= 0 else 0.0
                tot[m[t], p] += p * r[t] + cont
                pooled[p] += cont
            cnt[m[t]] += 1
            shs[m[t]] += sh[t]
        pooled /= max(len(valid), 1)
        new = np.zeros_like(q)
        for s in range(n_market):
            u = (tot[s] + k * pooled) / (cnt[s] + k) if cnt[s] + k > 0 else pooled
            sbar = shs[s] / (cnt[s] + k) if cnt[s] + k > 0 else np.zeros(3)
            for p in (0, 1):
                for a, p2 in ((HOLD, p), (BUY, 1), (SELL, 0)):
                    new[s, p, a] = u[p2] + sbar[a] - cost * abs(p2 - p)
        q = new
    return q.reshape(n_market * 2, 3)


def blocks_market(n: int, edge: float, *, seed: int = 0, block: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Two persistent market states in blocks of ``block`` candles: state 0 rises by ``edge`` per
    candle on average, state 1 falls by ``edge``; noise of 1 % per candle."""
    rng = np.random.default_rng(seed)
    m = np.repeat(rng.integers(0, 2, n // block + 1), block)[:n].astype(np.int64)
    r = np.where(m == 0, edge, -edge) + rng.normal(0.0, 0.01, n)
    return m, r


def trades_of(q: np.ndarray, m: np.ndarray) -> int:
    """Position changes of the greedy policy of ``q`` on states ``m``."""
    pos = qtable_policy(q, m)
    return int(np.abs(np.diff(np.concatenate(([0], pos)))).sum())


# ---------------------------------------------------------------- registry


def test_registry_defaults_and_metadata():
    assert set(RECIPES) == {"qlearning", "sweep", "pooled"} and DEFAULT_RECIPE == "pooled"
    assert isinstance(RECIPES["qlearning"], QLearningRecipe) and isinstance(RECIPES["sweep"], SweepRecipe)
    meta = recipe_metadata("sweep", turnover_cost=0.004)
    assert meta["name"] == "sweep" and meta["params"]["turnover_cost"] == 0.004
    assert json.loads(json.dumps(meta)) == meta
    assert recipe_metadata(RECIPES["qlearning"]) == {
        "name": "qlearning",
        "params": dataclasses.asdict(QLearningRecipe()),
    }


@pytest.mark.parametrize(
    ("recipe", "overrides", "message"),
    [
        ("nope", {}, "unknown recipe 'nope'"),
        ("sweep", {"alpha": 0.1}, "recipe 'sweep' has no parameter alpha"),
        ("qlearning", {"prior_strength": 1.0}, "recipe 'qlearning' has no parameter prior_strength"),
        (3, {}, "recipe must be a recipe name"),
    ],
)
def test_bad_recipe_names_the_problem(recipe, overrides, message):
    with pytest.raises(ValueError, match=message):
        get_recipe(recipe, **overrides)


# ---------------------------------------------------------------- qlearning unchanged


def test_qlearning_recipe_is_fastqlearning_train_byte_for_byte():
    """Recipe 'qlearning' trains exactly as ``FastQLearning.train`` with the old defaults did."""
    c = make_candles(600, seed=3)
    analysed = [AnalysedWindow(int(c.ts[100]), int(c.ts[147]), BUY, 0.7, ())]
    table, stats, data = train_qtable(c, analysed, space=SPACE, recipe="qlearning", epochs=3, seed=11)
    ref = FastQLearning(
        SPACE.n_states, seed=11, alpha=0.1, gamma=0.95, epsilon_start=1.0, epsilon_end=0.05, fee=0.001
    )
    ref_data = training_data(c, analysed, space=SPACE, kappa=0.5)
    ref.train(ref_data.states, ref_data.returns, epochs=3, shaping=ref_data.shaping)
    assert table.checksum() == ref.checksum() and stats.epochs == 3 and data.n_windows == 1


# ---------------------------------------------------------------- sweeps


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 60),
    n_market=st.integers(1, 5),
    gamma=st.sampled_from([0.0, 0.5, 0.9]),
    cost=st.sampled_from([0.0, 0.001, 0.01]),
    k=st.sampled_from([0.0, 1.0, 5.0]),
)
def test_value_iteration_equals_a_plain_loop(seed, n, n_market, gamma, cost, k):
    rng = np.random.default_rng(seed)
    m = rng.integers(-1, n_market, n)
    r = rng.normal(0.0, 0.01, n)
    r[rng.random(n) < 0.1] = np.nan
    sh = rng.normal(0.0, 0.001, (n, 3))
    q, visits, stats = value_iteration(
        m, r, sh, n_market=n_market, gamma=gamma, turnover_cost=cost, prior_strength=k, tol=0.0, max_sweeps=40
    )
    ref = reference_sweeps(m, r, sh, n_market=n_market, gamma=gamma, cost=cost, k=k, sweeps=40)
    np.testing.assert_allclose(q, ref, rtol=1e-9, atol=1e-12)
    counts = np.bincount(m[(m >= 0) & np.isfinite(r)], minlength=n_market)
    assert (visits.reshape(n_market, 6) == counts[:, None]).all() and stats.sweeps <= 40


@pytest.mark.parametrize("recipe", ["sweep", "pooled"])
def test_sweep_is_deterministic_and_ignores_the_seed(recipe):
    c = make_candles(1500, seed=5)
    a, stats, _ = train_qtable(c, [], space=SPACE, recipe=recipe)
    b, _, _ = train_qtable(c, [], space=SPACE, recipe=recipe, seed=99, epochs=7)
    assert stats.converged
    meta = {"symbol": "BTC-USDT", "timeframe": "1h", "state_space": SPACE.to_json()}
    assert a.to_bytes(meta) == b.to_bytes(meta)  # same file bytes whatever the seed
    assert a.q.tobytes() == b.q.tobytes() and a.visits.tobytes() == b.visits.tobytes()


def test_sweep_learns_a_known_edge():
    """A market whose state tells the next candle's direction (0.3 %/candle, noise 1 %): long in the
    rising state, flat in the falling one, and few trades (it waits for the state to change)."""
    m, r = blocks_market(4000, 0.003)
    q, _, _ = value_iteration(
        m, r, np.zeros((len(m), 3)), n_market=2, gamma=0.9, turnover_cost=0.003, prior_strength=5.0
    )
    best = q.reshape(2, 2, 3).argmax(axis=2)
    assert best[0, 0] == BUY and best[0, 1] == HOLD  # rising state: buy when flat, keep when long
    assert best[1, 1] == SELL and best[1, 0] in (HOLD, SELL)  # falling state: sell when long
    m_test, _ = blocks_market(2000, 0.003, seed=1)
    assert trades_of(q, m_test) <= 2 * (np.diff(m_test) != 0).sum() + 1


def noise_states(rng: np.random.Generator, n: int, n_market: int) -> np.ndarray:
    """Market states in runs of 1.5 candles on average (as the default space's on BTC 1h)."""
    runs = rng.geometric(1 / 1.5, n)
    return np.repeat(rng.integers(0, n_market, n), runs)[:n].astype(np.int64)


def noise_trades(seed: int) -> tuple[int, int]:
    """Test-range trades of the default sweep and of the unshrunk argmax at the real fee, both
    trained on pure noise: 1 % returns independent of the state, 182 days of hourly candles over
    60 states (~73 candles each, the median of the real folds), tested on 91 fresh days."""
    rng = np.random.default_rng(seed)
    n, n_market = 4368, 60
    m = noise_states(rng, n, n_market)
    r = rng.normal(0.0, 0.01, n)
    zero = np.zeros((n, 3))
    rec = RECIPES["sweep"]
    q, _, _ = value_iteration(
        m,
        r,
        zero,
        n_market=n_market,
        gamma=rec.gamma,
        turnover_cost=rec.turnover_cost,
        prior_strength=rec.prior_strength,
    )
    raw, _, _ = value_iteration(
        m, r, zero, n_market=n_market, gamma=rec.gamma, turnover_cost=0.001, prior_strength=0.0
    )
    m_test = noise_states(rng, 2184, n_market)
    return trades_of(q, m_test), trades_of(raw, m_test)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_sweep_on_pure_noise_churns_far_less_than_the_raw_argmax(seed):
    shrunk, raw = noise_trades(seed)
    assert shrunk <= raw / 3 and shrunk <= 0.05 * 2184


def test_sweep_on_pure_noise_mostly_holds():
    """Over 40 noise markets the default sweep's median is at most 1 % of the candles with a trade
    (typically it holds throughout; the unshrunk argmax trades on ~18 %)."""
    shrunk = [noise_trades(seed)[0] for seed in range(40)]
    assert np.median(shrunk) <= 0.01 * 2184


def test_unseen_states_hold_and_more_prior_shrinks_the_edge():
    """A state never seen in training gets the prior exactly (HOLD in both positions); with gamma 0
    a seen state's long-minus-flat value is its return sum over (n + prior_strength)."""
    m = np.array([0, 0, 0, 1, 1, -1], dtype=np.int64)
    r = np.array([0.01, 0.02, 0.0, -0.01, 0.005, np.nan])
    zero = np.zeros((len(m), 3))
    for k in (0.0, 2.0, 10.0):
        q, _, _ = value_iteration(m, r, zero, n_market=3, gamma=0.0, turnover_cost=0.0, prior_strength=k)
        q3 = q.reshape(3, 2, 3)
        assert (q3[2].argmax(axis=1) == HOLD).all() and np.all(q3[2] == q3[2, 0, 0])
        assert q3[0, 0, BUY] - q3[0, 0, HOLD] == pytest.approx(0.03 / (3 + k))
        assert q3[1, 1, SELL] - q3[1, 1, HOLD] == pytest.approx(0.005 / (2 + k))


def test_sweep_overrides_apply_and_stats_serialise():
    c = make_candles(800, seed=8)
    loose, stats, _ = train_qtable(c, [], space=SPACE, recipe="sweep", turnover_cost=0.0, prior_strength=0.0)
    tight, _, _ = train_qtable(c, [], space=SPACE, recipe="sweep", turnover_cost=0.05)
    m = SPACE.encode(compute_features(c))
    assert trades_of(tight.q, m) <= trades_of(loose.q, m)
    assert json.loads(json.dumps(stats.to_json()))["warm_start_used"] is False
    with pytest.raises(ValueError, match="gamma must be in"):
        train_qtable(c, [], space=SPACE, recipe="sweep", gamma=1.0)
