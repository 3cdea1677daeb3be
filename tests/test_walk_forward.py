"""Walk-forward: K folds, each trained on its past only, from cached analyses, with no LLM call."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from model.evaluation.policy_set import POLICIES
from producer.cli import cli
from tests.evaluation_support import heuristic_batch, heuristic_version, settings_for
from tests.pipeline_support import query, seed_candles
from worker.evaluation import walk_forward
from worker.settings import DEFAULT_EPOCHS
from worker.store import analyses

SYMBOL = "BTC-USDT"


@pytest.fixture
def env(database_url, tmp_path, monkeypatch):
    seed_candles(database_url, n=480, symbols={SYMBOL: (11, 30_000.0)})
    heuristic_version(settings_for(database_url, tmp_path), SYMBOL, epochs=2)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QTRAIN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens: any LLM call would fail

    def no_llm(*a, **k):
        raise AssertionError("walk-forward must not call the LLM")

    import worker.clients.ollama

    monkeypatch.setattr(worker.clients.ollama.OllamaClient, "chat", no_llm)
    return database_url


def test_k_folds_from_cached_analyses(env):
    res = CliRunner().invoke(
        cli, ["backtest", "--symbol", SYMBOL, "--walk-forward", "--folds", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    folds = out["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2]
    for a, b in zip(folds, folds[1:], strict=False):
        assert a["test_until"] == b["test_since"] and a["train_until"] < b["train_until"]
    for f in folds:
        assert f["train_until"] == f["test_since"]
        assert set(f["policies"]) == {*POLICIES, "qtable_unshaped", "qtable_shuffled", "qtable_constant"}
    windows = [f["n_windows"] for f in folds]
    assert windows[0] > 0 and windows == sorted(windows)  # more of the cached analyses as the past grows
    assert out["analyses_available"] > 0 and out["analyses_model"] == "heuristic"
    agg = out["aggregate"]["qtable"]
    returns = [f["policies"]["qtable"]["total_return_pct"] for f in folds]
    assert agg["total_return_pct"]["mean"] == pytest.approx(sum(returns) / 3)
    growth = 1.0
    for r in returns:
        growth *= 1 + r / 100
    assert agg["compounded_return_pct"] == pytest.approx((growth - 1) * 100)
    rows = query(
        env, "SELECT count(*), count(DISTINCT params->>'fold') FROM backtests WHERE kind = 'walk_forward'"
    )
    assert rows == [(3 * (len(POLICIES) + 3), 3)]  # + the unshaped twin and the two controls


def test_table_output(env):
    res = CliRunner().invoke(
        cli, ["backtest", "--symbol", SYMBOL, "--walk-forward", "--folds", "2"], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert "compounded" in res.output and "median" in res.output


def test_analyses_are_only_those_that_end_before_the_test(env):
    t = query(
        env,
        "SELECT extract(epoch FROM min(end_ts))::bigint, extract(epoch FROM max(end_ts))::bigint"
        " FROM ollama_analyses",
    )
    lo, hi = t[0]
    mid = (lo + hi) // 2
    got = analyses.cached_analyses(env, SYMBOL, "1h", until=mid)
    assert got and all(w.end_ts < mid for w in got)
    assert len(analyses.cached_analyses(env, SYMBOL, "1h", until=hi + 1)) > len(got)
    assert analyses.cached_analyses(env, SYMBOL, "1h", until=hi + 1, model="qwen") == []


def test_a_fold_does_not_see_its_future(env):
    """Fold 0 of 3 over 480 candles is [0,120) -> [120,240); so is fold 0 of 1 over the first 240 candles.
    Removing candles 240..480 (and the analyses about them) must change nothing in that fold."""
    ts = query(env, "SELECT extract(epoch FROM min(ts))::bigint FROM candles")[0][0]
    full = walk_forward.walk_forward(env, SYMBOL, folds=3, since=ts, until=ts + 480 * 3600)
    part = walk_forward.walk_forward(env, SYMBOL, folds=1, since=ts, until=ts + 240 * 3600)
    f, p = full.folds[0], part.folds[0]
    assert (f.test_since, f.test_until, f.n_windows) == (p.test_since, p.test_until, p.n_windows)
    for policy in (*POLICIES, "qtable_unshaped", "qtable_shuffled", "qtable_constant"):
        assert f.results[policy].metrics == p.results[policy].metrics, policy
        assert (f.results[policy].position == p.results[policy].position).all(), policy


def test_no_version_uses_defaults(database_url, tmp_path):
    seed_candles(database_url, n=300, symbols={"ETH-USDT": (12, 2_000.0)})
    heuristic_batch(settings_for(database_url, tmp_path), "ETH-USDT")  # analyses but no reduced version
    wf = walk_forward.walk_forward(database_url, "ETH-USDT", folds=2)
    assert wf.version is None and len(wf.folds) == 2 and wf.params["epochs"] == DEFAULT_EPOCHS
    assert wf.folds[1].n_windows > 0


def test_walk_forward_trains_with_the_reducers_recipe(env):
    """``model.learning.training.train_qtable`` on a version's training candles and its batch's analyses gives
    the reducer's table byte for byte (no warm start on a first version)."""
    from model.learning.qlearning import FastQLearning
    from model.learning.states import StateSpace
    from model.learning.training import train_qtable
    from worker.store.analyses import batch_analyses
    from worker.store.candles import load_candles

    blob, meta, batch_id = query(env, "SELECT npz, metadata, batch_id FROM agent_state")[0]
    stored, _ = FastQLearning.from_bytes(bytes(blob))
    train = load_candles(env, SYMBOL, "1h", since=meta["train_since"], until=meta["train_until"])
    every = batch_analyses(env, batch_id, SYMBOL)
    analysed = [a for a in every if a.end_ts < meta["train_until"]]  # none across into the tail
    assert len(analysed) < len(every) and meta["ablation"]["served"] in ("llm_shaped", "unshaped")
    if meta["ablation"]["served"] == "unshaped":  # the reducer kept the twin: the same recipe, no analyses
        analysed = []
    hp = meta["recipe"]["params"]
    learner, _, data = train_qtable(
        train,
        analysed,
        space=StateSpace.default(),
        recipe=meta["recipe"]["name"],
        epochs=meta["hyper_parameters"]["epochs"],
        seed=meta["hyper_parameters"]["seed"],
        **hp,
    )
    assert (
        data.n_windows == (meta["n_analysed_windows"] if analysed else 0) and meta["n_analysed_windows"] > 0
    )
    assert learner.q.tobytes() == stored.q.tobytes() and learner.visits.tobytes() == stored.visits.tobytes()


def test_the_unshaped_row_is_the_same_fold_without_analyses(env):
    wf = walk_forward.walk_forward(env, SYMBOL, folds=3)
    with_windows = [f for f in wf.folds if f.n_windows > 0]
    assert with_windows
    for f in wf.folds:
        assert "qtable_unshaped" in f.results
    shaped = [f.results["qtable"].position for f in with_windows]
    twins = [f.results["qtable_unshaped"].position for f in with_windows]
    assert any((a != b).any() for a, b in zip(shaped, twins, strict=True))  # the analyses moved some fold
    again = walk_forward.walk_forward(env, SYMBOL, folds=3)
    for c in ("shuffled", "constant"):  # the negative controls: deterministic; without analyses, the twin
        for f, g in zip(wf.folds, again.folds, strict=True):
            assert (f.results[f"qtable_{c}"].position == g.results[f"qtable_{c}"].position).all()
            if f.n_windows == 0:
                assert (f.results[f"qtable_{c}"].position == f.results["qtable_unshaped"].position).all()
