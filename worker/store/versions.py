"""Q-table versions: the one owner of ``btc.agent_state`` rows, the per-symbol lock and model files.

PostgreSQL is the source of truth: each version is a row (the ``.npz`` bytes, sha256, metadata,
``promoted``, ``gated_at``). Files are a local export: every version is written to
``models/versions/fast_model_{SYMBOL}_v{N}.npz`` when it is created, and
``models/fast_model_{SYMBOL}.npz`` (+ ``.json``) holds the version a trader should run: the
promoted one, or, while a symbol has none, its latest (the sidecar then says ``"promoted": false``).
Every change of a symbol's versions (new version, promotion, rollback) runs under ``lock_symbol``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from worker.errors import BadInput, QtrainError
from worker.settings import DEFAULT_TIMEFRAME, Settings
from worker.store import db
from worker.store.db import Cursor


@dataclass(frozen=True)
class StoredVersion:
    """One row of ``btc.agent_state``, its table loaded (``allow_pickle=False``)."""

    symbol: str
    version: int
    batch_id: int | None
    created_at: datetime
    sha256: str
    promoted: bool
    npz: bytes
    metadata: dict[str, Any]
    learner: FastQLearning

    @property
    def space(self) -> StateSpace:
        """The state space the table was trained on."""
        return StateSpace.from_json(self.metadata["state_space"])

    @property
    def timeframe(self) -> str:
        """The candle timeframe of the table."""
        return str(self.metadata.get("timeframe", DEFAULT_TIMEFRAME))

    def holdout(self) -> tuple[int, int] | None:
        """The held-out tail ``[train_until, holdout_until)`` (epoch s), or None when there is none."""
        lo, hi = self.metadata.get("train_until"), self.metadata.get("holdout_until")
        if lo is None or hi is None or int(hi) <= int(lo):
            return None
        return int(lo), int(hi)


def lock_symbol(cur: Cursor, symbol: str) -> None:
    """Take the symbol's transaction-scoped advisory lock: one writer of its versions at a time
    (the wait is bounded by the connection's ``lock_timeout``, ``db.LOCK_TIMEOUT_S``)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (symbol_lock_key(symbol),))


def try_lock_reducer(cur: Cursor, batch_id: int, symbol: str) -> bool:
    """Take the transaction-scoped lock of ``batch_id``'s reducer of ``symbol`` without waiting:
    False when another reducer of the same batch and symbol holds it (a duplicate message)."""
    cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (reducer_lock_key(batch_id, symbol),))
    return bool(cur.fetchone()[0])


def symbol_lock_key(symbol: str) -> str:
    """The advisory lock's key text for ``symbol`` (hashed with ``hashtext``)."""
    return f"qtrain.reduce:{symbol}"


def reducer_lock_key(batch_id: int, symbol: str) -> str:
    """The advisory lock's key text of one batch's reducer of ``symbol``."""
    return f"qtrain.reduce:{batch_id}:{symbol}"


def no_version(symbol: str, version: int) -> str:
    """The one-line error for a missing version."""
    return f"{symbol} has no version {version}: `qtrain models list --symbol {symbol}` shows them"


_COLS = "symbol, version, batch_id, created_at, sha256, promoted, npz, metadata"


def _stored(row: Any) -> StoredVersion:
    blob = bytes(row[6])
    learner, _ = FastQLearning.from_bytes(blob)
    meta = row[7] if isinstance(row[7], dict) else json.loads(row[7])
    return StoredVersion(row[0], int(row[1]), row[2], row[3], row[4], bool(row[5]), blob, meta, learner)


def load_version(
    url: str, symbol: str, version: int | None = None, *, prefer_promoted: bool = False
) -> StoredVersion:
    """Version ``version`` of ``symbol``; by default the latest (or the promoted one first)."""
    with db.transaction(url) as cur:
        if version is not None:
            cur.execute(
                f"SELECT {_COLS} FROM btc.agent_state WHERE symbol = %s AND version = %s", (symbol, version)
            )
        else:
            order = "promoted DESC, version DESC" if prefer_promoted else "version DESC"
            cur.execute(
                f"SELECT {_COLS} FROM btc.agent_state WHERE symbol = %s ORDER BY {order} LIMIT 1", (symbol,)
            )
        row = cur.fetchone()
    if row is None:
        if version is None:
            raise BadInput(
                f"no Q-table version for {symbol}: train one with `qtrain train`; `qtrain models list` shows"
                " what exists"
            )
        raise BadInput(no_version(symbol, version))
    return _stored(row)


def which(v: StoredVersion, given: int | None) -> str:
    """Which version a command used, in words: ``v3, the promoted one``, ``v3, the latest (none is
    promoted)`` or ``v3, as given (not the promoted one)``."""
    if v.promoted:
        return f"v{v.version}, the promoted one"
    if given is None:
        return f"v{v.version}, the latest (no version of {v.symbol} is promoted: `qtrain models list`)"
    return f"v{v.version}, as given (not the promoted one)"


def promoted_version(cur: Cursor, symbol: str) -> StoredVersion | None:
    """The promoted version of ``symbol`` read through the caller's cursor, or None."""
    cur.execute(f"SELECT {_COLS} FROM btc.agent_state WHERE symbol = %s AND promoted", (symbol,))
    row = cur.fetchone()
    return None if row is None else _stored(row)


def promoted_number(cur: Cursor, symbol: str) -> int | None:
    """The number of ``symbol``'s promoted version through the caller's cursor (None: none is
    promoted), without reading its table: what a switch logs as previous and a trader runs."""
    cur.execute("SELECT version FROM btc.agent_state WHERE symbol = %s AND promoted", (symbol,))
    row = cur.fetchone()
    return None if row is None else int(row[0])


def has_version(cur: Cursor, symbol: str, version: int) -> bool:
    """True when ``symbol`` has version ``version`` (read through the caller's cursor)."""
    cur.execute("SELECT promoted FROM btc.agent_state WHERE symbol = %s AND version = %s", (symbol, version))
    return cur.fetchone() is not None


def mark_promoted(cur: Cursor, symbol: str, version: int, *, by: str) -> None:
    """Make ``version`` the symbol's one promoted version (the caller holds ``lock_symbol``; the
    partial unique index of migration 0003 forbids two): the old flag is cleared first."""
    cur.execute("UPDATE btc.agent_state SET promoted = false WHERE symbol = %s AND promoted", (symbol,))
    cur.execute(
        "UPDATE btc.agent_state SET promoted = true, promoted_at = now(), promoted_by = %s"
        " WHERE symbol = %s AND version = %s",
        (by, symbol, version),
    )


def reducer_running(cur: Cursor, batch_id: int, symbol: str) -> bool:
    """True while a live reducer of the batch's ``symbol`` holds its lock (the lock dies with its
    connection, so a dead reducer's is free). Probed with a session lock released at once, so a
    reducer enqueued right after is not kept waiting."""
    key = reducer_lock_key(batch_id, symbol)
    cur.execute(
        "SELECT CASE WHEN pg_try_advisory_lock(hashtext(%s)) THEN NOT pg_advisory_unlock(hashtext(%s))"
        " ELSE true END",
        (key, key),
    )
    return bool(cur.fetchone()[0])


def latest_version(cur: Cursor, symbol: str) -> tuple[int, FastQLearning | None, dict[str, Any]]:
    """The newest version number of ``symbol`` (0: none), its table and metadata, through ``cur``."""
    cur.execute(
        "SELECT version, npz FROM btc.agent_state WHERE symbol = %s ORDER BY version DESC LIMIT 1", (symbol,)
    )
    row = cur.fetchone()
    if row is None:
        return 0, None, {}
    learner, meta = FastQLearning.from_bytes(bytes(row[1]))
    return int(row[0]), learner, meta


def batch_version(cur: Cursor, symbol: str, batch_id: int) -> tuple[int, bool] | None:
    """The version a batch's reducer made for ``symbol`` and whether its gate has run, or None."""
    cur.execute(
        "SELECT version, gated_at IS NOT NULL FROM btc.agent_state WHERE symbol = %s AND batch_id = %s",
        (symbol, batch_id),
    )
    row = cur.fetchone()
    return None if row is None else (int(row[0]), bool(row[1]))


def insert_version(
    cur: Cursor, symbol: str, version: int, batch_id: int, blob: bytes, metadata: dict[str, Any]
) -> str:
    """Insert a new version row through the caller's cursor (who holds the symbol lock); its sha256."""
    digest = hashlib.sha256(blob).hexdigest()
    cur.execute(
        "INSERT INTO btc.agent_state (symbol, version, batch_id, npz, sha256, metadata)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (symbol, version, batch_id, blob, digest, json.dumps(metadata)),
    )
    return digest


def mark_gated(cur: Cursor, symbol: str, version: int) -> None:
    """Record that the promotion gate ran on a version (promoted or not, or its failure recorded)."""
    cur.execute(
        "UPDATE btc.agent_state SET gated_at = coalesce(gated_at, now()) WHERE symbol = %s AND version = %s",
        (symbol, version),
    )


def gate_verdict(cur: Cursor, symbol: str, version: int) -> dict[str, Any] | None:
    """The verdict recorded on a version whose gate has run (``{}`` if none was stored), or None
    while it has not run."""
    cur.execute(
        "SELECT gate, gated_at IS NOT NULL FROM btc.agent_state WHERE symbol = %s AND version = %s",
        (symbol, version),
    )
    row = cur.fetchone()
    if row is None or not row[1]:
        return None
    return dict(row[0] or {})


def record_gate(cur: Cursor, symbol: str, version: int, verdict: dict[str, Any]) -> None:
    """Store the promotion gate's verdict on a version (``agent_state.gate``, migration 0010)."""
    cur.execute(
        "UPDATE btc.agent_state SET gate = %s WHERE symbol = %s AND version = %s",
        (json.dumps(verdict), symbol, version),
    )


@dataclass(frozen=True)
class VersionRow:
    """One version as ``qtrain models list`` lists it: the row without its table bytes."""

    symbol: str
    version: int
    batch_id: int | None
    created_at: datetime
    promoted: bool
    promoted_at: datetime | None
    promoted_by: str | None
    sha256: str
    metadata: dict[str, Any]
    gate: dict[str, Any] | None


def version_rows(url: str, symbol: str | None = None) -> list[VersionRow]:
    """Every version (of ``symbol``, or of all symbols), by symbol and version, without its table."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, version, batch_id, created_at, promoted, promoted_at, promoted_by, sha256,"
            " metadata, gate FROM btc.agent_state WHERE (%s::text IS NULL OR symbol = %s)"
            " ORDER BY symbol, version",
            (symbol, symbol),
        )
        rows = cur.fetchall()
    return [
        VersionRow(
            symbol=r[0],
            version=int(r[1]),
            batch_id=r[2],
            created_at=r[3],
            promoted=bool(r[4]),
            promoted_at=r[5],
            promoted_by=r[6],
            sha256=r[7],
            metadata=_json(r[8]) or {},
            gate=_json(r[9]),
        )
        for r in rows
    ]


def _json(value: Any) -> Any:
    """A jsonb column as Python (psycopg2 decodes jsonb already; text would still be a string)."""
    return json.loads(value) if isinstance(value, str) else value


def gated_symbols(url: str, batch_id: int) -> dict[str, int]:
    """Symbol -> version of this batch whose promotion gate has run: that symbol's reducer is finished."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, version FROM btc.agent_state WHERE batch_id = %s AND gated_at IS NOT NULL",
            (batch_id,),
        )
        return {r[0]: int(r[1]) for r in cur.fetchall()}


# --------------------------------------------------------------------------- model files


def model_path(models_dir: str, symbol: str) -> Path:
    """Where the Q-table the trader runs is written: ``models/fast_model_{SYMBOL}.npz``."""
    return Path(models_dir) / f"fast_model_{symbol}.npz"


def version_model_path(models_dir: str, symbol: str, version: int) -> Path:
    """Where each new version is written: ``models/versions/fast_model_{SYMBOL}_v{N}.npz``."""
    return Path(models_dir) / "versions" / f"fast_model_{symbol}_v{version}.npz"


def write_model_file(path: Path, blob: bytes, metadata: dict[str, Any]) -> Path:
    """Write the .npz and its JSON sidecar atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path, blob), (path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return path


def write_version_file(
    settings: Settings, symbol: str, version: int, blob: bytes, metadata: dict[str, Any]
) -> Path:
    """Export a new version to ``models/versions/`` (its sha256 in the sidecar)."""
    digest = hashlib.sha256(blob).hexdigest()
    path = version_model_path(settings.models_dir, symbol, version)
    return write_model_file(path, blob, {**metadata, "file_sha256": digest})


def sync_model_file(settings: Settings, symbol: str) -> Path | None:
    """Write ``fast_model_{SYMBOL}.npz`` (+ .json) from the promoted version, else the latest one;
    the sha256 is checked before writing. None when the symbol has no version."""
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            "SELECT version, npz, sha256, metadata, promoted FROM btc.agent_state WHERE symbol = %s"
            " ORDER BY promoted DESC, version DESC LIMIT 1",
            (symbol,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    version, blob, digest, meta, promoted = int(row[0]), bytes(row[1]), row[2], row[3], bool(row[4])
    if hashlib.sha256(blob).hexdigest() != digest:
        raise QtrainError(f"{symbol} version {version}: stored table does not match its sha256; not written")
    meta = meta if isinstance(meta, dict) else json.loads(meta)
    path = model_path(settings.models_dir, symbol)
    return write_model_file(path, blob, {**meta, "file_sha256": digest, "promoted": promoted})
