"""The reducer: merge a symbol's analyses into a new Q-table version, once per batch.

Runs under a per-symbol PostgreSQL advisory lock. Inputs are rebuilt from PostgreSQL (candles of
the batch's range and the analyses its windows point to, in window order), never from task
results, so the table depends only on the batch, the stored data and the seed: not on how many
workers ran or in which order tasks finished. Training uses the first ``1 - holdout`` of the
range; the tail is kept for the promotion backtest. The reward is the log return of the position
held over the next candle, minus ``fee`` per position change, plus the LLM shaping of
``model.shaping`` (formula there). Warm start: when the symbol's latest version uses the same state
space, training continues from it (DESIGN: "load the current Q-table"); otherwise from zeros.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from model.candles import timeframe_seconds
from model.qlearning import FastQLearning
from model.shaping import DEFAULT_KAPPA
from model.states import StateSpace
from model.training import AnalysedWindow, train_qtable
from worker import analyses, batches, db
from worker.candles_store import load_candles
from worker.errors import BadInput
from worker.settings import Settings

log = logging.getLogger("qtrain.reduce")

DEFAULT_HOLDOUT = 0.2
DEFAULTS = {"alpha": 0.1, "gamma": 0.95, "epsilon_start": 1.0, "epsilon_end": 0.05, "fee": 0.001}


def model_path(models_dir: str, symbol: str) -> Path:
    """Where the Q-table the trader runs is written: ``models/fast_model_{SYMBOL}.npz`` (the promoted
    version, see ``worker.promotion``)."""
    return Path(models_dir) / f"fast_model_{symbol}.npz"


def version_model_path(models_dir: str, symbol: str, version: int) -> Path:
    """Where each new version is written: ``models/versions/fast_model_{SYMBOL}_v{N}.npz``."""
    return Path(models_dir) / "versions" / f"fast_model_{symbol}_v{version}.npz"


def write_model_file(
    models_dir: str, symbol: str, blob: bytes, metadata: dict[str, Any], *, path: Path | None = None
) -> Path:
    """Write the .npz (default ``model_path``) and its JSON sidecar atomically (temp file + rename)."""
    path = model_path(models_dir, symbol) if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path, blob), (path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return path


def train_inputs(settings: Settings, batch_id: int, spec: batches.BatchSpec, symbol: str) -> dict[str, Any]:
    """The batch's training candles (its range minus the holdout tail) and analysed windows."""
    candles = load_candles(settings.database_url, symbol, spec.timeframe, since=spec.since, until=spec.until)
    if len(candles) < 3:
        raise BadInput(f"{symbol}: fewer than 3 candles in the batch's range; import or fetch candles")
    holdout = float(spec.params.get("holdout", DEFAULT_HOLDOUT))
    n_train = max(2, int(round(len(candles) * (1.0 - holdout))))
    train = candles.slice(0, n_train)
    step = timeframe_seconds(spec.timeframe)
    analysed = [
        AnalysedWindow(a["start_ts"], a["end_ts"], a["action"], a["confidence"], a["rules"])
        for a in analyses.batch_analyses(settings.database_url, batch_id, symbol)
    ]
    return {
        "train": train,
        "analysed": analysed,
        "n_train": n_train,
        "train_until": int(train.ts[-1]) + step,
        "range_until": int(candles.ts[-1]) + step,
        "range_since": int(candles.ts[0]),
    }


def _previous(cur: Any, symbol: str, space: StateSpace) -> tuple[int, FastQLearning | None]:
    cur.execute(
        "SELECT version, npz FROM btc.agent_state WHERE symbol = %s ORDER BY version DESC LIMIT 1",
        (symbol,),
    )
    row = cur.fetchone()
    if row is None:
        return 0, None
    learner, meta = FastQLearning.from_bytes(bytes(row[1]))
    same = meta.get("state_space") == space.to_json() and learner.q.shape[0] == space.n_states
    return int(row[0]), (learner if same else None)


def reduce_symbol(settings: Settings, batch_id: int, symbol: str) -> dict[str, Any]:
    """Create this batch's Q-table version for ``symbol`` unless it exists; returns a tiny summary."""
    url = settings.database_url
    loaded = batches.load_batch(url, batch_id)
    if loaded is None:
        raise BadInput(f"batch {batch_id} does not exist")
    spec, _ = loaded
    with db.transaction(url) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qtrain.reduce:{symbol}",))
        cur.execute(
            "SELECT a.version, EXISTS (SELECT 1 FROM btc.backtests t WHERE t.symbol = a.symbol"
            " AND t.version = a.version AND t.kind = 'holdout') FROM btc.agent_state a"
            " WHERE a.symbol = %s AND a.batch_id = %s",
            (symbol, batch_id),
        )
        row = cur.fetchone()
    if row is not None:  # a second run: the version exists; finish the gate if a crash skipped it
        out: dict[str, Any] = {"symbol": symbol, "version": int(row[0]), "created": False}
        if not row[1]:
            out["promotion"] = _promote(settings, symbol, int(row[0]))
        return out
    with db.transaction(url) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qtrain.reduce:{symbol}",))
        cur.execute(
            "SELECT version FROM btc.agent_state WHERE symbol = %s AND batch_id = %s", (symbol, batch_id)
        )
        row = cur.fetchone()
        if row is not None:  # created meanwhile by a concurrent run, which also runs the gate
            return {"symbol": symbol, "version": int(row[0]), "created": False}
        cur.execute(
            "SELECT count(*) FROM btc.windows WHERE batch_id = %s AND symbol = %s"
            " AND status IN ('pending', 'running')",
            (batch_id, symbol),
        )
        if int(cur.fetchone()[0]) > 0:
            return {"symbol": symbol, "version": None, "created": False, "waiting": True}
        inputs = train_inputs(settings, batch_id, spec, symbol)
        space = StateSpace.default()
        prev_version, learner = _previous(cur, symbol, space)
        hp = {k: float(spec.params.get(k, v)) for k, v in DEFAULTS.items()}
        kappa = float(spec.params.get("kappa", DEFAULT_KAPPA))
        fresh, stats, data = train_qtable(
            inputs["train"], inputs["analysed"], space=space, epochs=spec.epochs, seed=spec.seed,
            kappa=kappa, initial=learner, **hp,
        )  # fmt: skip
        version = prev_version + 1
        metadata = {
            "symbol": symbol,
            "timeframe": spec.timeframe,
            "version": version,
            "batch_id": batch_id,
            "warm_start_version": prev_version if learner is not None else None,
            "state_space": space.to_json(),
            "hyper_parameters": {**hp, "epochs": spec.epochs, "seed": spec.seed},
            "train_since": inputs["range_since"],
            "train_until": inputs["train_until"],
            "holdout_until": inputs["range_until"],
            "n_train_candles": inputs["n_train"],
            "n_analysed_windows": data.n_windows,
            "analyst": spec.analyst,
            "model": spec.model,
            "train_stats": {k: v for k, v in _jsonable(stats).items() if k != "seconds"},
        }
        blob = fresh.to_bytes(metadata)  # no wall-clock values inside: same batch -> same bytes
        digest = hashlib.sha256(blob).hexdigest()
        cur.execute(
            "INSERT INTO btc.agent_state (symbol, version, batch_id, npz, sha256, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                symbol,
                version,
                batch_id,
                blob,
                digest,
                json.dumps({**metadata, "train_seconds": stats.seconds}),
            ),
        )
        batches.mark_batch_done_if_complete(cur, batch_id)
    vpath = version_model_path(settings.models_dir, symbol, version)
    write_model_file(settings.models_dir, symbol, blob, {**metadata, "file_sha256": digest}, path=vpath)
    promotion = _promote(settings, symbol, version)
    return {"symbol": symbol, "version": version, "created": True, "sha256": digest, "promotion": promotion}


def _promote(settings: Settings, symbol: str, version: int) -> dict[str, Any]:
    """Run the promotion gate on the committed version; a failure is logged and recorded, never raised."""
    from worker import promotion  # imported here: promotion imports this module

    try:
        return promotion.evaluate_and_promote(settings, symbol, version)
    except Exception as exc:  # the version is committed: report the gate's failure, keep the version
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("promotion gate failed for %s version %s", symbol, version)
        for step in (lambda: promotion.record_failure(settings, symbol, version, error),
                     lambda: promotion.sync_model_file(settings, symbol)):  # fmt: skip
            try:
                step()
            except Exception:
                log.exception("after the failed gate of %s version %s", symbol, version)
        return {"version": version, "promoted": False, "error": error}


def _jsonable(stats: Any) -> Any:
    if hasattr(stats, "__dataclass_fields__"):
        from dataclasses import asdict

        stats = asdict(stats)
    return json.loads(json.dumps(stats, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
