"""Negative controls of a batch's analyses: what a table trained from them must beat before anyone
believes the analyses' CONTENT helps (not only their prior).

The unshaped twin (no analysis) says whether analyses help at all. Two controls keep the analyses'
prior and remove their content:

* ``shuffled``: the batch's own analyses on the wrong windows. Every window keeps its position
  (its ``start_ts``/``end_ts``); its answer (action, confidence, rules) is the one written for
  another window of the same range, moved by a seeded permutation with no fixed point (a
  derangement: no analysis lands on its own window when there are at least 2). Same answers,
  same mix of actions, same rules; only the link between an answer and its window is broken.
* ``constant``: every window given the batch's most common answer and no rules: the most common
  action (ties: the lowest action code, HOLD < BUY < SELL) with the median confidence of the
  windows that chose it. The regime is not part of it: ``AnalysedWindow`` carries what training
  reads (action, confidence, rules) and no regime, so a regime could not change the table.

Both use only the windows that reach the range ``[since, until)`` (the training range: the
windows ``model.learning.training.training_data`` maps onto its candles); nothing from outside the range
moves in. Deterministic: the result depends on the set of windows (not their order) and the seed.
A pooled recipe applies a control per symbol, then pools (``apply``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from model.evaluation.folds import Fold
from model.learning.training import AnalysedWindow

SHUFFLED, CONSTANT = "shuffled", "constant"
CONTROLS = (SHUFFLED, CONSTANT)
"""The negative controls, in the order they are trained, reported and compared."""


def in_range(analysed: Sequence[AnalysedWindow], since: int, until: int) -> list[AnalysedWindow]:
    """The windows of ``analysed`` that reach ``[since, until)`` (epoch s; a window's ``end_ts`` is
    its last candle's), sorted by ``(start_ts, end_ts)`` so the order given does not matter."""
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    kept = [a for a in analysed if a.start_ts < until and a.end_ts >= since]
    return sorted(kept, key=lambda a: (a.start_ts, a.end_ts, a.action, a.confidence))


def derangement(n: int, *, seed: int) -> NDArray[np.int64]:
    """A seeded permutation of ``range(n)`` with no fixed point when ``n >= 2`` (one n-cycle:
    a random order ``p``, each element sent to the next of ``p``); ``n < 2``: the identity."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n < 2:
        return np.arange(n, dtype=np.int64)
    p = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[p] = np.roll(p, -1)
    return out


def shuffled(
    analysed: Sequence[AnalysedWindow], *, since: int, until: int, seed: int
) -> list[AnalysedWindow]:
    """The ``shuffled`` control (module doc): the windows of ``[since, until)``, window i given the
    answer of window ``derangement(n, seed)[i]``."""
    windows = in_range(analysed, since, until)
    perm = derangement(len(windows), seed=seed)
    return [
        replace(w, action=src.action, confidence=src.confidence, rules=src.rules)
        for w, src in zip(windows, (windows[int(j)] for j in perm), strict=True)
    ]


def common_answer(analysed: Sequence[AnalysedWindow]) -> tuple[int, float] | None:
    """The most common action of ``analysed`` (ties: the lowest code) and the median confidence of
    the windows that chose it; None when there is no window."""
    if not analysed:
        return None
    actions = np.array([a.action for a in analysed], dtype=np.int64)
    conf = np.array([a.confidence for a in analysed], dtype=np.float64)
    codes, counts = np.unique(actions, return_counts=True)  # sorted codes: argmax takes the lowest on a tie
    action = int(codes[int(np.argmax(counts))])
    return action, float(np.median(conf[actions == action]))


def constant(analysed: Sequence[AnalysedWindow], *, since: int, until: int) -> list[AnalysedWindow]:
    """The ``constant`` control (module doc): the windows of ``[since, until)``, each given the
    range's ``common_answer`` and no rules."""
    windows = in_range(analysed, since, until)
    answer = common_answer(windows)
    if answer is None:
        return []
    action, confidence = answer
    return [replace(w, action=action, confidence=confidence, rules=()) for w in windows]


def control(
    name: str, analysed: Sequence[AnalysedWindow], *, since: int, until: int, seed: int
) -> list[AnalysedWindow]:
    """The control ``name`` (one of ``CONTROLS``) of ``analysed`` over ``[since, until)``."""
    if name == SHUFFLED:
        return shuffled(analysed, since=since, until=until, seed=seed)
    if name == CONSTANT:
        return constant(analysed, since=since, until=until)
    raise ValueError(f"unknown control {name!r}: use one of {', '.join(CONTROLS)}")


def apply(
    name: str,
    analysed: Mapping[str, Sequence[AnalysedWindow]],
    ranges: Mapping[str, tuple[int, int]],
    *,
    seed: int,
) -> dict[str, list[AnalysedWindow]]:
    """Per symbol of ``analysed``: its control ``name`` over its own range ``ranges[symbol]``
    (``(since, until)``), each symbol apart: what a pooled recipe trains its control on."""
    missing = sorted(set(analysed) - set(ranges))
    if missing:
        raise ValueError(f"no range for {', '.join(missing)}: give every symbol's (since, until)")
    return {
        s: control(name, analysed[s], since=ranges[s][0], until=ranges[s][1], seed=seed)
        for s in sorted(analysed)
    }


def fold_control(
    name: str, analysed: Sequence[AnalysedWindow], fold: Fold, *, seed: int
) -> list[AnalysedWindow]:
    """The control ``name`` of a walk-forward fold: of the analyses its table trains with (windows
    ending before the test range), over the fold's training range."""
    past = [w for w in analysed if w.end_ts < fold.test_since]
    return control(name, past, since=fold.train_since, until=fold.test_since, seed=seed)
