"""The agent at run time, pure: one decision at the newest candle and the paper fill arithmetic.

Shared by ``qtrain signal``, the paper tick (``worker.trading.paper``) and ``qtrain paper replay``, so a
live decision, a replayed one and the backtest's ``ensemble`` policy are the same computation:

* components at the last candle of ``ctx`` (the candles from the account's feature anchor up to
  the candle being decided): ``technical`` (``model.trading.signals.technical_score``), ``flow`` (recent
  trades' taker imbalance when given live, else the candle's taker-buy share or CLV proxy, as the
  backtest), ``orderbook`` (only when given live: no history of it exists), ``qlearning`` (the
  version's ``q_score`` at the market state for the CURRENT position) and ``llm`` (the version's
  rules fired on the current features, ``rules_score``);
* ``FastTradingModel.decide`` with the configured weights and thresholds (components without
  data are left out and the weights renormalised);
* position scan as ``model.evaluation.policies.compose_position_maps``: flat + BUY -> long, long + SELL ->
  flat, anything else keeps the position;
* fills as ``model.evaluation.backtest.run_backtest`` with ``size=1`` and no slippage: the decision at the
  close of candle t fills at the open of t+1; a buy spends all cash, ``qty = cash / ((1 + fee) *
  price)``, fee ``fee * qty * price``; a sell gets ``qty * price`` minus the same fee.

Features are computed on all of ``ctx``: the EMAs inside them depend on where the history starts,
so the paper account and ``paper replay`` keep a fixed anchor (``WARMUP`` candles before the first
decided candle), exactly as the backtest loads its range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import ACTIONS, BUY, HOLD, SELL
from model.analyst.rules import Rule, fired
from model.candles import Candles
from model.features import compute_features
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.trading.ensemble import (
    COMPONENTS,
    DEFAULT_BUY_THRESHOLD,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_SELL_THRESHOLD,
    DEFAULT_WEIGHTS,
    Decision,
    FastTradingModel,
)
from model.trading.signals import flow_score_from_candles, technical_score

#: Order-book levels per side read by the order-book score.
DEFAULT_BOOK_DEPTH = 10
#: Rules of the version's analyses used by the LLM component at run time (newest windows first).
DEFAULT_MAX_RULES = 50


@dataclass(frozen=True)
class AgentConfig:
    """Weights, thresholds and ``min_confidence`` of the run-time ensemble (defaults: the seed's)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    buy_threshold: float = DEFAULT_BUY_THRESHOLD
    sell_threshold: float = DEFAULT_SELL_THRESHOLD
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def model(self) -> FastTradingModel:
        """The ``FastTradingModel`` of this configuration (ValueError names a bad setting)."""
        return FastTradingModel(
            weights=self.weights,
            buy_threshold=self.buy_threshold,
            sell_threshold=self.sell_threshold,
            min_confidence=self.min_confidence,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form (stored with a paper account, so its behaviour does not change with an env)."""
        return {
            "weights": {k: float(self.weights.get(k, 0.0)) for k in COMPONENTS},
            "buy_threshold": self.buy_threshold,
            "sell_threshold": self.sell_threshold,
            "min_confidence": self.min_confidence,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentConfig:
        """Inverse of ``to_json``; checked by building the model."""
        cfg = cls(
            weights={str(k): float(v) for k, v in dict(data.get("weights", DEFAULT_WEIGHTS)).items()},
            buy_threshold=float(data.get("buy_threshold", DEFAULT_BUY_THRESHOLD)),
            sell_threshold=float(data.get("sell_threshold", DEFAULT_SELL_THRESHOLD)),
            min_confidence=float(data.get("min_confidence", DEFAULT_MIN_CONFIDENCE)),
        )
        cfg.model()
        return cfg


def parse_weights(text: str, base: Mapping[str, float] | None = None) -> dict[str, float]:
    """``"technical=0.4,llm=0.1"`` over ``base`` (default the seed's weights); ValueError names the part."""
    out = dict(DEFAULT_WEIGHTS if base is None else base)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in COMPONENTS:
            raise ValueError(f"weight {part!r} is not NAME=NUMBER with NAME one of {', '.join(COMPONENTS)}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"weight {part!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"weight {part!r} must be a finite number >= 0")
        out[name] = v
    return out


def newest_rules(windows: Sequence[Sequence[Rule]], max_rules: int = DEFAULT_MAX_RULES) -> tuple[Rule, ...]:
    """The rules of analysed windows given oldest first, newest window first, at most ``max_rules``."""
    if max_rules < 0:
        raise ValueError(f"max_rules must be >= 0, got {max_rules}")
    out: list[Rule] = []
    for rules in reversed(windows):
        out.extend(rules)
        if len(out) >= max_rules:
            break
    return tuple(out[:max_rules])


def rules_score(rules: Sequence[Rule], features: Mapping[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """Per row, the confidence-weighted net vote of the rules that fire, in [-1, 1].

    ``sum(sign * conf) / sum(conf)`` over fired rules (BUY +1, SELL -1, HOLD 0: a HOLD rule pulls
    toward 0); 0 where rules exist but none fires (their verdict: no signal); NaN for every row
    when there are no rules (no LLM data: the ensemble leaves the component out).
    """
    n = len(next(iter(features.values()))) if features else 0
    if not rules:
        return np.full(n, np.nan)
    f = fired(list(rules), features).astype(np.float64)
    sign = np.array([1.0 if r.action == BUY else -1.0 if r.action == SELL else 0.0 for r in rules])
    conf = np.array([float(r.confidence) for r in rules])
    num = (sign * conf) @ f
    den = conf @ f
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.asarray(np.clip(out, -1.0, 1.0), dtype=np.float64)


@dataclass(frozen=True)
class LiveInputs:
    """Market data only the live exchange has, for the newest candle; None: not available."""

    orderbook: float | None = None
    flow: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Brain:
    """What a Q-table version brings to a decision: its table, state space and rules."""

    version: int
    learner: FastQLearning
    space: StateSpace
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class LiveDecision:
    """A decision at the last candle of ``ctx`` and how it was reached."""

    ts: int
    close: float
    position: int
    decision: Decision
    flow_source: str
    notes: tuple[str, ...] = ()

    @property
    def action_name(self) -> str:
        """``HOLD`` / ``BUY`` / ``SELL``."""
        return ACTIONS[self.decision.action]


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def decide_last(
    ctx: Candles, brain: Brain, config: AgentConfig, *, position: int, live: LiveInputs | None = None
) -> LiveDecision:
    """Decide at the last candle of ``ctx`` for the current ``position`` (0 flat, 1 long)."""
    if len(ctx) < 1:
        raise ValueError("ctx is empty: need at least the candle to decide on")
    if position not in (0, 1):
        raise ValueError(f"position must be 0 or 1, got {position}")
    # Whole-series calls, as the backtest makes them (the value at the last row is the same as on
    # the last row alone, but this keeps even the float kernels identical to the backtest's).
    feats = compute_features(ctx)
    last = {k: v[-1:] for k, v in feats.items()}
    m = brain.space.encode(feats)
    flow = flow_score_from_candles(ctx)
    values: dict[str, float | None] = {
        "technical": _finite(float(technical_score(feats)[-1])),
        "orderbook": None,
        "flow": _finite(float(flow.score[-1])),
        "qlearning": _finite(float(brain.learner.q_score(m, position)[-1])),
        "llm": _finite(float(rules_score(brain.rules, last)[0])) if brain.rules else None,
    }
    source = flow.source
    notes: list[str] = []
    if live is not None:
        values["orderbook"] = _finite(live.orderbook)
        if _finite(live.flow) is not None:
            values["flow"], source = _finite(live.flow), "trades"
        notes.extend(live.notes)
    model = config.model()
    if not any(model.weights[k] > 0 for k, v in values.items() if v is not None):
        decision = Decision(
            action=HOLD,
            confidence=0.0,
            score=float("nan"),
            components={},
            weights_used={},
            missing=COMPONENTS,
            note="no weighted component has data (indicator warm-up): HOLD",
        )
    else:
        decision = model.decide(**values)
    return LiveDecision(
        ts=int(ctx.ts[-1]),
        close=float(ctx.close[-1]),
        position=position,
        decision=decision,
        flow_source=source,
        notes=tuple(notes),
    )


def next_position(position: int, action: int) -> int:
    """Flat + BUY -> long, long + SELL -> flat, else keep (``compose_position_maps``'s step)."""
    if position == 0 and action == BUY:
        return 1
    if position == 1 and action == SELL:
        return 0
    return position


@dataclass(frozen=True)
class Book:
    """A paper position: cash, units held, whether long, and the position decided for the next open."""

    cash: float
    qty: float = 0.0
    held: int = 0
    target: int = 0

    def equity(self, price: float) -> float:
        """Cash plus the units marked at ``price``."""
        return self.cash + self.qty * price


@dataclass(frozen=True)
class Fill:
    """One paper fill in the shape ``paper replay`` and ``backtest --trades`` print."""

    side: str
    ts: int
    price: float
    qty: float
    fee: float

    def to_json(self) -> dict[str, Any]:
        """``{"side", "ts", "price", "qty", "fee"}``."""
        return {"side": self.side, "ts": self.ts, "price": self.price, "qty": self.qty, "fee": self.fee}


def fill_at_open(book: Book, *, ts: int, price: float, fee: float) -> tuple[Book, Fill | None]:
    """Execute ``book.target`` at ``price`` (the open of candle ``ts``); the new book and the fill."""
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"fill price must be a positive number, got {price!r}")
    if book.target == book.held:
        return book, None
    if book.target == 1:
        qty = book.cash / ((1.0 + fee) * price)
        paid = fee * qty * price
        return Book(cash=0.0, qty=qty, held=1, target=1), Fill("buy", ts, price, qty, paid)
    proceeds = book.qty * price
    paid = fee * proceeds
    return (
        Book(cash=book.cash + proceeds - paid, qty=0.0, held=0, target=0),
        Fill("sell", ts, price, book.qty, paid),
    )


@dataclass(frozen=True)
class Step:
    """One tick's work on one candle: the fill of the previous decision, the new decision, the book."""

    book: Book
    fill: Fill | None
    decided: LiveDecision
    equity: float


def paper_step(
    book: Book, ctx: Candles, brain: Brain, config: AgentConfig, *, fee: float, live: LiveInputs | None = None
) -> Step:
    """The tick on the last candle of ``ctx``: fill the pending decision at its open, decide at its
    close for the resulting position, set the target for the next open, mark equity at the close."""
    ts, price = int(ctx.ts[-1]), float(ctx.open[-1])
    after, fill = fill_at_open(book, ts=ts, price=price, fee=fee)
    decided = decide_last(ctx, brain, config, position=after.held, live=live)
    after = replace(after, target=next_position(after.held, decided.decision.action))
    return Step(book=after, fill=fill, decided=decided, equity=after.equity(float(ctx.close[-1])))


def buy_and_hold_equity(capital: float, *, entry_open: float, close: float, fee: float) -> float:
    """Equity of buying at ``entry_open`` with all ``capital`` (fee paid) marked at ``close``."""
    return capital / ((1.0 + fee) * entry_open) * close


def trades_from_backtest(
    entries: Sequence[tuple[int, float, float]], exits: Sequence[tuple[int, float, float]], *, fee: float
) -> list[Fill]:
    """Fills from a backtest's round trips: ``entries``/``exits`` are ``(ts, price, size)``, in order."""
    out = [Fill("buy", int(t), float(p), float(q), fee * float(q) * float(p)) for t, p, q in entries]
    out += [Fill("sell", int(t), float(p), float(q), fee * float(q) * float(p)) for t, p, q in exits]
    out.sort(key=lambda f: (f.ts, 0 if f.side == "sell" else 1))
    return out
