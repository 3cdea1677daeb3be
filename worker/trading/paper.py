"""Paper trading with the promoted Q-tables: accounts, the tick, status and replay. Paper only:
qtrain never places a real order and never asks for exchange API keys.

State lives only in PostgreSQL (``btc.paper_*``, migration 0008). One account trades one or more
symbols; its capital is split equally, each symbol is an independent position (as one backtest
per symbol). The tick (``tick``; the ``qtrain.paper_tick`` task sent by Celery beat) does, per
active account and symbol:

1. fetch new closed candles (``worker.clients.exchange.fetch_symbol``; on a failure, noted, stored
   candles are used);
2. for every stored candle after the last one decided, OLDEST FIRST (a missed tick is caught up
   candle by candle, never skipped): ``model.trading.live.paper_step`` on the candles from the position's
   feature anchor up to it: fill the previous decision at this candle's open with the fee, decide
   at its close with the version promoted when the tick started (hot reload: a promotion is used
   from the next tick on; the decision records its version);
3. write the decision, the fill and the new position in ONE transaction that first locks the
   position row and re-checks ``last_ts``: a tick delivered twice, or two ticks at once, decide
   each candle once (and ``paper_decisions`` is unique per account, symbol and candle).

Order book and recent trades exist only now: they are read for the newest candle only, and only
when this tick's candle fetch succeeded (so that candle is the exchange's newest). A candle that
is caught up late is decided without them, as in a backtest, and its record says so
(``source = 'catch-up'``). ``replay`` runs the same ``paper_step`` over stored candles one at a time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import ccxt

from model.candles import Candles, minute_utc, timeframe_seconds
from model.features import WARMUP
from model.trading.live import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_MAX_RULES,
    AgentConfig,
    Book,
    LiveInputs,
    buy_and_hold_equity,
    paper_step,
)
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.clients.market import DEFAULT_TRADES_LIMIT, LIVE_MAX_ATTEMPTS, MarketData, fetch_market
from worker.errors import BadInput, QtrainError
from worker.settings import Settings, check_fee
from worker.store import db
from worker.store import paper as rows
from worker.store.candles import load_candles, load_range, max_ts
from worker.store.paper import Account
from worker.trading.agent import AgentSettings, load_brain, timeframe_mismatch

log = logging.getLogger("qtrain.paper")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ExchangeFactory = Callable[[str], ccxt.Exchange]

__all__ = ["Account", "accounts", "create_account", "history", "replay", "status", "stop_account", "tick"]


def default_exchange_factory(api_url: str | None) -> ExchangeFactory:
    """``make_exchange`` with the optional base-URL override (public endpoints only, no keys)."""
    return lambda exchange_id: make_exchange(exchange_id, api_url=api_url)


# --------------------------------------------------------------------------- accounts


def check_name(name: str) -> str:
    """An account name: 1-64 letters, digits, ``_ . -``; BadInput otherwise."""
    if not _NAME.match(name or ""):
        raise BadInput(f"paper account name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name


def accounts(settings: Settings, *, active_only: bool = False, name: str | None = None) -> list[Account]:
    """Accounts by id (only active ones, or the one named: BadInput when there is none)."""
    out = rows.accounts(settings.database_url, active_only=active_only, name=name)
    if name is not None and not out:
        raise BadInput(f"no paper account {name!r}: `qtrain paper status` lists them")
    return out


@dataclass(frozen=True)
class Opened:
    """A new paper account (``qtrain paper start``)."""

    name: str
    id: int
    symbols: list[str]
    timeframe: str
    exchange: str
    capital: float
    fee: float
    first_candle: dict[str, int]
    fetched: dict[str, str]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The JSON ``qtrain paper start --json`` prints."""
        return asdict(self)


def create_account(
    settings: Settings,
    agent: AgentSettings,
    *,
    name: str,
    symbols: tuple[str, ...],
    capital: float,
    fee: float,
    timeframe: str,
    exchange: str,
    fetch: bool = True,
    exchange_factory: ExchangeFactory | None = None,
) -> Opened:
    """Open a paper account: each symbol needs a promoted version of ``timeframe``; the first
    candle decided is the one after the newest stored (after fetching)."""
    check_name(name)
    if not (capital > 0 and capital < 1e15):
        raise BadInput(f"--capital must be a positive amount, got {capital}")
    check_fee(fee)
    try:
        step = timeframe_seconds(timeframe)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    url = settings.database_url
    for symbol in symbols:
        v = load_brain(url, symbol, None, max_rules=0).stored
        if v.timeframe != timeframe:
            raise BadInput(
                timeframe_mismatch(
                    symbol, v.version, v.timeframe, timeframe, f"use --timeframe {v.timeframe}"
                )
            )
    if rows.account_exists(url, name):
        raise BadInput(f"paper account {name!r} exists: pick another --name or `qtrain paper stop {name}`")
    factory = exchange_factory or default_exchange_factory(agent.api_url)
    fetched: dict[str, str] = {}
    starts: dict[str, int] = {}
    for symbol in symbols:
        if fetch:
            since = int(time.time()) // step * step - (WARMUP + 24) * step
            try:
                r = fetch_symbol(factory(exchange), url, symbol, timeframe, since=since)
                fetched[symbol] = f"{r.inserted} new candles"
            except QtrainError as exc:
                fetched[symbol] = f"error: {exc}"
        with db.transaction(url) as cur:
            newest = max_ts(cur, symbol, timeframe)
        if newest is None:
            raise BadInput(
                f"no {timeframe} candles for {symbol}: run `qtrain candles fetch --symbols {symbol}`"
                + (f" ({fetched[symbol]})" if symbol in fetched else "")
            )
        starts[symbol] = newest + step
    share = capital / len(symbols)
    config = _account_config(agent)
    positions = [rows.NewPosition(s, share, starts[s] - WARMUP * step, starts[s]) for s in symbols]
    account_id = rows.insert_account(
        url,
        name=name,
        symbols=symbols,
        timeframe=timeframe,
        exchange=exchange,
        capital=capital,
        fee=fee,
        config=config,
        positions=positions,
    )
    if account_id is None:
        raise BadInput(f"paper account {name!r} exists: pick another --name")
    return Opened(name, account_id, list(symbols), timeframe, exchange, capital, fee, starts, fetched, config)


def _account_config(agent: AgentSettings) -> dict[str, Any]:
    return {
        **agent.config.to_json(),
        "book_depth": agent.book_depth,
        "trades_limit": agent.trades_limit,
        "max_rules": agent.max_rules,
    }


def stop_account(settings: Settings, name: str) -> None:
    """Mark an account stopped (its record stays; ticks skip it)."""
    if not rows.stop_account(settings.database_url, name):
        raise BadInput(f"no paper account {name!r}: `qtrain paper status` lists them")


# --------------------------------------------------------------------------- the tick


@dataclass(frozen=True)
class PositionTick:
    """What one tick did for one position: the candles it decided, its notes, or its error."""

    symbol: str
    decided: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{symbol, decided, notes}``, or ``{symbol, error}`` for a position whose tick failed."""
        if self.error is not None:
            return {"symbol": self.symbol, "error": self.error}
        return {"symbol": self.symbol, "decided": self.decided, "notes": self.notes}


def tick_position(
    settings: Settings,
    account: Account,
    symbol: str,
    *,
    exchange_factory: ExchangeFactory | None = None,
    fetch: bool = True,
    api_url: str | None = None,
    market_timeout_s: float = 10.0,
) -> PositionTick:
    """Catch up one position of ``account``: every candle after its last decided one, in order.

    The promoted version is read once per tick (a promotion during a tick is used from the next).
    """
    url = settings.database_url
    step_s = timeframe_seconds(account.timeframe)
    with db.transaction(url) as cur:
        pos = rows.position(cur, account.id, symbol, lock=False)
    out = PositionTick(symbol)
    ex, fetched_ok = _fetch_new(
        settings, account, symbol, pos.anchor_ts, exchange_factory, fetch, api_url, out
    )
    ctx = load_candles(url, symbol, account.timeframe, since=pos.anchor_ts)
    first = pos.start_ts if pos.last_ts is None else pos.last_ts + step_s
    todo = [i for i in range(len(ctx)) if int(ctx.ts[i]) >= first]
    if not todo:
        return out
    max_rules = int(account.config.get("max_rules", DEFAULT_MAX_RULES))
    try:
        loaded = load_brain(url, symbol, None, max_rules=max_rules)
    except BadInput as exc:
        return _waiting(out, account, symbol, int(ctx.ts[todo[0]]), str(exc))
    if loaded.stored.timeframe != account.timeframe:
        why = timeframe_mismatch(
            symbol,
            loaded.brain.version,
            loaded.stored.timeframe,
            account.timeframe,
            "the account keeps waiting",
        )
        return _waiting(out, account, symbol, int(ctx.ts[todo[0]]), why)
    market: MarketData | None = None
    if fetched_ok and ex is not None:  # the newest candle is the exchange's newest: read its book now
        market = fetch_market(
            ex,
            symbol,
            depth=int(account.config.get("book_depth", DEFAULT_BOOK_DEPTH)),
            trades_limit=int(account.config.get("trades_limit", DEFAULT_TRADES_LIMIT)),
            timeout_s=market_timeout_s,
        )
    cfg = AgentConfig.from_json(account.config)
    for k, i in enumerate(todo):
        notes: list[str] = []
        ts = int(ctx.ts[i])
        if i > 0 and ts - int(ctx.ts[i - 1]) > step_s:
            notes.append(f"gap: {(ts - int(ctx.ts[i - 1])) // step_s - 1} candles missing before this one")
        if k == len(todo) - 1 and market is not None:
            live: LiveInputs | None = LiveInputs(
                orderbook=market.orderbook, flow=market.flow, notes=market.notes()
            )
            source = "live"
        else:
            live, source = None, "catch-up"
            notes.append("caught up after the candle's time: no order book or trades for it (as a backtest)")
        with db.transaction(url) as cur:
            now = rows.position(cur, account.id, symbol, lock=True)
            if now.last_ts is not None and now.last_ts >= ts:
                continue  # another tick decided this candle first
            step = paper_step(now.book, ctx.slice(0, i + 1), loaded.brain, cfg, fee=account.fee, live=live)
            rows.save_step(
                cur, account.id, symbol, step, loaded.brain.version, source, [*notes, *step.decided.notes]
            )
        out.decided.append(
            {
                "ts": ts,
                "action": step.decided.action_name,
                "version": loaded.brain.version,
                "fill": None if step.fill is None else step.fill.to_json(),
                "source": source,
            }
        )
    return out


def _fetch_new(
    settings: Settings,
    account: Account,
    symbol: str,
    since: int,
    exchange_factory: ExchangeFactory | None,
    fetch: bool,
    api_url: str | None,
    out: PositionTick,
) -> tuple[ccxt.Exchange | None, bool]:
    """Fetch the position's new closed candles; the exchange and whether the fetch succeeded."""
    if not fetch:
        return None, False
    try:
        ex = (exchange_factory or default_exchange_factory(api_url))(account.exchange)
        fetch_symbol(
            ex, settings.database_url, symbol, account.timeframe, since=since, max_attempts=LIVE_MAX_ATTEMPTS
        )
        return ex, True
    except QtrainError as exc:
        out.notes.append(f"candle fetch failed, using stored candles: {exc}")
        log.warning("paper %s %s: candle fetch failed: %s", account.name, symbol, exc)
        return None, False


def _waiting(out: PositionTick, account: Account, symbol: str, ts: int, why: str) -> PositionTick:
    out.notes.append(f"waiting at {minute_utc(ts)}: {why}")
    log.warning("paper %s %s: %s", account.name, symbol, out.notes[-1])
    return out


def tick(
    settings: Settings,
    *,
    name: str | None = None,
    exchange_factory: ExchangeFactory | None = None,
    fetch: bool = True,
) -> dict[str, list[PositionTick]]:
    """One paper tick over every active account (or the one named): account -> its positions' ticks."""
    agent = AgentSettings.from_env(settings.agent_env)
    out: dict[str, list[PositionTick]] = {}
    for account in accounts(settings, active_only=name is None, name=name):
        if account.state != "active":
            continue
        per = []
        for symbol in account.symbols:
            try:
                per.append(
                    tick_position(
                        settings,
                        account,
                        symbol,
                        exchange_factory=exchange_factory,
                        fetch=fetch,
                        api_url=agent.api_url,
                        market_timeout_s=agent.market_timeout_s,
                    )
                )
            except QtrainError as exc:
                log.error("paper %s %s: tick failed: %s", account.name, symbol, exc)
                per.append(PositionTick(symbol, error=str(exc)))
        out[account.name] = per
    return out


# --------------------------------------------------------------------------- status and replay


@dataclass(frozen=True)
class PositionStatus:
    """One position now: cash, units, equity and PnL against buy-and-hold since its start."""

    symbol: str
    position: str
    qty: float
    cash: float
    equity: float
    capital: float
    pnl: float
    pnl_pct: float
    buy_and_hold_equity: float | None
    buy_and_hold_pnl_pct: float | None
    first_candle: int
    last_candle: int | None
    n_decisions: int
    n_fills: int
    fees_paid: float
    last_decision: dict[str, Any] | None


@dataclass(frozen=True)
class AccountStatus:
    """One account now: its positions and their sum (``qtrain paper status``)."""

    name: str
    state: str
    symbols: list[str]
    timeframe: str
    exchange: str
    capital: float
    fee: float
    equity: float
    pnl: float
    pnl_pct: float
    buy_and_hold_pnl_pct: float | None
    positions: list[PositionStatus]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The JSON ``qtrain paper status --json`` prints."""
        return asdict(self)


def _position_status(rec: rows.PositionRecord, symbol: str, fee: float) -> PositionStatus:
    p, last, capital = rec.position, rec.last, rec.position.capital
    equity = last.equity if last else capital
    bh = None
    if last is not None and rec.entry_open is not None and last.ts > p.start_ts:
        bh = buy_and_hold_equity(capital, entry_open=rec.entry_open, close=last.close, fee=fee)
    return PositionStatus(
        symbol=symbol,
        position="long" if p.book.held else "flat",
        qty=p.book.qty,
        cash=p.book.cash,
        equity=equity,
        capital=capital,
        pnl=equity - capital,
        pnl_pct=(equity / capital - 1.0) * 100.0,
        buy_and_hold_equity=bh,
        buy_and_hold_pnl_pct=None if bh is None else (bh / capital - 1.0) * 100.0,
        first_candle=p.start_ts,
        last_candle=p.last_ts,
        n_decisions=rec.n_decisions,
        n_fills=rec.n_fills,
        fees_paid=rec.fees_paid,
        last_decision=None
        if last is None
        else {
            "ts": last.ts,
            "version": last.version,
            "action": last.action,
            "confidence": last.confidence,
            "score": last.score,
            "source": last.source,
            "decided_at": last.decided_at,
        },
    )


def status(settings: Settings, name: str | None = None) -> list[AccountStatus]:
    """Per account: each position's cash, units, equity and PnL vs buy-and-hold since its start
    (read from PostgreSQL only: one query a position)."""
    out = []
    for a in accounts(settings, name=name):
        step_s = timeframe_seconds(a.timeframe)
        positions = [
            _position_status(rows.position_record(settings.database_url, a, s, step_s), s, a.fee)
            for s in a.symbols
        ]
        equity = sum(p.equity for p in positions)
        bhs = [p.buy_and_hold_equity for p in positions]
        bh_pct = (
            None if any(b is None for b in bhs) else (sum(b or 0.0 for b in bhs) / a.capital - 1.0) * 100.0
        )
        out.append(
            AccountStatus(
                name=a.name,
                state=a.state,
                symbols=list(a.symbols),
                timeframe=a.timeframe,
                exchange=a.exchange,
                capital=a.capital,
                fee=a.fee,
                equity=equity,
                pnl=equity - a.capital,
                pnl_pct=(equity / a.capital - 1.0) * 100.0,
                buy_and_hold_pnl_pct=bh_pct,
                positions=positions,
                config=a.config,
            )
        )
    return out


def history(settings: Settings, name: str, symbol: str) -> dict[str, Any]:
    """Decisions and fills of one position, oldest first, for the report."""
    (a,) = accounts(settings, name=name)
    decisions, fills, capital = rows.decisions_and_fills(settings.database_url, a.id, symbol)
    return {"account": a, "symbol": symbol, "capital": capital, "decisions": decisions, "fills": fills}


@dataclass(frozen=True)
class Replay:
    """The live tick's code over stored candles (``qtrain paper replay``)."""

    symbol: str
    version: int
    since: int
    until: int
    trades: list[dict[str, Any]]
    equity_final: float
    n_decisions: int
    position: str

    def to_json(self) -> dict[str, Any]:
        """The JSON ``qtrain paper replay --json`` prints."""
        return asdict(self)


def replay(
    settings: Settings,
    agent: AgentSettings,
    symbol: str,
    *,
    since: int,
    until: int | None,
    version: int | None = None,
    capital: float = 10_000.0,
    fee: float = 0.001,
) -> Replay:
    """``paper_step`` over stored candles of ``[since, until)`` one at a time (no order book, no
    live trades: as a backtest); the fills, the final equity and the number of decisions."""
    check_fee(fee)
    loaded = load_brain(settings.database_url, symbol, version, max_rules=agent.max_rules)
    ctx, start = load_range(settings.database_url, symbol, loaded.stored.timeframe, since, until)
    book = Book(cash=capital)
    fills = []
    equity = capital
    for i in range(start, len(ctx)):
        step = paper_step(book, ctx.slice(0, i + 1), loaded.brain, agent.config, fee=fee)
        book, equity = step.book, step.equity
        if step.fill is not None:
            fills.append(step.fill.to_json())
    return Replay(
        symbol=symbol,
        version=loaded.brain.version,
        since=int(ctx.ts[start]),
        until=int(ctx.ts[-1]) + timeframe_seconds(ctx.timeframe),
        trades=fills,
        equity_final=equity,
        n_decisions=len(ctx) - start,
        position="long" if book.held else "flat",
    )


def signal_candles(settings: Settings, symbol: str, timeframe: str) -> Candles:
    """The stored candles a signal is decided on: enough history for every feature (``WARMUP`` x 4)."""
    step = timeframe_seconds(timeframe)
    with db.transaction(settings.database_url) as cur:
        newest = max_ts(cur, symbol, timeframe)
    if newest is None:
        raise BadInput(f"no {timeframe} candles for {symbol}: run `qtrain candles fetch --symbols {symbol}`")
    return load_candles(settings.database_url, symbol, timeframe, since=newest - 4 * WARMUP * step)
