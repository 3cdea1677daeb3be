"""The run-time agent's configuration and model: settings from the environment, the promoted version.

Environment (read once by ``Settings`` into ``agent_env``; flags of ``qtrain signal`` / ``qtrain
paper start`` override them; defaults are the seed ``FastTradingModel``'s):

- ``QTRAIN_WEIGHTS``: ``technical=0.35,orderbook=0.30,flow=0.25,qlearning=0.10,llm=0`` (a partial
  list changes only the components named); weights are renormalised over the components with data.
- ``QTRAIN_BUY_THRESHOLD`` (0.2), ``QTRAIN_SELL_THRESHOLD`` (-0.2), ``QTRAIN_MIN_CONFIDENCE`` (0.3).
- ``QTRAIN_BOOK_DEPTH`` (10 levels per side), ``QTRAIN_TRADES_LIMIT`` (200 recent trades),
  ``QTRAIN_LLM_MAX_RULES`` (50 rules of the version's analyses, newest windows first).
- ``QTRAIN_MARKET_TIMEOUT_S`` (10): seconds per order-book / trades request (3 attempts).
- ``QTRAIN_PAPER_EVERY_S`` (60): seconds between the beat's paper ticks; 0 turns them off.
- ``QTRAIN_EXCHANGE_API_URL``: hidden override of the exchange's base URL (tests).

The model is always read from PostgreSQL (``btc.agent_state``), never from a local ``models/``:
in a multi-machine deployment the reducer ran somewhere else.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model.trading.ensemble import DEFAULT_BUY_THRESHOLD, DEFAULT_MIN_CONFIDENCE, DEFAULT_SELL_THRESHOLD
from model.trading.live import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_MAX_RULES,
    AgentConfig,
    Brain,
    newest_rules,
    parse_weights,
)
from worker.clients.market import DEFAULT_MARKET_TIMEOUT_S, DEFAULT_TRADES_LIMIT
from worker.errors import BadInput
from worker.store import analyses, db, versions

DEFAULT_PAPER_EVERY_S = 60.0


@dataclass(frozen=True)
class AgentSettings:
    """Everything the run-time agent is configured with."""

    config: AgentConfig = field(default_factory=AgentConfig)
    book_depth: int = DEFAULT_BOOK_DEPTH
    trades_limit: int = DEFAULT_TRADES_LIMIT
    max_rules: int = DEFAULT_MAX_RULES
    paper_every_s: float = DEFAULT_PAPER_EVERY_S
    market_timeout_s: float = DEFAULT_MARKET_TIMEOUT_S
    api_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **flags: Any) -> AgentSettings:
        """Settings from ``env`` with ``flags`` (not None) on top; BadInput (one line) when wrong.

        Flags: ``weights`` (text as QTRAIN_WEIGHTS), ``buy_threshold``, ``sell_threshold``,
        ``min_confidence``, ``book_depth``, ``max_rules``.
        """

        def pick(flag: str, var: str) -> str | None:
            v = flags.get(flag)
            if v is not None:
                return str(v)
            text = env.get(var, "").strip()
            return text or None

        def number(flag: str, var: str, default: float, low: float, high: float) -> float:
            text = pick(flag, var)
            if text is None:
                return default
            try:
                v = float(text)
            except ValueError:
                raise BadInput(f"{var} / --{flag.replace('_', '-')} must be a number, got {text!r}") from None
            if not (math.isfinite(v) and low <= v <= high):
                raise BadInput(
                    f"{var} / --{flag.replace('_', '-')} must be in [{low:g}, {high:g}], got {text}"
                )
            return v

        weights_text = pick("weights", "QTRAIN_WEIGHTS")
        try:
            weights = parse_weights(weights_text or "")
        except ValueError as exc:
            raise BadInput(f"QTRAIN_WEIGHTS / --weights: {exc}") from None
        config = AgentConfig(
            weights=weights,
            buy_threshold=number("buy_threshold", "QTRAIN_BUY_THRESHOLD", DEFAULT_BUY_THRESHOLD, -1, 1),
            sell_threshold=number("sell_threshold", "QTRAIN_SELL_THRESHOLD", DEFAULT_SELL_THRESHOLD, -1, 1),
            min_confidence=number("min_confidence", "QTRAIN_MIN_CONFIDENCE", DEFAULT_MIN_CONFIDENCE, 0, 1),
        )
        try:
            config.model()
        except ValueError as exc:
            raise BadInput(f"agent settings: {exc}") from None
        return cls(
            config=config,
            book_depth=int(number("book_depth", "QTRAIN_BOOK_DEPTH", DEFAULT_BOOK_DEPTH, 1, 1000)),
            trades_limit=int(number("trades_limit", "QTRAIN_TRADES_LIMIT", DEFAULT_TRADES_LIMIT, 1, 1000)),
            max_rules=int(number("max_rules", "QTRAIN_LLM_MAX_RULES", DEFAULT_MAX_RULES, 0, 10_000)),
            paper_every_s=number("paper_every_s", "QTRAIN_PAPER_EVERY_S", DEFAULT_PAPER_EVERY_S, 0, 86_400),
            market_timeout_s=number(
                "market_timeout_s", "QTRAIN_MARKET_TIMEOUT_S", DEFAULT_MARKET_TIMEOUT_S, 0.1, 300
            ),
            api_url=env.get("QTRAIN_EXCHANGE_API_URL", "").strip() or None,
        )


@dataclass(frozen=True)
class LoadedBrain:
    """A version's ``Brain`` and the stored row it came from."""

    brain: Brain
    stored: versions.StoredVersion
    n_analyses: int


_cache: dict[tuple[str, str, int, int], LoadedBrain] = {}
_cache_lock = threading.Lock()


def _rules(url: str, v: versions.StoredVersion, max_rules: int) -> tuple[int, tuple[Any, ...]]:
    if v.batch_id is None or max_rules == 0:
        return 0, ()
    windows = analyses.batch_analyses(url, int(v.batch_id), v.symbol)
    return len(windows), newest_rules([w.rules for w in windows], max_rules)


def load_brain(url: str, symbol: str, version: int | None, *, max_rules: int) -> LoadedBrain:
    """Version ``version`` of ``symbol`` (None: the promoted one) with its analyses' rules, from
    PostgreSQL; versions never change, so each is loaded once per process. BadInput when absent."""
    if version is None:
        with db.transaction(url) as cur:
            promoted = versions.promoted_number(cur, symbol)
        if promoted is None:
            raise BadInput(
                f"{symbol} has no promoted Q-table version: train one (`qtrain train`) or promote one"
                f" (`qtrain models promote --symbol {symbol} --version N`)"
            )
        version = promoted
    key = (url, symbol, version, max_rules)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    stored = versions.load_version(url, symbol, version)
    n, rules = _rules(url, stored, max_rules)
    loaded = LoadedBrain(Brain(stored.version, stored.learner, stored.space, rules), stored, n)
    with _cache_lock:
        _cache[key] = loaded
    return loaded


def timeframe_mismatch(symbol: str, version: int, table: str, wanted: str, fix: str) -> str:
    """The one wording of "the promoted version is a X table, not Y" (paper start, tick, signal)."""
    return f"{symbol}'s promoted version {version} is a {table} table, not {wanted}: {fix}"
