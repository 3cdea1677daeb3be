"""Discretisation of indicator features into the market states of the tabular Q-learner.

Each feature is cut into bins by sorted inner edges (``len(edges) + 1`` bins, right-closed on the
left: ``x < e0`` is bin 0, ``e0 <= x < e1`` is bin 1, ...). The bins of all features combine into
one mixed-radix market state ``m`` (the first feature is the most significant digit). A row
with any NaN feature (indicator warm-up) has no state: ``-1``. Encoding row ``t`` reads only the
features of row ``t``, so the states are as causal as the features.

A feature named ``"a/b"`` is the ratio of features ``a`` and ``b`` of the same row (NaN where ``b``
is 0): ``"ema_gap/atr_pct"`` is the distance from the EMA50 in units of the pair's own ATR, a
state on the pair's scale rather than in % of price (``VOL_BINS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Inner bin edges of the default state space (feature -> edges), chosen from the usual meaning of
# each indicator on hourly crypto candles (units as in model/features.py):
#   rsi        [30, 45, 55, 70]  -> oversold / weak / neutral / strong / overbought   (5 bins)
#   macd_hist  [-0.1, 0, 0.1]    -> % of price: falling fast / falling / rising / rising fast (4)
#                                   (BTC 1h 2017-2021: quartiles are about -0.11 and +0.11)
#   bb_pct_b   [0, 0.5, 1]       -> below lower band / lower half / upper half / above upper (4)
#   volume_z   [-1, 1]           -> quiet / normal / heavy volume                        (3 bins)
#   ema_gap    [-2, 0, 2]        -> % from EMA50: far below / below / above / far above  (4 bins)
#                                   (BTC 1h: about 15 / 35 / 35 / 15 % of the hours)
# 5 * 4 * 4 * 3 * 4 = 960 market states, 1,920 states with the position: about 19 visits per
# state for a year of hourly candles, 38 for two years.
DEFAULT_BINS: dict[str, tuple[float, ...]] = {
    "rsi": (30.0, 45.0, 55.0, 70.0),
    "macd_hist": (-0.1, 0.0, 0.1),
    "bb_pct_b": (0.0, 0.5, 1.0),
    "volume_z": (-1.0, 1.0),
    "ema_gap": (-2.0, 0.0, 2.0),
}

# Volatility-aware variant (issue 22): MACD histogram and EMA gap in units of the ATR (both % of
# price) instead of % of price, with DEFAULT_BINS' edges read in ATRs: the same bins where the ATR
# is 1 % (BTC 1h's median, 2017-2021), wider ones on a pair twice as volatile (ONE, CELR: 2.5 %).
# Chosen by meaning, not fitted; used only where it wins out of sample (bench/pooled_research.py).
VOL_BINS: dict[str, tuple[float, ...]] = {
    "rsi": (30.0, 45.0, 55.0, 70.0),
    "macd_hist/atr_pct": (-0.1, 0.0, 0.1),
    "bb_pct_b": (0.0, 0.5, 1.0),
    "volume_z": (-1.0, 1.0),
    "ema_gap/atr_pct": (-2.0, 0.0, 2.0),
}

N_POSITIONS = 2  # 0 flat, 1 long


def feature_values(features: Mapping[str, NDArray[Any]], name: str) -> NDArray[np.float64]:
    """The values of feature ``name`` (``"a/b"``: the row-wise ratio, NaN where ``b`` is 0 or NaN)."""
    if "/" in name:
        a, b = name.split("/", 1)
        num, den = feature_values(features, a), feature_values(features, b)
        with np.errstate(all="ignore"):
            return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    if name not in features:
        raise ValueError(f"features has no {name!r}: compute it first (have {sorted(features)})")
    return np.asarray(features[name], dtype=np.float64)


def _as_edges(name: str, values: Any) -> NDArray[np.float64]:
    arr = np.array(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"edges of feature {name!r} are empty: give at least one inner edge")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"edges of feature {name!r} contain NaN or inf: {arr.tolist()}")
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError(f"edges of feature {name!r} must be strictly increasing, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class StateSpace:
    """Features and their inner bin edges; ``edges[i]`` cuts ``features[i]`` into ``len+1`` bins."""

    features: tuple[str, ...]
    edges: tuple[NDArray[np.float64], ...]

    def __post_init__(self) -> None:
        features = tuple(str(f) for f in self.features)
        if not features:
            raise ValueError("features is empty: a state space needs at least one feature")
        if len(set(features)) != len(features):
            raise ValueError(f"features has duplicates: {list(features)}")
        if len(self.edges) != len(features):
            raise ValueError(f"edges has {len(self.edges)} entries, features has {len(features)}")
        edges = tuple(_as_edges(f, e) for f, e in zip(features, self.edges, strict=True))
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "edges", edges)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateSpace):
            return NotImplemented
        return self.features == other.features and all(
            np.array_equal(a, b) for a, b in zip(self.edges, other.edges, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def default(cls) -> StateSpace:
        """The fixed, documented bins of ``DEFAULT_BINS`` (960 market states)."""
        return cls(tuple(DEFAULT_BINS), tuple(np.array(e) for e in DEFAULT_BINS.values()))

    @classmethod
    def volatility_aware(cls) -> StateSpace:
        """The bins of ``VOL_BINS`` (960 market states, gaps on the pair's own ATR scale)."""
        return cls(tuple(VOL_BINS), tuple(np.array(e) for e in VOL_BINS.values()))

    @classmethod
    def fit(
        cls,
        features: Mapping[str, NDArray[np.floating[Any]]],
        *,
        names: Sequence[str],
        n_bins: int = 5,
        train_mask: NDArray[np.bool_] | None = None,
    ) -> StateSpace:
        """Quantile bins (``n_bins`` per feature) from the training rows only, NaN ignored.

        Only rows where ``train_mask`` is true are read, so test rows cannot leak into the bins.
        Tied quantiles collapse, so a feature may end up with fewer than ``n_bins`` bins.
        """
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
        names = tuple(names)
        if not names:
            raise ValueError("names is empty: name at least one feature to discretise")
        n = _common_length(features, names)
        if train_mask is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.asarray(train_mask)
            if mask.dtype != np.bool_ or mask.shape != (n,):
                raise ValueError(
                    f"train_mask must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}"
                )
        qs = np.arange(1, n_bins) / n_bins
        edges = []
        for name in names:
            x = feature_values(features, name)[mask]
            x = x[np.isfinite(x)]
            if x.size == 0:
                raise ValueError(
                    f"feature {name!r} has no finite value in the training rows: cannot fit bins"
                )
            e = np.unique(np.quantile(x, qs))
            edges.append(e)
        return cls(names, tuple(edges))

    @property
    def n_bins(self) -> tuple[int, ...]:
        """Number of bins of each feature."""
        return tuple(len(e) + 1 for e in self.edges)

    @property
    def n_market_states(self) -> int:
        """Number of market states (product of the bin counts)."""
        return int(np.prod(self.n_bins, dtype=np.int64))

    @property
    def n_states(self) -> int:
        """Number of full states ``m * 2 + position`` (flat or long)."""
        return self.n_market_states * N_POSITIONS

    def encode(self, features: Mapping[str, NDArray[np.floating[Any]]]) -> NDArray[np.int64]:
        """Market state of each row (int64 in ``[0, n_market_states)``), ``-1`` where any input is NaN."""
        n = _common_length(features, self.features)
        state = np.zeros(n, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        for name, edges in zip(self.features, self.edges, strict=True):
            x = feature_values(features, name)
            missing |= np.isnan(x)
            b = np.searchsorted(edges, x, side="right").astype(np.int64)
            state = state * (len(edges) + 1) + b
        state[missing] = -1
        return state

    def decode(self, states: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
        """Bin index of each feature for each market state, shape ``[T, n_features]`` (-1 rows stay -1)."""
        s = np.asarray(states, dtype=np.int64)
        out = np.empty((s.size, len(self.features)), dtype=np.int64)
        rest = np.where(s < 0, 0, s.reshape(-1))
        for i in range(len(self.features) - 1, -1, -1):
            base = len(self.edges[i]) + 1
            out[:, i] = rest % base
            rest = rest // base
        out[s.reshape(-1) < 0] = -1
        return out

    def to_json(self) -> dict[str, Any]:
        """A plain dict of lists, saved beside the Q-table so it can be re-encoded identically."""
        return {"features": list(self.features), "edges": [e.tolist() for e in self.edges]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateSpace:
        """Inverse of ``to_json``; ValueError says which field is wrong."""
        if not isinstance(data, Mapping) or "features" not in data or "edges" not in data:
            raise ValueError("state space JSON must be an object with 'features' and 'edges' lists")
        feats, edges = data["features"], data["edges"]
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise ValueError("state space 'features' must be a list of feature names")
        if not isinstance(edges, list) or not all(isinstance(e, list) for e in edges):
            raise ValueError("state space 'edges' must be a list of lists of numbers")
        return cls(tuple(feats), tuple(np.array(e, dtype=np.float64) for e in edges))


def _common_length(features: Mapping[str, NDArray[Any]], names: Sequence[str]) -> int:
    n = -1
    for name in names:
        arr = feature_values(features, name)
        if arr.ndim != 1:
            raise ValueError(f"feature {name!r} must be 1-D, got shape {arr.shape}")
        if n == -1:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"feature {name!r} has {arr.shape[0]} rows, expected {n}")
    return max(n, 0)
