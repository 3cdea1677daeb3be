"""What ``qtrain llm check`` measures of a model's answers: pure metrics, numpy in, numbers out.

Inputs are per-window arrays the caller collected from the model (``worker.evaluation.llm_check``):
actions as ``model.ACTIONS`` indices (``NO_ANSWER`` = -1 where a call failed), regimes as text,
the window's own log return, the realised log return of the candles after it. Every rate comes with
the count it was taken over (a rate of 3 windows says little), and is None when that count is 0.

- ``mode_share``: share of the most common action (1.0 = the same action for every window).
- ``regime_agreement``: of the answers saying bull or bear, the share whose direction matches the
  sign of the window's own return (chance 0.5; range/volatile answers are not counted).
- ``mirror_flip``: of the windows answered BUY or SELL, the share whose mirrored window (every
  return negated, ``mirror_candles``) is answered with the opposite action. A model that reads the
  window flips; one that answers from a prior does not.
- ``direction_hit``: of the BUY/SELL answers, the share whose direction matches the sign of the
  realised return after the window (the next 24 candles).
- ``guess_rate``: how often a guess (asset, year) equals the truth; ``chance_agreement`` the rate
  the same guesses would score if they ignored the window (a model that always says BTC is right
  as often as BTC windows are common, which is a prior, not memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.candles import Candles

NO_ANSWER = -1
#: Direction of each action index (HOLD, BUY, SELL) and of each regime.
_ACTION_DIRECTION = np.array([0, 1, -1], dtype=np.int64)
_REGIME_DIRECTION = {"bull": 1, "bear": -1}


@dataclass(frozen=True)
class Rate:
    """A share and the number of cases it was taken over (``value`` None when ``n`` is 0)."""

    value: float | None
    n: int

    def to_json(self) -> dict[str, float | int | None]:
        """``{"value": ..., "n": ...}`` with the value rounded to 3 decimals."""
        return {"value": None if self.value is None else round(self.value, 3), "n": self.n}


def _rate(hits: np.ndarray, mask: np.ndarray) -> Rate:
    n = int(np.count_nonzero(mask))
    return Rate(float(np.count_nonzero(hits & mask)) / n if n else None, n)


def _actions(actions: Sequence[int] | np.ndarray) -> np.ndarray:
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    if np.any((a < NO_ANSWER) | (a >= len(_ACTION_DIRECTION))):
        raise ValueError("actions must be ACTIONS indices or NO_ANSWER (-1)")
    return a


def direction(actions: Sequence[int] | np.ndarray) -> np.ndarray:
    """+1 for BUY, -1 for SELL, 0 for HOLD and for ``NO_ANSWER``."""
    a = _actions(actions)
    return np.where(a >= 0, _ACTION_DIRECTION[np.maximum(a, 0)], 0)


def mode_share(actions: Sequence[int] | np.ndarray) -> Rate:
    """Share of the most common action among the answered windows (1.0 = constant)."""
    a = _actions(actions)
    answered = a[a >= 0]
    if answered.size == 0:
        return Rate(None, 0)
    return Rate(float(np.bincount(answered).max()) / answered.size, int(answered.size))


def regime_agreement(regimes: Sequence[str], window_returns: Sequence[float] | np.ndarray) -> Rate:
    """Of the bull/bear answers on windows that moved, the share agreeing with the window's own sign."""
    r = np.asarray(window_returns, dtype=np.float64).reshape(-1)
    if len(regimes) != r.size:
        raise ValueError(f"regimes has {len(regimes)} entries, window_returns {r.size}")
    d = np.array([_REGIME_DIRECTION.get(x, 0) for x in regimes], dtype=np.int64)
    sign = np.sign(np.nan_to_num(r)).astype(np.int64)
    return _rate(d == sign, (d != 0) & (sign != 0))


def mirror_flip(actions: Sequence[int] | np.ndarray, mirrored: Sequence[int] | np.ndarray) -> Rate:
    """Of the windows answered BUY or SELL (and answered when mirrored), the share whose mirror
    got the opposite action."""
    a, m = direction(actions), direction(mirrored)
    if a.size != m.size:
        raise ValueError(f"actions has {a.size} entries, mirrored {m.size}")
    answered = _actions(mirrored) >= 0
    return _rate(m == -a, (a != 0) & answered)


def direction_hit(actions: Sequence[int] | np.ndarray, future_returns: Sequence[float] | np.ndarray) -> Rate:
    """Of the BUY/SELL answers with a realised move after the window, the share in its direction."""
    d = direction(actions)
    r = np.asarray(future_returns, dtype=np.float64).reshape(-1)
    if d.size != r.size:
        raise ValueError(f"actions has {d.size} entries, future_returns {r.size}")
    sign = np.sign(np.nan_to_num(r)).astype(np.int64)
    return _rate(d == sign, (d != 0) & (sign != 0))


def guess_rate(guesses: Sequence[str | None], truths: Sequence[str]) -> Rate:
    """How often a (case-insensitive) guess equals the truth, over the windows with a guess."""
    if len(guesses) != len(truths):
        raise ValueError(f"guesses has {len(guesses)} entries, truths {len(truths)}")
    g = np.array([(x or "").strip().casefold() for x in guesses], dtype=object)
    t = np.array([x.strip().casefold() for x in truths], dtype=object)
    return _rate(g == t, g != "")


def chance_agreement(guesses: Sequence[str | None], truths: Sequence[str]) -> float | None:
    """The hit rate guesses would have if they were independent of the windows: the sum over values
    of (share of guesses) x (share of truths), over the windows with a guess. Always guessing the
    most common truth scores its share, so a prior is not taken for memory."""
    if len(guesses) != len(truths):
        raise ValueError(f"guesses has {len(guesses)} entries, truths {len(truths)}")
    pairs = [(g.strip().casefold(), t.strip().casefold()) for g, t in zip(guesses, truths, strict=True) if g]
    if not pairs:
        return None
    g, t = (np.array(x, dtype=object) for x in zip(*pairs, strict=True))
    values = np.unique(np.concatenate([g, t]).astype(str))
    share_g = (g.astype(str)[:, None] == values[None, :]).mean(axis=0)
    share_t = (t.astype(str)[:, None] == values[None, :]).mean(axis=0)
    return float(np.dot(share_g, share_t))


def mirror_candles(candles: Candles, pivot: float) -> Candles:
    """``candles`` with every log return negated around ``pivot`` (price ``p`` -> ``pivot**2 / p``):
    a rise becomes a fall of the same size; high and low swap; volume, times and symbol stay."""
    if not np.isfinite(pivot) or pivot <= 0:
        raise ValueError(f"pivot must be a positive price, got {pivot}")
    sq = float(pivot) ** 2

    def flip(col: np.ndarray) -> np.ndarray:
        return sq / np.asarray(col, dtype=np.float64)

    taker = candles.taker_buy_volume
    return Candles(
        ts=candles.ts,
        open=flip(candles.open),
        high=flip(candles.low),
        low=flip(candles.high),
        close=flip(candles.close),
        volume=candles.volume,
        taker_buy_volume=None if taker is None else candles.volume - taker,
        symbol=candles.symbol,
        timeframe=candles.timeframe,
    )


def median(values: Sequence[float | None] | np.ndarray) -> float | None:
    """Median of the finite values (None when there is none)."""
    x = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


#: Verdict thresholds: failed answers above this share make a model unusable; an action share at
#: or above ``CONSTANT_SHARE`` with mirror flips below ``FEW_FLIPS`` means answers ignore the window;
#: a guess rate ``RECOGNISES`` above chance (or a named-vs-anonymous gap that large) is memory.
MAX_FAILED = 0.25
CONSTANT_SHARE = 0.9
FEW_FLIPS = 0.25
RECOGNISES = 0.2


def _value(node: Mapping[str, Any], key: str) -> float | None:
    v = node.get(key)
    if isinstance(v, Mapping):
        v = v.get("value")
    return None if v is None else float(v)


def verdict(report: Mapping[str, Any]) -> str:
    """One line a person acts on, from a ``qtrain llm check`` report (its validity, tokens,
    sensitivity and memory keys): the most serious finding first."""
    validity, tokens = report["validity"], report["tokens"]
    sens, memory = report["sensitivity"], report["memory"]
    answers = max(int(validity["answers"]), 1)
    failed = int(validity["failed"])
    found: list[str] = []
    if failed / answers > MAX_FAILED:
        top = next((k for k in validity.get("reasons", {}) if not k.startswith("repair:")), "?")
        found.append(
            f"not usable: {failed} of {answers} answers failed (mostly {top}); raise"
            " QTRAIN_LLM_MAX_TOKENS or use a larger model"
        )
    share, flips = _value(sens, "mode_share"), _value(sens, "mirror_flip")
    if share is not None and share >= CONSTANT_SHARE and (flips is None or flips < FEW_FLIPS):
        found.append(
            f"answers ignore the window ({share:.0%} {sens.get('mode_action')}, a mirrored window flips"
            f" {flips or 0:.0%}): its analyses add a prior, not content"
        )
    for key, what in (("asset", "the asset"), ("year", "the year")):
        right, chance = _value(memory[key], "value"), memory[key].get("chance")
        if right is not None and chance is not None and right - float(chance) > RECOGNISES:
            found.append(
                f"it names {what} from an anonymous window ({right:.0%} vs chance {float(chance):.0%})"
            )
    gap = memory.get("names_gap")
    if gap is not None and float(gap) > RECOGNISES:
        found.append(
            f"named prompts agree {float(gap):+.0%} more with what happened next: never train with"
            " QTRAIN_PROMPT=named on history"
        )
    if found:
        return "; ".join(found)
    seconds = tokens.get("seconds_median")
    cost = "" if seconds is None else f", {seconds:.1f} s a window (1,000: {seconds * 1000 / 3600:.1f} h)"
    return (
        f"usable: {answers - failed} of {answers} answers valid, they depend on the window"
        f" (most common action {share or 0:.0%}){cost}"
    )
