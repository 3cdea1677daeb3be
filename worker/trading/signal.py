"""The ensemble's decision now for one symbol (``qtrain signal``): fetch, market data, decide.

Paper only: it reads public market data (candles, order book, recent trades) and returns a
decision; it never places an order and never asks for exchange API keys.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from model.candles import timeframe_seconds
from model.features import WARMUP
from model.trading.ensemble import COMPONENTS
from model.trading.live import LiveInputs, decide_last
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.clients.market import LIVE_MAX_ATTEMPTS, fetch_market
from worker.errors import BadInput, QtrainError
from worker.settings import Settings
from worker.trading.agent import AgentSettings, load_brain, timeframe_mismatch
from worker.trading.paper import signal_candles


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def signal_one(
    settings: Settings,
    agent: AgentSettings,
    symbol: str,
    *,
    timeframe: str,
    exchange: str,
    offline: bool,
    position: int,
    now: float,
) -> dict[str, Any]:
    """The decision for one symbol now, with every component, its weight and what was missing."""
    loaded = load_brain(settings.database_url, symbol, None, max_rules=agent.max_rules)
    v = loaded.stored
    if v.timeframe != timeframe:
        raise BadInput(
            timeframe_mismatch(symbol, v.version, v.timeframe, timeframe, f"use --timeframe {v.timeframe}")
        )
    step = timeframe_seconds(timeframe)
    notes: list[str] = []
    live: LiveInputs | None = None
    market_info: dict[str, Any] = {}
    if offline:
        notes.append("offline: stored candles only; no order book, flow from the candles (as a backtest)")
    else:
        try:
            ex = make_exchange(exchange, api_url=agent.api_url)
            since = int(now) // step * step - 4 * WARMUP * step
            fetch_symbol(
                ex,
                settings.database_url,
                symbol,
                timeframe,
                since=since,
                now=now,
                max_attempts=LIVE_MAX_ATTEMPTS,
            )
        except BadInput:
            raise
        except QtrainError as exc:
            notes.append(f"candle fetch failed, using stored candles: {exc}")
            ex = None
        if ex is not None:
            market = fetch_market(
                ex,
                symbol,
                depth=agent.book_depth,
                trades_limit=agent.trades_limit,
                timeout_s=agent.market_timeout_s,
            )
            live = LiveInputs(orderbook=market.orderbook, flow=market.flow, notes=market.notes())
            market_info = {
                "book_levels": market.book_levels,
                "n_trades": market.n_trades,
                "retries": market.retries,
            }
        else:
            notes.append("exchange unreachable: no order book or trades")
    ctx = signal_candles(settings, symbol, timeframe)
    decided = decide_last(ctx, loaded.brain, agent.config, position=position, live=live)
    d = decided.decision
    weights = agent.config.weights
    components = {
        name: {
            "score": d.components.get(name),
            "weight": d.weights_used.get(name, 0.0),
            "configured_weight": float(weights.get(name, 0.0)),
        }
        for name in COMPONENTS
    }
    missing = [m for m in d.missing if float(weights.get(m, 0.0)) > 0 or m == "llm"]
    if "llm" in d.missing:
        why = "the version has no analysed windows with rules" if not loaded.brain.rules else "no data"
        notes.append(f"llm: {why}")
    if "flow" not in d.missing:
        notes.append(f"flow from {decided.flow_source}")
    notes.extend(decided.notes)
    if d.note:
        notes.append(d.note)
    candle_close = decided.ts + step
    return {
        "symbol": symbol,
        "action": decided.action_name,
        "confidence": d.confidence,
        "score": None if math.isnan(d.score) else d.score,
        "position": "long" if position else "flat",
        "components": components,
        "missing": missing,
        "version": v.version,
        "timeframe": timeframe,
        "candle_ts": decided.ts,
        "candle_time": _iso(decided.ts),
        "close": decided.close,
        "data_age_s": round(max(0.0, now - candle_close), 1),
        "offline": offline,
        "n_rules": len(loaded.brain.rules),
        **market_info,
        "notes": notes,
    }
