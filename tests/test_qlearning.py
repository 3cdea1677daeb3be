"""FastQLearning: learns known optimal policies, is deterministic, saves and loads safely."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from model import BUY, HOLD, SELL
from model.learning.qlearning import FORMAT_VERSION, FastQLearning
from model.learning.states import StateSpace

# ---------------------------------------------------------------- helpers


def parity_market(n: int, move: float) -> tuple[np.ndarray, np.ndarray]:
    """State = parity of t; the price rises over even candles and falls over odd ones."""
    t = np.arange(n)
    returns = np.where(t % 2 == 0, move, -move)
    returns[-1] = np.nan  # the last candle's next close is unknown
    return (t % 2).astype(np.int64), returns


def space_for(n_market: int) -> StateSpace:
    """A one-feature state space with ``n_market`` bins (for metadata)."""
    return StateSpace(("x",), (np.arange(n_market - 1, dtype=np.float64),))


def meta_for(learner: FastQLearning) -> dict[str, object]:
    return {
        "symbol": "BTC-USDT",
        "timeframe": "1h",
        "state_space": space_for(learner.n_market_states).to_json(),
    }


def trained(seed: int = 7, n: int = 500, n_market: int = 6) -> FastQLearning:
    rng = np.random.default_rng(123)
    m = rng.integers(-1, n_market, n)
    r = rng.normal(0.0, 0.01, n)
    sh = rng.normal(0.0, 0.001, (n, 3))
    learner = FastQLearning(2 * n_market, seed=seed)
    learner.train(m, r, epochs=5, shaping=sh)
    return learner


def reference_q(
    m: np.ndarray,
    r: np.ndarray,
    sh: np.ndarray,
    *,
    n_states: int,
    epochs: int,
    alpha: float,
    gamma: float,
    eps0: float,
    eps1: float,
    fee: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward re-implementation of the documented algorithm, for comparison."""
    q = np.zeros((n_states, 3))
    visits = np.zeros((n_states, 3), dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(m)
    valid = [m[t] >= 0 and np.isfinite(r[t]) for t in range(n)]
    for eps in np.linspace(eps0, eps1, epochs):
        u = rng.random(n)
        ra = rng.integers(0, 3, n)
        pos = 0
        for t in range(n):
            if not valid[t]:
                continue
            s = m[t] * 2 + pos
            a = int(ra[t]) if u[t] < eps else int(np.argmax(q[s]))
            new_pos = {HOLD: pos, BUY: 1, SELL: 0}[a]
            reward = new_pos * r[t] - fee * abs(new_pos - pos) + sh[t, a]
            if t + 1 < n and valid[t + 1]:
                target = reward + gamma * q[m[t + 1] * 2 + new_pos].max()
            else:
                target = reward
            q[s, a] += alpha * (target - q[s, a])
            visits[s, a] += 1
            pos = new_pos
    return q, visits


def resulting_position(action: int, pos: int) -> int:
    return {HOLD: pos, BUY: 1, SELL: 0}[action]


# ---------------------------------------------------------------- learning


def test_learns_to_trade_a_move_larger_than_fees() -> None:
    m, r = parity_market(400, move=0.01)
    learner = FastQLearning(4, alpha=0.1, gamma=0.9, fee=0.001, seed=1)
    learner.train(m, r, epochs=60)
    greedy = learner.greedy_actions(np.array([0, 1]))  # rows: even (rising next), odd (falling next)
    # before a rise: be long from either position; before a fall: be flat from either position
    assert greedy[0, 0] == BUY
    assert resulting_position(int(greedy[0, 1]), 1) == 1
    assert greedy[1, 1] == SELL
    assert resulting_position(int(greedy[1, 0]), 0) == 0


def test_stays_put_when_fees_exceed_the_move() -> None:
    m, r = parity_market(400, move=0.001)
    learner = FastQLearning(4, alpha=0.1, gamma=0.9, fee=0.005, seed=1)
    learner.train(m, r, epochs=60)
    greedy = learner.greedy_actions(np.array([0, 1]))
    for parity in (0, 1):
        for pos in (0, 1):  # never pay a fee: keep whatever position you have
            assert resulting_position(int(greedy[parity, pos]), pos) == pos, (parity, pos, learner.q)


def test_matches_reference_implementation() -> None:
    rng = np.random.default_rng(5)
    n, n_market = 300, 4
    m = rng.integers(-1, n_market, n)
    r = rng.normal(0.0, 0.01, n)
    r[rng.random(n) < 0.05] = np.nan
    sh = rng.normal(0.0, 0.002, (n, 3))
    kw = {"alpha": 0.2, "gamma": 0.9, "fee": 0.002, "seed": 11}
    learner = FastQLearning(2 * n_market, epsilon_start=0.9, epsilon_end=0.1, **kw)  # type: ignore[arg-type]
    stats = learner.train(m, r, epochs=4, shaping=sh)
    q, visits = reference_q(
        m,
        r,
        sh,
        n_states=2 * n_market,
        epochs=4,
        alpha=0.2,
        gamma=0.9,
        eps0=0.9,
        eps1=0.1,
        fee=0.002,
        seed=11,
    )
    np.testing.assert_allclose(learner.q, q, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(learner.visits, visits)
    assert stats.steps == int(np.sum((m >= 0) & np.isfinite(r)))
    assert stats.steps + stats.skipped == n
    assert stats.epsilons == pytest.approx((0.9, 0.6333333, 0.3666667, 0.1), abs=1e-6)


def test_reward_formula_by_hand() -> None:
    """Pure greedy, alpha 1: the table holds the last reward of each tried (state, action)."""
    m = np.array([0, -1])
    r = np.array([0.02, np.nan])
    sh = np.array([[-1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    learner = FastQLearning(2, alpha=1.0, gamma=0.9, epsilon_start=0.0, epsilon_end=0.0, fee=0.001)
    learner.train(m, r, epochs=2, shaping=sh)
    # epoch 1: all-zero row -> HOLD (lowest index), reward -1; epoch 2: BUY wins the tie with SELL
    np.testing.assert_allclose(learner.q[0], [-1.0, 0.02 - 0.001 + 0.5, 0.0])
    np.testing.assert_array_equal(learner.visits, [[1, 1, 0], [0, 0, 0]])


def test_same_seed_same_bytes_different_seed_differs() -> None:
    a, b, c = trained(seed=7), trained(seed=7), trained(seed=8)
    assert a.q.tobytes() == b.q.tobytes()
    assert a.visits.tobytes() == b.visits.tobytes()
    assert a.q.tobytes() != c.q.tobytes()


def test_greedy_actions_and_q_score() -> None:
    learner = trained()
    m = np.array([-1, 0, 1, 2, 3, 4, 5])
    g = learner.greedy_actions(m)
    assert g.shape == (7, 2) and g.dtype == np.int64
    assert np.all(g[0] == HOLD)
    for row, state in enumerate(m[1:], start=1):
        for pos in (0, 1):
            assert g[row, pos] == int(np.argmax(learner.q[state * 2 + pos]))
    for pos in (0, 1):
        s = learner.q_score(m, pos)
        assert np.isnan(s[0])
        assert np.all(np.abs(s[1:]) <= 1.0)
        diff = learner.q[m[1:] * 2 + pos, BUY] - learner.q[m[1:] * 2 + pos, SELL]
        np.testing.assert_array_equal(np.sign(s[1:]), np.sign(diff))
    assert np.all(FastQLearning(4).q_score(np.array([0, 1]), 0) == 0.0)  # untrained: no opinion


def test_ten_epochs_of_36000_steps_visit_every_step() -> None:
    """Every valid step is one update per epoch (speed is measured in bench/bench_learning.py)."""
    rng = np.random.default_rng(0)
    m = rng.integers(0, 960, 36_000)
    r = rng.normal(0.0, 0.01, 36_000)
    learner = FastQLearning(1920)
    stats = learner.train(m, r, epochs=10)
    assert stats.steps == 36_000 and int(learner.visits.sum()) == 360_000


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.array([0, 2]), np.zeros(2)), {"epochs": 1}, r"market_states must be in \[0, 2\)"),
        ((np.array([0, 1]), np.zeros(3)), {"epochs": 1}, "returns must have shape"),
        ((np.array([0.0, 1.0]), np.zeros(2)), {"epochs": 1}, "integer"),
        ((np.array([0, 1]), np.zeros(2)), {"epochs": 0}, "epochs"),
        (
            (np.array([0, 1]), np.zeros(2)),
            {"epochs": 1, "shaping": np.zeros((2, 2))},
            "shaping must have shape",
        ),
        (
            (np.array([0, 1]), np.zeros(2)),
            {"epochs": 1, "shaping": np.full((2, 3), np.nan)},
            "shaping contains NaN",
        ),
    ],
)
def test_train_rejects_bad_input(args: tuple[np.ndarray, ...], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FastQLearning(4).train(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_states": 3}, "n_states"),
        ({"n_states": 4, "alpha": 0.0}, "alpha"),
        ({"n_states": 4, "gamma": 1.5}, "gamma"),
        ({"n_states": 4, "fee": -0.1}, "fee"),
        ({"n_states": 4, "seed": -1}, "seed"),
    ],
)
def test_constructor_rejects_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FastQLearning(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip_is_byte_identical(tmp_path: Path) -> None:
    learner = trained()
    meta = meta_for(learner)
    path = learner.save(tmp_path / "fast_model_BTC-USDT.npz", meta)
    loaded, meta2 = FastQLearning.load(path)
    assert loaded.q.tobytes() == learner.q.tobytes()
    assert loaded.visits.tobytes() == learner.visits.tobytes()
    assert loaded.hyperparameters() == learner.hyperparameters()
    assert meta2["symbol"] == "BTC-USDT" and meta2["timeframe"] == "1h"
    assert meta2["format_version"] == FORMAT_VERSION
    assert meta2["sha256"] == hashlib.sha256(learner.q.tobytes() + learner.visits.tobytes()).hexdigest()
    assert StateSpace.from_json(meta2["state_space"]) == space_for(learner.n_market_states)
    assert json.loads(path.with_suffix(".json").read_text()) == meta2  # the sidecar
    again = loaded.save(tmp_path / "again.npz", meta)
    assert again.read_bytes() == path.read_bytes()
    assert loaded.to_bytes(meta) == learner.to_bytes(meta)
    # a plain numpy reader sees three ordinary arrays
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["meta", "q", "visits"]


def rewrite(blob: bytes, **changes: object) -> bytes:
    """The .npz ``blob`` with arrays replaced or meta keys changed (``meta_<key>=value``)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    for key, value in changes.items():
        if key.startswith("meta_"):
            meta[key[5:]] = value
        else:
            arrays[key] = value  # type: ignore[assignment]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_load_errors_say_what_is_wrong(tmp_path: Path) -> None:
    learner = trained()
    blob = learner.to_bytes(meta_for(learner))
    assert (
        FastQLearning.from_bytes(rewrite(blob))[0].q.tobytes() == learner.q.tobytes()
    )  # rewrite is faithful

    with pytest.raises(ValueError, match="format_version 99, this qtrain reads 1"):
        FastQLearning.from_bytes(rewrite(blob, meta_format_version=99))
    tampered = learner.q.copy()
    tampered[0, 0] += 1e-9
    with pytest.raises(ValueError, match="checksum mismatch"):
        FastQLearning.from_bytes(rewrite(blob, q=tampered))
    more_visits = learner.visits.copy()
    more_visits[-1, -1] += 1
    with pytest.raises(ValueError, match="checksum mismatch"):
        FastQLearning.from_bytes(rewrite(blob, visits=more_visits))
    with pytest.raises(ValueError, match=r"q must be float64 \[n_states, 3\]"):
        FastQLearning.from_bytes(rewrite(blob, q=np.zeros((12, 4))))
    with pytest.raises(ValueError, match="visits must be int64"):
        FastQLearning.from_bytes(rewrite(blob, visits=np.zeros((12, 3))))
    with pytest.raises(ValueError, match="q has 8 rows but metadata says n_states=12"):
        FastQLearning.from_bytes(rewrite(blob, q=np.zeros((8, 3)), visits=np.zeros((8, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match="state_space has 4 states but q has 12 rows"):
        FastQLearning.from_bytes(rewrite(blob, meta_state_space=space_for(2).to_json()))
    with pytest.raises(ValueError, match="lacks arrays"):
        out = io.BytesIO()
        np.savez(out, q=learner.q)
        FastQLearning.from_bytes(out.getvalue())
    with pytest.raises(ValueError, match="not a readable .npz"):
        out = io.BytesIO()
        np.savez(out, q=np.array([{"x": 1}], dtype=object), visits=learner.visits, meta=np.zeros(1, np.uint8))
        FastQLearning.from_bytes(out.getvalue())  # object (pickled) array refused
    with pytest.raises(ValueError, match="not a readable .npz"):
        FastQLearning.from_bytes(blob[: len(blob) // 2])  # truncated
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a table")
    with pytest.raises(ValueError, match="not a Q-table .npz"):
        FastQLearning.load(garbage)
    npy = tmp_path / "plain.npz"
    np.save(npy.open("wb"), learner.q)
    with pytest.raises(ValueError, match="not a Q-table .npz"):
        FastQLearning.load(npy)


def test_metadata_requirements() -> None:
    learner = FastQLearning(4)
    with pytest.raises(ValueError, match="metadata lacks"):
        learner.to_bytes({"symbol": "BTC-USDT"})
    with pytest.raises(ValueError, match="state_space has 6 states but the table has 4"):
        learner.to_bytes({"symbol": "S", "timeframe": "1h", "state_space": space_for(3).to_json()})
    with pytest.raises(ValueError, match="plain JSON"):
        learner.to_bytes({**meta_for(learner), "note": float("nan")})
