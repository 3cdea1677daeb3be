"""The pooled recipe: it reduces to the sweep where it should, the pool fills a symbol's thin
states, the volatility-calibrated cost trades less on a volatile pair, and no candle of any
symbol's test range (or later) reaches any table of a fold date."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from model import BUY, HOLD
from model.candles import Candles
from model.evaluation.folds import rolling_folds
from model.evaluation.pooled_folds import is_pooled, pooled_fold_tables
from model.evaluation.scoreboard import heuristic_analyses
from model.learning.pooled import pooled_value_iteration, symbol_cost
from model.learning.states import StateSpace
from model.learning.sweep import value_iteration
from model.learning.training import RECIPES, recipe_metadata, train_pooled, train_qtable
from model.market.synthetic import make_candles

SPACE = StateSpace.default()


def named(c: Candles, symbol: str) -> Candles:
    return dataclasses.replace(c, symbol=symbol)


A = named(make_candles(2400, seed=31), "AAA-USDT")
B = named(make_candles(2400, seed=32), "BBB-USDT")
C = named(make_candles(2400, seed=33), "CCC-USDT")
SINCE = int(A.ts[0]) + 40 * 86_400


def folds_of(c: Candles):
    return rolling_folds(c.ts, train_days=40, test_days=20, since=SINCE)


def test_one_symbol_with_the_pool_alone_is_the_sweep():
    """j = inf with one symbol and the fixed cost: its pooled model IS its own sweep (same prior, shaping)."""
    an = heuristic_analyses(A, until_ts=int(A.ts[-1]) + 3600)
    pooled, stats, _ = train_qtable(
        A, an, space=SPACE, recipe="pooled", symbol_strength=None, cost_per_sigma=0.0
    )
    sweep, _, _ = train_qtable(A, an, space=SPACE, recipe="sweep")
    np.testing.assert_allclose(pooled.q, sweep.q, rtol=0, atol=1e-12)
    assert pooled.visits.tobytes() == sweep.visits.tobytes() and stats.converged


def reference_pooled(series, *, n_market, gamma, cost, k, j, sweeps):
    """The model of ``model.learning.pooled`` written as plain loops over each symbol's candles."""
    valid = [[t for t in range(len(m)) if m[t] >= 0 and np.isfinite(r[t])] for m, r, _ in series]
    sig = [np.std([r[t] for t in v]) for (_, r, _), v in zip(series, valid, strict=True)]
    out = []
    for s in range(len(series)):
        q = np.zeros((n_market, 2, 3))
        for _ in range(sweeps):
            v = q.max(axis=2)
            own, tot = np.zeros((n_market, 2)), np.zeros((n_market, 2))
            n_own, n_all = np.zeros(n_market), np.zeros(n_market)
            sh_own, sh_all = np.zeros((n_market, 3)), np.zeros((n_market, 3))
            pooled_cont, steps = np.zeros(2), 0
            for o, (m, r, sh) in enumerate(series):
                for t in valid[o]:
                    nxt = m[t + 1] if t + 1 < len(m) and t + 1 in valid[o] else -1
                    for p in (0, 1):
                        cont = gamma * v[nxt, p] if nxt >= 0 else 0.0
                        tot[m[t], p] += p * r[t] * sig[s] / sig[o] + cont
                        pooled_cont[p] += cont
                        if o == s:
                            own[m[t], p] += p * r[t] + cont
                    n_all[m[t]] += 1
                    sh_all[m[t]] += sh[t] * sig[s] / sig[o]
                    steps += 1
                    if o == s:
                        n_own[m[t]] += 1
                        sh_own[m[t]] += sh[t]
            u0 = pooled_cont / steps
            new = np.zeros_like(q)
            for x in range(n_market):
                pool_u = (tot[x] + k * u0) / (n_all[x] + k) if n_all[x] + k > 0 else u0
                pool_sh = sh_all[x] / (n_all[x] + k) if n_all[x] + k > 0 else np.zeros(3)
                if n_own[x] + j > 0:
                    u = (own[x] + j * pool_u) / (n_own[x] + j)
                    sbar = (sh_own[x] + j * pool_sh) / (n_own[x] + j)
                else:
                    u, sbar = pool_u, pool_sh
                for p in (0, 1):
                    for a, p2 in ((HOLD, p), (BUY, 1), (2, 0)):
                        new[x, p, a] = u[p2] + sbar[a] - cost[s] * abs(p2 - p)
            q = new
        out.append(q.reshape(n_market * 2, 3))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pooled_value_iteration_equals_plain_loops(seed):
    rng = np.random.default_rng(seed)
    nm = int(rng.integers(1, 5))
    series = []
    for scale in (0.01, 0.03):
        n = int(rng.integers(5, 40))
        m = rng.integers(-1, nm, n)
        r = rng.normal(0.0, scale, n)
        r[rng.random(n) < 0.1] = np.nan
        series.append((m, r, rng.normal(0.0, 0.001, (n, 3))))
    gamma, k, j, z = [0.0, 0.5, 0.9][seed % 3], [0.0, 5.0][seed % 2], [0.0, 3.0, 25.0][seed % 3], 0.35
    got = pooled_value_iteration(
        *zip(*series, strict=True),
        n_market=nm,
        gamma=gamma,
        turnover_cost=0.003,
        cost_per_sigma=z,
        prior_strength=k,
        symbol_strength=j,
        tol=0.0,
        max_sweeps=30,
    )
    sig = [np.nanstd(np.where(m >= 0, r, np.nan)) for m, r, _ in series]
    cost = [max(0.003, z * s) for s in sig]
    ref = reference_pooled(series, n_market=nm, gamma=gamma, cost=cost, k=k, j=j, sweeps=30)
    for (q, _, _), want in zip(got, ref, strict=True):
        np.testing.assert_allclose(q, want, rtol=1e-9, atol=1e-12)


def test_the_pool_fills_a_symbol_s_unseen_state():
    """Symbol 0 never sees state 1; symbol 1 sees it rise 0.5 %/candle. Alone, symbol 0 holds there
    (the no-edge prior); pooled, it buys there. Symbol 1's own strong data keep their edge."""
    rng = np.random.default_rng(0)
    n = 3000
    m0 = np.zeros(n, dtype=np.int64)
    m1 = np.repeat(rng.integers(0, 2, n // 10), 10)
    r0 = rng.normal(0.0, 0.01, n)
    r1 = rng.normal(0.0, 0.01, n) + np.where(m1 == 1, 0.005, -0.005)
    z = np.zeros((n, 3))
    kw = dict(n_market=2, gamma=0.9, turnover_cost=0.003, cost_per_sigma=0.0, prior_strength=5.0)
    (q0, v0, _), (q1, _, _) = pooled_value_iteration([m0, m1], [r0, r1], [z, z], symbol_strength=25.0, **kw)
    alone, _, _ = value_iteration(m0, r0, z, n_market=2, gamma=0.9, turnover_cost=0.003, prior_strength=5.0)
    assert alone.reshape(2, 2, 3)[1, 0].argmax() == HOLD
    assert q0.reshape(2, 2, 3)[1, 0].argmax() == BUY and q1.reshape(2, 2, 3)[1, 0].argmax() == BUY
    assert v0.reshape(2, 6)[1].sum() == 0 and v0.reshape(2, 6)[0, 0] == n  # visits: its own candles


def test_volatility_calibrated_cost_trades_less_on_a_volatile_pair():
    """Pure noise, one pair at 1 % and one at 3 % hourly std: the cost follows the std, and the
    volatile pair's table trades less on fresh noise with cost_per_sigma than with the fixed cost."""
    assert symbol_cost(0.01, turnover_cost=0.003, cost_per_sigma=0.5) == 0.005
    assert symbol_cost(0.002, turnover_cost=0.003, cost_per_sigma=0.5) == 0.003

    def trades(cost_per_sigma: float) -> int:
        rng = np.random.default_rng(7)
        n, nm = 4368, 60
        ms = [np.repeat(rng.integers(0, nm, n), rng.geometric(1 / 1.5, n))[:n] for _ in range(2)]
        rs = [rng.normal(0, 0.01, n), rng.normal(0, 0.03, n)]
        z = np.zeros((n, 3))
        out = pooled_value_iteration(
            ms,
            rs,
            [z, z],
            n_market=nm,
            gamma=0.9,
            turnover_cost=0.003,
            cost_per_sigma=cost_per_sigma,
            prior_strength=5.0,
            symbol_strength=0.0,
        )
        q = out[1][0].reshape(nm, 2, 3)
        test = rng.integers(0, nm, 2184)
        pos, total = 0, 0
        for s in test:
            a = q[s, pos].argmax()
            new = 1 if a == BUY else 0 if a == 2 else pos
            total += new != pos
            pos = new
        return total

    assert trades(0.75) < trades(0.0)


def test_pooled_tables_are_order_free_and_deterministic():
    parts = {
        s: (c, folds_of(c)[1], heuristic_analyses(c, until_ts=folds_of(c)[1].test_since))
        for s, c in (("AAA-USDT", A), ("BBB-USDT", B), ("CCC-USDT", C))
    }
    first = pooled_fold_tables(parts)
    again = pooled_fold_tables(dict(reversed(list(parts.items()))))
    meta = {"symbol": "x", "timeframe": "1h", "state_space": SPACE.to_json()}
    for s in parts:
        assert first[s].to_bytes(meta) == again[s].to_bytes(meta)
    assert first["AAA-USDT"].q.tobytes() != first["BBB-USDT"].q.tobytes()  # per-symbol part


@pytest.mark.parametrize("k", [0, 1, 2])
def test_no_leakage_truncating_every_symbol_s_future_leaves_the_tables_byte_identical(k):
    """Each fold date's tables are the same with every series cut at the test start, with another
    symbol's test range replaced by wild prices, and with analyses of the test range added."""
    series = {"AAA-USDT": A, "BBB-USDT": B, "CCC-USDT": C}
    full, cut, wild = {}, {}, {}
    for s, c in series.items():
        fold = folds_of(c)[k]
        past = heuristic_analyses(c, until_ts=fold.test_since)
        every = heuristic_analyses(c, until_ts=int(c.ts[-1]) + 3600)
        full[s] = (c, fold, every)
        cut[s] = (c.slice(0, fold.test_lo), fold, past)
        bumped = c.close.copy()
        bumped[fold.test_lo :] *= np.linspace(1, 5, len(c) - fold.test_lo)
        wc = dataclasses.replace(c, close=bumped, high=np.maximum(c.high, bumped))
        wild[s] = (wc, fold, every)
    a, b, w = pooled_fold_tables(full), pooled_fold_tables(cut), pooled_fold_tables(wild)
    for s in series:
        assert a[s].q.tobytes() == b[s].q.tobytes() == w[s].q.tobytes()
        assert a[s].visits.tobytes() == b[s].visits.tobytes()


def test_a_pool_must_share_one_test_start():
    fa, fb = folds_of(A)[0], folds_of(B)[1]
    with pytest.raises(ValueError, match="share one test start"):
        pooled_fold_tables({"AAA-USDT": (A, fa, []), "BBB-USDT": (B, fb, [])})
    with pytest.raises(ValueError, match="parts is empty"):
        pooled_fold_tables({})


def test_registry_metadata_and_bad_parameters():
    assert is_pooled("pooled") and not is_pooled("sweep") and "pooled" in RECIPES
    meta = recipe_metadata("pooled", symbol_strength=None)
    assert json.loads(json.dumps(meta, allow_nan=False)) == meta
    with pytest.raises(ValueError, match="train_pooled needs a pooled recipe"):
        train_pooled({"A": A}, {}, space=SPACE, recipe="sweep")
    z = np.zeros((3, 3))
    m, r = np.zeros(3, dtype=np.int64), np.zeros(3)
    base = dict(n_market=1, gamma=0.9, turnover_cost=0.003, cost_per_sigma=0.0, prior_strength=5.0)
    with pytest.raises(ValueError, match="prior_strength must be finite"):
        pooled_value_iteration([m], [r], [z], **{**base, "prior_strength": math.inf}, symbol_strength=1.0)
    with pytest.raises(ValueError, match="symbol_strength must be"):
        pooled_value_iteration([m], [r], [z], **base, symbol_strength=-1.0)
    with pytest.raises(ValueError, match="one market_states"):
        pooled_value_iteration([], [], [], **base, symbol_strength=1.0)


def test_volatility_aware_states_read_the_gaps_in_atrs():
    """``a/b`` features are row ratios: where the ATR is 1 % the volatility-aware space encodes like
    the default one; where it is 2 %, like the default one with both gaps halved."""
    from model.features import compute_features

    f = compute_features(make_candles(600, seed=4))
    vol = StateSpace.volatility_aware()
    assert vol.n_market_states == SPACE.n_market_states == 960
    one = {**f, "atr_pct": np.ones_like(f["atr_pct"])}
    assert (vol.encode(one) == SPACE.encode(f)).all()
    two = {**f, "atr_pct": np.full_like(f["atr_pct"], 2.0)}
    halved = {**f, "macd_hist": f["macd_hist"] / 2, "ema_gap": f["ema_gap"] / 2}
    assert (vol.encode(two) == SPACE.encode(halved)).all()
    zero = {**f, "atr_pct": np.zeros_like(f["atr_pct"])}
    assert (vol.encode(zero) == -1).all()  # a ratio over 0 is NaN: no state
    assert StateSpace.from_json(vol.to_json()) == vol


def test_tables_by_date_pool_the_symbols_of_each_date_and_say_so():
    """Each date's pooled tables are ``pooled_fold_tables`` of that date's folds (and the twins the
    same without analyses); a sweep-only call trains nothing; the record names what was pooled."""
    from model.evaluation.pooled_folds import pool_note, pool_record, pooled_tables_by_date

    series = {"AAA-USDT": (A, folds_of(A)), "BBB-USDT": (B, folds_of(B)[1:])}

    def analyses(symbol, fold):
        return heuristic_analyses(series[symbol][0], until_ts=fold.test_since)

    got = pooled_tables_by_date(series, analyses, recipes=("sweep", "pooled"))
    dates = [f.test_since for f in folds_of(A)]
    assert list(got) == dates and set(got[dates[0]]) == {"AAA-USDT"}  # BBB has no fold that date
    f1 = folds_of(A)[1]
    parts = {s: (c, f1, analyses(s, f1)) for s, (c, _) in series.items()}
    ref = pooled_fold_tables(parts)
    bare = pooled_fold_tables({s: (c, f, ()) for s, (c, f, _) in parts.items()})
    for s in series:
        table, twin = got[f1.test_since][s]["pooled"]
        assert table.q.tobytes() == ref[s].q.tobytes() and twin.q.tobytes() == bare[s].q.tobytes()
    assert pooled_tables_by_date(series, analyses, recipes=("sweep",)) == {}
    rec = pool_record(series, ("sweep", "pooled"))
    assert list(rec) == ["pooled"] and rec["pooled"]["symbols"] == ["AAA-USDT", "BBB-USDT"]
    assert rec["pooled"]["symbols_per_date"] == [1, 2] and rec["pooled"]["fold_dates"] == len(dates)
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
    assert "recipe pooled pooled 2 symbols (AAA-USDT, BBB-USDT)" in pool_note(rec)[0]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_no_leakage_a_stored_peer_s_candles_after_the_training_end_never_reach_a_table(k):
    """A stored peer (pooled, not scored) joins a date with its training range only: its candles
    cut at the test start, or its test range and later replaced by wild prices, leave the tables
    byte-identical; and it did count (the table differs without it)."""
    from model.evaluation.pooled_folds import pooled_tables_by_date

    fold = folds_of(A)[k]
    series = {"AAA-USDT": (A, [fold])}

    def analyses(symbol, f):
        return heuristic_analyses(A, until_ts=f.test_since)

    cut_at = int(np.searchsorted(B.ts, fold.test_since))
    bumped = B.close.copy()
    bumped[cut_at:] *= np.linspace(1, 5, len(B) - cut_at)
    wild = dataclasses.replace(B, close=bumped, high=np.maximum(B.high, bumped))
    tables = [
        pooled_tables_by_date(series, analyses, recipes=("pooled",), peers={"BBB-USDT": peer})
        for peer in (B, B.slice(0, cut_at), wild)
    ]
    alone = pooled_tables_by_date(series, analyses, recipes=("pooled",), peers={"BBB-USDT": B}, alone=True)
    got = [t[fold.test_since]["AAA-USDT"]["pooled"][0].q.tobytes() for t in (*tables, alone)]
    assert got[0] == got[1] == got[2] and got[0] != got[3]
    assert set(tables[0][fold.test_since]) == {"AAA-USDT"}  # the peer is trained with, never scored


def test_a_peer_joins_a_date_only_when_it_covers_half_the_training_range():
    from model.evaluation.pooled_folds import PEER_COVERAGE, peer_parts, pool_note, pool_record

    fold = folds_of(A)[1]
    lo = int(np.searchsorted(C.ts, fold.train_since))
    hi = int(np.searchsorted(C.ts, fold.test_since))
    short = C.slice(hi - int(PEER_COVERAGE * fold.n_train) + 1, len(C))  # just under half before the test
    parts = peer_parts({"BBB-USDT": B, "CCC-USDT": short}, fold, fold.n_train)
    assert list(parts) == ["BBB-USDT"] and hi - lo == fold.n_train
    peer_fold = parts["BBB-USDT"][1]
    assert B.ts[peer_fold.train_hi - 1] < fold.test_since <= B.ts[peer_fold.train_hi]
    assert peer_fold.test_hi == peer_fold.test_lo == peer_fold.train_hi  # no test range: never scored
    rec = pool_record({"AAA-USDT": (A, [fold])}, ("pooled",), peers={"BBB-USDT": B, "CCC-USDT": short})
    assert rec["pooled"]["symbols"] == ["AAA-USDT", "BBB-USDT"] and rec["pooled"]["stored"] == ["BBB-USDT"]
    assert "AAA-USDT with 1 stored symbol(s) (BBB-USDT" in pool_note(rec)[0]
    none = pool_record({"AAA-USDT": (A, [fold])}, ("pooled",), peers={"BBB-USDT": B}, alone=True)
    assert none["pooled"]["symbols"] == ["AAA-USDT"] and "alone (--pool none)" in pool_note(none)[0]
