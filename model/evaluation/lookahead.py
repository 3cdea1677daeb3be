"""Look-ahead detection in the spirit of freqtrade's lookahead-analysis.

``fn(candles)`` (features, states, decisions ...) is computed on the full history and on truncated
histories ``candles.slice(0, k)``. A causal value at t < k cannot change when candles k.. are
removed; any value that does is reported with its name, first bad index and count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model.candles import Candles

SeriesFn = Callable[[Candles], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class LookaheadIssue:
    """A series whose past values changed when future candles were removed."""

    name: str
    first_bad_index: int
    n_bad: int
    first_cut: int


@dataclass(frozen=True)
class LookaheadReport:
    """Result of ``check_lookahead``: the names checked, the cut points used and the issues found."""

    names: tuple[str, ...]
    cut_points: tuple[int, ...]
    issues: tuple[LookaheadIssue, ...]

    @property
    def ok(self) -> bool:
        """True when no series looked ahead."""
        return not self.issues

    def bad_names(self) -> tuple[str, ...]:
        """Names of the series that looked ahead."""
        return tuple(i.name for i in self.issues)


def default_cut_points(n: int, *, n_cuts: int = 20, min_len: int = 2) -> tuple[int, ...]:
    """``n_cuts`` distinct cut lengths spread over [min_len, n - 1], always including n - 1."""
    if n - 1 < min_len:
        return ()
    pts = np.unique(np.linspace(min_len, n - 1, num=max(n_cuts, 1)).astype(np.int64))
    return tuple(int(k) for k in pts)


def _changed(full: np.ndarray, part: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    if full.dtype.kind in "fc" or part.dtype.kind in "fc":
        same = np.isclose(part, full, rtol=rtol, atol=atol, equal_nan=True)
    else:
        same = part == full
    return np.asarray(~same)


def check_lookahead(
    candles: Candles,
    fn: SeriesFn,
    *,
    cut_points: Sequence[int] | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> LookaheadReport:
    """Compare ``fn`` on the full history with ``fn`` on each prefix ``candles.slice(0, k)``.

    Every output must be an array of len(candles) along its last axis (2-d arrays such as rule
    firings ``[n_rules, T]`` are compared column-wise). Floats compare with ``rtol``/``atol``, NaN
    equal to NaN.
    """
    n = len(candles)
    cuts = tuple(default_cut_points(n) if cut_points is None else (int(k) for k in cut_points))
    for k in cuts:
        if not 1 <= k <= n:
            raise ValueError(f"cut_points must lie in [1, {n}], got {k}")
    full = {name: np.asarray(v) for name, v in fn(candles).items()}
    for name, v in full.items():
        if v.shape[-1:] != (n,):
            raise ValueError(f"fn output {name!r} has shape {v.shape}, expected length {n} on the last axis")
    first: dict[str, tuple[int, int]] = {}
    count: dict[str, int] = {}
    for k in cuts:
        part = fn(candles.slice(0, k))
        for name, ref in full.items():
            if name not in part:
                raise ValueError(f"fn output {name!r} is missing on the first {k} candles")
            got = np.asarray(part[name])
            if got.shape != ref[..., :k].shape:
                raise ValueError(f"fn output {name!r} has shape {got.shape} on {k} candles")
            bad = _changed(ref[..., :k], got, rtol, atol)
            if bad.ndim > 1:
                bad = np.asarray(bad.reshape(-1, k).any(axis=0))
            hits = np.flatnonzero(bad)
            if len(hits):
                count[name] = count.get(name, 0) + len(hits)
                if name not in first or hits[0] < first[name][0]:
                    first[name] = (int(hits[0]), k)
    issues = tuple(
        LookaheadIssue(name=name, first_bad_index=first[name][0], n_bad=count[name], first_cut=first[name][1])
        for name in full
        if name in first
    )
    return LookaheadReport(names=tuple(full), cut_points=cuts, issues=issues)
