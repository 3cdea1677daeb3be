"""Helpers for the evaluation tests: Q-table versions made in-process (no Celery, no Ollama).

``heuristic_version`` runs the real path (batch, analyse every window with the heuristic analyst,
reduce); ``insert_version`` stores a hand-made table, for tests that need a known policy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from model.candles import Candles
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from worker.errors import PermanentError
from worker.pipeline import dispatch
from worker.pipeline.analyze import analyze
from worker.pipeline.completion import complete_symbol
from worker.settings import Settings
from worker.store import batches, db
from worker.store.candles import insert_candles


def settings_for(database_url: str, models_dir: Path) -> Settings:
    """Settings of one test: its own database and models directory."""
    return Settings(database_url=database_url, models_dir=str(models_dir))


def heuristic_batch(settings: Settings, symbol: str, *, epochs: int = 1, seed: int = 7, **kw: Any) -> int:
    """Create a heuristic batch for ``symbol`` and analyse all its windows in-process; its id."""
    req = dispatch.TrainRequest(symbols=(symbol,), analyst="heuristic", epochs=epochs, seed=seed, **kw)
    batch_id = dispatch.create(settings, req).batch_id
    for sym, idx in batches.unfinished_windows(settings.database_url, batch_id):
        window, _ = batches.claim_window(settings.database_url, batch_id, sym, idx)
        assert window is not None
        try:
            analyze(settings.database_url, window, None)
        except PermanentError as exc:  # recorded failed, as the Celery task does
            batches.set_window_status(settings.database_url, batch_id, sym, idx, "failed", str(exc))
    return batch_id


def heuristic_version(settings: Settings, symbol: str, **kw: Any) -> dict[str, Any]:
    """A new Q-table version of ``symbol`` through the real reducer and gate (as the reducer task
    runs them, without Celery); the summary."""
    batch_id = heuristic_batch(settings, symbol, **kw)
    return complete_symbol(settings, batch_id, symbol)


def insert_candles_of(database_url: str, c: Candles) -> None:
    """Store ``c`` (1h) under its symbol."""
    with db.transaction(database_url) as cur:
        insert_candles(
            cur,
            c.symbol,
            c.timeframe,
            c.ts,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            taker_buy_volume=c.taker_buy_volume,
        )


def zigzag_candles(
    n: int,
    *,
    symbol: str = "ZIG-USDT",
    up: float = 0.01,
    down: float = -0.012,
    leg: int = 20,
    start: int = 1_700_000_000 - 1_700_000_000 % 3600,
) -> Candles:
    """A market of alternating ``leg``-candle runs (up then down): momentum wins, buy-and-hold drifts."""
    steps = np.where((np.arange(n) // leg) % 2 == 0, up, down)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = start + 3600 * np.arange(n, dtype=np.int64)
    vol = np.full(n, 10.0)
    return Candles(ts, open_, high, low, close, vol, vol * 0.5, symbol, "1h")


MOMENTUM_SPACE = StateSpace(("ret_1",), (np.array([0.0]),))
"""Two market states: the last candle fell (0) or rose (1)."""


def momentum_table(kind: str) -> FastQLearning:
    """A hand-made table on ``MOMENTUM_SPACE``: ``momentum`` (long after a rise), ``contrarian``
    (long after a fall) or ``flat`` (never buys)."""
    learner = FastQLearning(MOMENTUM_SPACE.n_states, seed=0)
    if kind in ("momentum", "contrarian"):
        up_state, down_state = (1, 0) if kind == "momentum" else (0, 1)
        for pos in (0, 1):
            learner.q[up_state * 2 + pos, 1] = 1.0  # BUY
            learner.q[down_state * 2 + pos, 2] = 1.0  # SELL
    elif kind != "flat":
        raise ValueError(f"kind must be momentum, contrarian or flat, got {kind!r}")
    learner.visits[...] = 1
    return learner


def insert_version(
    database_url: str,
    symbol: str,
    learner: FastQLearning,
    space: StateSpace,
    *,
    train_since: int,
    train_until: int,
    holdout_until: int,
    timeframe: str = "1h",
) -> int:
    """Store ``learner`` as the symbol's next version (not promoted); its version number."""
    with db.transaction(database_url) as cur:
        cur.execute("SELECT coalesce(max(version), 0) + 1 FROM btc.agent_state WHERE symbol = %s", (symbol,))
        version = int(cur.fetchone()[0])
        meta = {
            "symbol": symbol,
            "timeframe": timeframe,
            "version": version,
            "batch_id": None,
            "state_space": space.to_json(),
            "train_since": train_since,
            "train_until": train_until,
            "holdout_until": holdout_until,
            "hyper_parameters": {"epochs": 1, "seed": 0},
            "model": "hand-made",
            "analyst": "test",
        }
        blob = learner.to_bytes(meta)
        cur.execute(
            "INSERT INTO btc.agent_state (symbol, version, batch_id, npz, sha256, metadata)"
            " VALUES (%s, %s, NULL, %s, %s, %s)",
            (symbol, version, blob, hashlib.sha256(blob).hexdigest(), json.dumps(meta)),
        )
    return version
