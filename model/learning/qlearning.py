"""Tabular Q-learning over discretised market states and the position (flat or long).

Full state ``s = m * 2 + pos`` (``m`` from ``model.learning.states``, ``pos`` 0 flat / 1 long); actions
``HOLD`` keeps the position, ``BUY`` goes long, ``SELL`` goes flat. The table is saved as an
``.npz`` (arrays only, loaded with ``allow_pickle=False``) with its metadata as JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import BUY, HOLD, SELL
from model.learning.states import N_POSITIONS, StateSpace

FORMAT_VERSION = 1
"""Version of the saved Q-table layout; bump it when the arrays or required metadata change."""

N_ACTIONS = 3
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip member timestamp: same table -> same file bytes
_REQUIRED_META = ("symbol", "timeframe", "state_space")


@dataclass(frozen=True)
class TrainStats:
    """What one ``train`` call did: per-epoch exploration rate, reward and trades."""

    epochs: int
    steps: int  # valid steps per epoch (state known and return finite)
    skipped: int  # steps per epoch without a state or a return
    epsilons: tuple[float, ...]
    rewards: tuple[float, ...]  # sum of rewards per epoch (shaping included)
    trades: tuple[int, ...]  # position changes per epoch
    seconds: float


class FastQLearning:
    """A Q-table ``q[n_states, 3]`` with visit counts, trained by epsilon-greedy Q-learning.

    Reward of action ``a`` at step ``t`` taken in position ``pos``, moving to ``new_pos``::

        r = new_pos * returns[t] - fee * |new_pos - pos| + shaping[t, a]

    ``returns[t] = log(close[t+1] / close[t])`` is what holding over the next candle earns and
    ``fee`` is the cost of one position change as a fraction (log-return units, exact enough for
    small fees). Target: ``r + gamma * max_a' q[s']`` with ``s' = m[t+1] * 2 + new_pos``, or ``r``
    alone when step ``t+1`` has no state or is past the end (treated as an episode end).
    """

    def __init__(
        self,
        n_states: int,
        *,
        alpha: float = 0.1,
        gamma: float = 0.95,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        fee: float = 0.001,
        seed: int = 0,
    ) -> None:
        if isinstance(n_states, bool) or not isinstance(n_states, int | np.integer):
            raise ValueError(f"n_states must be an int, got {n_states!r}")
        if n_states < N_POSITIONS or n_states % N_POSITIONS:
            raise ValueError(
                f"n_states must be a positive multiple of 2 (market states x position), got {n_states}"
            )
        _check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        _check_range("gamma", gamma, 0.0, 1.0)
        _check_range("epsilon_start", epsilon_start, 0.0, 1.0)
        _check_range("epsilon_end", epsilon_end, 0.0, 1.0)
        _check_range("fee", fee, 0.0, 1.0)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.n_states = int(n_states)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.epsilon_start = float(epsilon_start)
        self.epsilon_end = float(epsilon_end)
        self.fee = float(fee)
        self.seed = int(seed)
        self.q: NDArray[np.float64] = np.zeros((self.n_states, N_ACTIONS), dtype=np.float64)
        self.visits: NDArray[np.int64] = np.zeros((self.n_states, N_ACTIONS), dtype=np.int64)

    @property
    def n_market_states(self) -> int:
        """Number of market states (``n_states // 2``)."""
        return self.n_states // N_POSITIONS

    def hyperparameters(self) -> dict[str, float | int]:
        """The constructor options, as saved in the metadata."""
        return {
            "alpha": self.alpha,
            "gamma": self.gamma,
            "epsilon_start": self.epsilon_start,
            "epsilon_end": self.epsilon_end,
            "fee": self.fee,
            "seed": self.seed,
        }

    def _check_states(self, market_states: Any) -> NDArray[np.int64]:
        m = np.asarray(market_states)
        if m.ndim != 1 or not (np.issubdtype(m.dtype, np.integer) or m.size == 0):
            raise ValueError(f"market_states must be a 1-D integer array, got {m.dtype} {m.shape}")
        m = m.astype(np.int64, copy=False)
        if m.size and (m.min() < -1 or m.max() >= self.n_market_states):
            raise ValueError(
                f"market_states must be in [0, {self.n_market_states}) or -1, got range "
                f"[{m.min()}, {m.max()}]: encode with the state space this table was built for"
            )
        return m

    def train(
        self,
        market_states: NDArray[np.integer[Any]],
        returns: NDArray[np.floating[Any]],
        *,
        epochs: int,
        shaping: NDArray[np.floating[Any]] | None = None,
    ) -> TrainStats:
        """Run ``epochs`` passes over the series in time order, updating ``q`` and ``visits`` in place.

        Each epoch starts flat at t=0. Steps with state -1 or a NaN return are skipped (no action,
        position kept). Exploration rate falls linearly per epoch from ``epsilon_start`` to
        ``epsilon_end``; random numbers come from ``default_rng(seed)`` created afresh per call,
        drawn per epoch in one go, so the same table, data and seed give a byte-identical table.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        m = self._check_states(market_states)
        n = m.shape[0]
        r = np.asarray(returns, dtype=np.float64)
        if r.shape != (n,):
            raise ValueError(f"returns must have shape ({n},) like market_states, got {r.shape}")
        if shaping is None:
            sh = np.zeros((n, N_ACTIONS), dtype=np.float64)
        else:
            sh = np.asarray(shaping, dtype=np.float64)
            if sh.shape != (n, N_ACTIONS):
                raise ValueError(f"shaping must have shape ({n}, 3), got {sh.shape}")
            if not np.all(np.isfinite(sh)):
                raise ValueError("shaping contains NaN or inf: give 0.0 where there is no shaping")

        valid = (m >= 0) & np.isfinite(r)
        # Per step: offset of the state's row block in the flat table (m*6), -1 when skipped;
        # offset of the next state's block, -1 when t+1 is skipped or past the end (terminal).
        base6 = np.where(valid, m * (N_POSITIONS * N_ACTIONS), -1)
        next6 = np.full(n, -1, dtype=np.int64)
        next6[:-1] = base6[1:]
        steps = [
            (t, b, nb) for t, (b, nb) in enumerate(zip(base6.tolist(), next6.tolist(), strict=True)) if b >= 0
        ]
        rets = np.where(valid, r, 0.0).tolist()
        shf = sh.reshape(-1).tolist()

        q = self.q.reshape(-1).tolist()
        vis = self.visits.reshape(-1).tolist()
        alpha, gamma, fee = self.alpha, self.gamma, self.fee
        rng = np.random.default_rng(self.seed)
        epsilons = np.linspace(self.epsilon_start, self.epsilon_end, int(epochs))
        rewards: list[float] = []
        trades: list[int] = []
        t0 = time.perf_counter()
        for eps in epsilons.tolist():
            u = rng.random(n)
            rand_a = rng.integers(0, N_ACTIONS, size=n)
            explore = np.where(u < eps, rand_a, -1).tolist()
            pos = 0
            total = 0.0
            n_trades = 0
            for t, b, nb in steps:
                i = b + 3 * pos
                a = explore[t]
                if a < 0:  # greedy, ties -> lowest action index
                    a, best = 0, q[i]
                    if q[i + 1] > best:
                        a, best = 1, q[i + 1]
                    if q[i + 2] > best:
                        a = 2
                new_pos = pos if a == HOLD else (1 if a == BUY else 0)
                rew = new_pos * rets[t] + shf[3 * t + a]
                if new_pos != pos:
                    rew -= fee
                    n_trades += 1
                if nb >= 0:
                    j = nb + 3 * new_pos
                    qa, qb, qc = q[j], q[j + 1], q[j + 2]
                    target = rew + gamma * (qa if qa >= qb and qa >= qc else (qb if qb >= qc else qc))
                else:
                    target = rew
                i += a
                q[i] += alpha * (target - q[i])
                vis[i] += 1
                total += rew
                pos = new_pos
            rewards.append(total)
            trades.append(n_trades)
        seconds = time.perf_counter() - t0
        self.q = np.array(q, dtype=np.float64).reshape(self.n_states, N_ACTIONS)
        self.visits = np.array(vis, dtype=np.int64).reshape(self.n_states, N_ACTIONS)
        return TrainStats(
            epochs=int(epochs),
            steps=len(steps),
            skipped=n - len(steps),
            epsilons=tuple(epsilons.tolist()),
            rewards=tuple(rewards),
            trades=tuple(trades),
            seconds=seconds,
        )

    def greedy_actions(self, market_states: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
        """Greedy action per row for position flat (column 0) and long (column 1); HOLD where state is -1."""
        m = self._check_states(market_states)
        table = np.argmax(self.q.reshape(self.n_market_states, N_POSITIONS, N_ACTIONS), axis=2)
        out: NDArray[np.int64] = table[np.maximum(m, 0)].astype(np.int64)
        out[m < 0] = HOLD
        return out

    def q_score(
        self,
        market_states: NDArray[np.integer[Any]],
        pos: int | NDArray[np.integer[Any]],
        *,
        scale: float | None = None,
    ) -> NDArray[np.float64]:
        """``tanh((Q[BUY] - Q[SELL]) / scale)`` per row in [-1, 1], NaN where the state is -1.

        ``scale`` defaults to the mean |Q[BUY] - Q[SELL]| over visited states, so a typical
        state maps to about tanh(1) = 0.76 whatever the timeframe; unvisited states score 0.
        """
        m = self._check_states(market_states)
        p = np.broadcast_to(np.asarray(pos), m.shape)
        if not np.all((p == 0) | (p == 1)):
            raise ValueError("pos must be 0 (flat) or 1 (long)")
        diff = self.q[:, BUY] - self.q[:, SELL]
        if scale is None:
            seen = self.visits.sum(axis=1) > 0
            scale = float(np.mean(np.abs(diff[seen]))) if seen.any() else 0.0
            scale = scale if scale > 0 else 1.0
        elif not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        s = np.maximum(m, 0) * N_POSITIONS + p.astype(np.int64)
        out = np.tanh(diff[s] / scale)
        return np.where(m < 0, np.nan, out)

    # ------------------------------------------------------------------ persistence

    def checksum(self) -> str:
        """sha256 hex of ``q.tobytes() + visits.tobytes()``."""
        return _checksum(self.q, self.visits)

    def to_bytes(self, metadata: Mapping[str, Any]) -> bytes:
        """The table as ``.npz`` bytes: arrays ``q``, ``visits``, ``meta`` (JSON as uint8), no pickle.

        ``metadata`` must hold ``symbol``, ``timeframe`` and ``state_space`` (``StateSpace.to_json()``);
        hyper-parameters, ``format_version`` and ``sha256`` are added. Same table -> same bytes.
        """
        meta = self.metadata(metadata)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in (
                ("q", self.q),
                ("visits", self.visits),
                ("meta", np.frombuffer(_dump_meta(meta), dtype=np.uint8)),
            ):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                with zf.open(info, "w") as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()

    def metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``metadata`` completed with hyper-parameters, shape, ``format_version`` and ``sha256``."""
        missing = [k for k in _REQUIRED_META if k not in metadata]
        if missing:
            raise ValueError(
                f"metadata lacks {missing}: give symbol, timeframe and state_space (StateSpace.to_json())"
            )
        space = StateSpace.from_json(metadata["state_space"])
        if space.n_states != self.n_states:
            raise ValueError(
                f"metadata state_space has {space.n_states} states but the table has {self.n_states}: "
                "save the state space the table was trained with"
            )
        meta = dict(metadata)
        meta.update(
            hyperparameters=self.hyperparameters(),
            n_states=self.n_states,
            format_version=FORMAT_VERSION,
            sha256=self.checksum(),
        )
        return meta

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[FastQLearning, dict[str, Any]]:
        """Inverse of ``to_bytes``: checks layout, version, shapes, checksum; ValueError says what to do."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"data must be bytes, got {type(data).__name__}")
        return _parse(bytes(data), source="data")

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Path:
        """Write ``path`` (.npz) and its metadata as ``path.with_suffix('.json')``, each atomically."""
        path = Path(path)
        blob = self.to_bytes(metadata)
        meta = self.metadata(metadata)
        _atomic_write(path, blob)
        _atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[FastQLearning, dict[str, Any]]:
        """Read a table written by ``save``; the ``.npz`` is authoritative (the JSON is for people)."""
        path = Path(path)
        return _parse(path.read_bytes(), source=str(path))


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bound}{low}, {high}], got {value!r}")


def _checksum(q: NDArray[np.float64], visits: NDArray[np.int64]) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(q).tobytes())
    h.update(np.ascontiguousarray(visits).tobytes())
    return h.hexdigest()


def _dump_meta(meta: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be plain JSON (str, numbers, lists, dicts; no NaN): {exc}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parse(data: bytes, *, source: str) -> tuple[FastQLearning, dict[str, Any]]:
    fix = "re-export it with `qtrain models export` or re-train the symbol"
    if not data.startswith(b"PK\x03\x04"):
        raise ValueError(f"{source} is not a Q-table .npz (no zip header): {fix}")
    need = {"q", "visits", "meta"}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = set(npz.files)
            arrays = {name: npz[name] for name in need & names}
    except Exception as exc:  # BadZipFile, OSError, EOFError (truncated), ValueError (object arrays)
        raise ValueError(f"{source} is not a readable .npz ({type(exc).__name__}: {exc}): {fix}") from None
    if not need <= names:
        raise ValueError(f"{source} lacks arrays {sorted(need - names)}: not a qtrain Q-table; {fix}")
    q, visits, raw = arrays["q"], arrays["visits"], arrays["meta"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(
            f"{source}: array 'meta' must be uint8 JSON bytes, got {raw.dtype} {raw.shape}; {fix}"
        )
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: metadata is not valid JSON ({exc}); {fix}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: metadata must be a JSON object; {fix}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{source} has format_version {version!r}, this qtrain reads {FORMAT_VERSION}: "
            "use the qtrain version that wrote it, or re-train the symbol"
        )
    if q.dtype != np.float64 or q.ndim != 2 or q.shape[1] != N_ACTIONS:
        raise ValueError(f"{source}: q must be float64 [n_states, 3], got {q.dtype} {q.shape}; {fix}")
    if visits.dtype != np.int64 or visits.shape != q.shape:
        raise ValueError(
            f"{source}: visits must be int64 of shape {q.shape}, got {visits.dtype} {visits.shape}; {fix}"
        )
    n_states = q.shape[0]
    if meta.get("n_states") != n_states:
        raise ValueError(
            f"{source}: q has {n_states} rows but metadata says n_states={meta.get('n_states')!r}; {fix}"
        )
    try:
        space = StateSpace.from_json(meta.get("state_space", {}))
    except ValueError as exc:
        raise ValueError(f"{source}: bad state_space in metadata ({exc}); {fix}") from None
    if space.n_states != n_states:
        raise ValueError(
            f"{source}: state_space has {space.n_states} states but q has {n_states} rows; {fix}"
        )
    digest = _checksum(q, visits)
    if meta.get("sha256") != digest:
        raise ValueError(
            f"{source}: checksum mismatch (sha256 {digest[:12]}..., metadata says "
            f"{str(meta.get('sha256'))[:12]}...): the file is corrupt or was edited; restore it from "
            "agent_state or re-train"
        )
    hp = meta.get("hyperparameters")
    if not isinstance(hp, dict):
        raise ValueError(f"{source}: metadata lacks 'hyperparameters'; {fix}")
    try:
        learner = FastQLearning(n_states, **hp)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: bad hyperparameters in metadata ({exc}); {fix}") from None
    learner.q = np.array(q, dtype=np.float64)
    learner.visits = np.array(visits, dtype=np.int64)
    return learner, meta


__all__ = ["FORMAT_VERSION", "FastQLearning", "TrainStats", "HOLD", "BUY", "SELL"]
