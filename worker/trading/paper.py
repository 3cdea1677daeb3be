"""Paper trading with the promoted Q-tables: accounts, the tick, status and replay. Paper only:
qtrain never places a real order and never asks for exchange API keys.

State lives only in PostgreSQL (``btc.paper_*``, migration 0008). One account trades one or more
symbols; its capital is split equally, each symbol is an independent position (as one backtest
per symbol). The tick (``tick``; the ``qtrain.paper_tick`` task sent by Celery beat) does, per
active account and symbol:

1. fetch new closed candles (``worker.clients.exchange.fetch_symbol``; on a failure, noted, stored
   candles are used);
2. for every stored candle after the last one decided, OLDEST FIRST (a missed tick is caught up
   candle by candle, never skipped): ``model.live.paper_step`` on the candles from the position's
   feature anchor up to it: fill the previous decision at this candle's open with the fee, decide
   at its close with the version promoted NOW (hot reload; the decision records its version);
3. write the decision, the fill and the new position in ONE transaction that first locks the
   position row and re-checks ``last_ts``: a tick delivered twice, or two ticks at once, decide
   each candle once (and ``paper_decisions`` is unique per account, symbol and candle).

Order book and recent trades exist only now: they are read for the newest candle only, and only
when this tick's candle fetch succeeded (so that candle is the exchange's newest). A candle that
is caught up late is decided without them, as in a backtest, and its record says so
(``source = 'catch-up'``). ``replay`` runs the same ``paper_step`` over stored candles one at a time.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt

from model import ACTIONS
from model.candles import Candles, minute_utc, timeframe_seconds
from model.features import WARMUP
from model.live import AgentConfig, Book, LiveInputs, Step, buy_and_hold_equity, paper_step
from worker.clients.exchange import fetch_symbol, make_exchange
from worker.clients.market import LIVE_MAX_ATTEMPTS, MarketData, fetch_market
from worker.errors import BadInput, QtrainError
from worker.evaluation.backtest import load_range
from worker.settings import Settings
from worker.store import db
from worker.store.candles import load_candles
from worker.trading.agent import AgentSettings, load_brain

log = logging.getLogger("qtrain.paper")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ExchangeFactory = Callable[[str], ccxt.Exchange]


def _dt(ts: int | None) -> Any:
    from worker.store.batches import ts_to_dt

    return None if ts is None else ts_to_dt(ts)


def default_exchange_factory(api_url: str | None) -> ExchangeFactory:
    """``make_exchange`` with the optional base-URL override (public endpoints only, no keys)."""
    return lambda exchange_id: make_exchange(exchange_id, api_url=api_url)


# --------------------------------------------------------------------------- accounts


def check_name(name: str) -> str:
    """An account name: 1-64 letters, digits, ``_ . -``; BadInput otherwise."""
    if not _NAME.match(name or ""):
        raise BadInput(f"paper account name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name


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
) -> dict[str, Any]:
    """Open a paper account: each symbol needs a promoted version of ``timeframe``; the first
    candle decided is the one after the newest stored (after fetching); a summary."""
    check_name(name)
    if not (capital > 0 and capital < 1e15):
        raise BadInput(f"--capital must be a positive amount, got {capital}")
    if not 0.0 <= fee < 0.1:
        raise BadInput(f"--fee must be in [0, 0.1) (0.001 = 0.1% per side), got {fee}")
    try:
        step = timeframe_seconds(timeframe)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    url = settings.database_url
    for symbol in symbols:
        v = load_brain(url, symbol, None, max_rules=0).stored
        if v.timeframe != timeframe:
            raise BadInput(
                f"{symbol}'s promoted version {v.version} is a {v.timeframe} table, not {timeframe}:"
                f" use --timeframe {v.timeframe}"
            )
    with db.transaction(url) as cur:
        cur.execute("SELECT 1 FROM btc.paper_accounts WHERE name = %s", (name,))
        if cur.fetchone() is not None:
            raise BadInput(
                f"paper account {name!r} exists: pick another --name or `qtrain paper stop {name}`"
            )
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
            from worker.store.candles import max_ts

            newest = max_ts(cur, symbol, timeframe)
        if newest is None:
            raise BadInput(
                f"no {timeframe} candles for {symbol}: run `qtrain candles fetch --symbols {symbol}`"
                + (f" ({fetched[symbol]})" if symbol in fetched else "")
            )
        starts[symbol] = newest + step
    share = capital / len(symbols)
    with db.transaction(url) as cur:
        cur.execute(
            "INSERT INTO btc.paper_accounts (name, symbols, timeframe, exchange, capital, fee, config)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, list(symbols), timeframe, exchange, capital, fee, json.dumps(_account_config(agent))),
        )
        row = cur.fetchone()
        if row is None:
            raise BadInput(f"paper account {name!r} exists: pick another --name")
        account_id = int(row[0])
        for symbol in symbols:
            start = starts[symbol]
            cur.execute(
                "INSERT INTO btc.paper_positions (account_id, symbol, capital, anchor_ts, start_ts, cash)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (account_id, symbol, share, _dt(start - WARMUP * step), _dt(start), share),
            )
    return {
        "name": name, "id": account_id, "symbols": list(symbols), "timeframe": timeframe,
        "exchange": exchange, "capital": capital, "fee": fee, "first_candle": starts,
        "fetched": fetched, "config": _account_config(agent),
    }  # fmt: skip


def _account_config(agent: AgentSettings) -> dict[str, Any]:
    return {**agent.config.to_json(), "book_depth": agent.book_depth, "trades_limit": agent.trades_limit,
            "max_rules": agent.max_rules}  # fmt: skip


def stop_account(settings: Settings, name: str) -> dict[str, Any]:
    """Mark an account stopped (its record stays; ticks skip it)."""
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            "UPDATE btc.paper_accounts SET state = 'stopped', stopped_at = coalesce(stopped_at, now())"
            " WHERE name = %s RETURNING id",
            (name,),
        )
        row = cur.fetchone()
    if row is None:
        raise BadInput(f"no paper account {name!r}: `qtrain paper status` lists them")
    return {"name": name, "state": "stopped"}


@dataclass(frozen=True)
class Account:
    """One ``btc.paper_accounts`` row."""

    id: int
    name: str
    symbols: tuple[str, ...]
    timeframe: str
    exchange: str
    capital: float
    fee: float
    config: dict[str, Any]
    state: str


_ACOLS = "id, name, symbols, timeframe, exchange, capital, fee, config, state"


def _account(row: Any) -> Account:
    cfg = row[7] if isinstance(row[7], dict) else json.loads(row[7])
    return Account(
        int(row[0]), row[1], tuple(row[2]), row[3], row[4], float(row[5]), float(row[6]), cfg, row[8]
    )


def accounts(settings: Settings, *, active_only: bool = False, name: str | None = None) -> list[Account]:
    """Accounts by id (only active ones, or the one named)."""
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            f"SELECT {_ACOLS} FROM btc.paper_accounts WHERE (NOT %s OR state = 'active')"
            " AND (%s::text IS NULL OR name = %s) ORDER BY id",
            (active_only, name, name),
        )
        out = [_account(r) for r in cur.fetchall()]
    if name is not None and not out:
        raise BadInput(f"no paper account {name!r}: `qtrain paper status` lists them")
    return out


# --------------------------------------------------------------------------- the tick


def _book_of(cur: Any, account_id: int, symbol: str, *, lock: bool) -> tuple[Book, int, int, int | None]:
    cur.execute(
        "SELECT cash, qty, held, target, extract(epoch FROM anchor_ts)::bigint,"
        " extract(epoch FROM start_ts)::bigint, extract(epoch FROM last_ts)::bigint"
        " FROM btc.paper_positions WHERE account_id = %s AND symbol = %s" + (" FOR UPDATE" if lock else ""),
        (account_id, symbol),
    )
    r = cur.fetchone()
    if r is None:
        raise QtrainError(f"paper account {account_id} has no position for {symbol}")
    book = Book(cash=float(r[0]), qty=float(r[1]), held=int(r[2]), target=int(r[3]))
    return book, int(r[4]), int(r[5]), None if r[6] is None else int(r[6])


def _save_step(
    cur: Any, account_id: int, symbol: str, step: Step, version: int, source: str, notes: list[str]
) -> None:
    d = step.decided.decision
    score = None if d.score != d.score else d.score  # NaN -> NULL
    cur.execute(
        "INSERT INTO btc.paper_decisions (account_id, symbol, ts, version, action, confidence, score,"
        " position, target, components, weights, missing, notes, close, cash, qty, equity, source)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            account_id, symbol, _dt(step.decided.ts), version, d.action, d.confidence, score,
            step.decided.position, step.book.target, json.dumps(d.components), json.dumps(d.weights_used),
            list(d.missing), json.dumps([*notes, d.note]), step.decided.close, step.book.cash,
            step.book.qty, step.equity, source,
        ),
    )  # fmt: skip
    if step.fill is not None:
        f = step.fill
        cur.execute(
            "INSERT INTO btc.paper_fills (account_id, symbol, ts, side, price, qty, fee, version)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,(SELECT version FROM btc.paper_decisions WHERE account_id = %s"
            " AND symbol = %s AND ts < %s ORDER BY ts DESC LIMIT 1))",
            (account_id, symbol, _dt(f.ts), f.side, f.price, f.qty, f.fee, account_id, symbol, _dt(f.ts)),
        )
    b = step.book
    cur.execute(
        "UPDATE btc.paper_positions SET cash = %s, qty = %s, held = %s, target = %s, last_ts = %s,"
        " updated_at = now() WHERE account_id = %s AND symbol = %s",
        (b.cash, b.qty, b.held, b.target, _dt(step.decided.ts), account_id, symbol),
    )


def tick_position(
    settings: Settings,
    account: Account,
    symbol: str,
    *,
    exchange_factory: ExchangeFactory | None = None,
    fetch: bool = True,
    api_url: str | None = None,
    market_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Catch up one position of ``account``: every candle after its last decided one, in order."""
    url = settings.database_url
    cfg = AgentConfig.from_json(account.config)
    depth = int(account.config.get("book_depth", 10))
    trades_limit = int(account.config.get("trades_limit", 200))
    max_rules = int(account.config.get("max_rules", 50))
    step_s = timeframe_seconds(account.timeframe)
    with db.transaction(url) as cur:
        _, anchor, start, last = _book_of(cur, account.id, symbol, lock=False)
    out: dict[str, Any] = {"symbol": symbol, "decided": [], "notes": []}
    fetched_ok = False
    factory = exchange_factory or default_exchange_factory(api_url)
    ex: ccxt.Exchange | None = None
    if fetch:
        try:
            ex = factory(account.exchange)
            fetch_symbol(ex, url, symbol, account.timeframe, since=anchor, max_attempts=LIVE_MAX_ATTEMPTS)
            fetched_ok = True
        except QtrainError as exc:
            out["notes"].append(f"candle fetch failed, using stored candles: {exc}")
            log.warning("paper %s %s: candle fetch failed: %s", account.name, symbol, exc)
    ctx = load_candles(url, symbol, account.timeframe, since=anchor)
    first = start if last is None else last + step_s
    todo = [i for i in range(len(ctx)) if int(ctx.ts[i]) >= first]
    market: MarketData | None = None
    for k, i in enumerate(todo):
        newest = k == len(todo) - 1 and fetched_ok
        if newest and market is None and ex is not None:
            market = fetch_market(
                ex, symbol, depth=depth, trades_limit=trades_limit, timeout_s=market_timeout_s
            )
        try:
            loaded = load_brain(url, symbol, None, max_rules=max_rules)
        except BadInput as exc:
            out["notes"].append(f"waiting at {minute_utc(int(ctx.ts[i]))}: {exc}")
            log.warning("paper %s %s: %s", account.name, symbol, out["notes"][-1])
            break
        if loaded.stored.timeframe != account.timeframe:
            out["notes"].append(
                f"waiting at {minute_utc(int(ctx.ts[i]))}: the promoted version {loaded.brain.version} is a"
                f" {loaded.stored.timeframe} table, the account trades {account.timeframe}"
            )
            log.warning("paper %s %s: %s", account.name, symbol, out["notes"][-1])
            break
        notes: list[str] = []
        prev = int(ctx.ts[i - 1]) if i > 0 else None
        if prev is not None and int(ctx.ts[i]) - prev > step_s:
            notes.append(f"gap: {(int(ctx.ts[i]) - prev) // step_s - 1} candles missing before this one")
        if newest and market is not None:
            live = LiveInputs(orderbook=market.orderbook, flow=market.flow, notes=market.notes())
            source = "live"
        else:
            live = None
            source = "catch-up"
            notes.append("caught up after the candle's time: no order book or trades for it (as a backtest)")
        with db.transaction(url) as cur:
            book, _, _, last_now = _book_of(cur, account.id, symbol, lock=True)
            if last_now is not None and last_now >= int(ctx.ts[i]):
                continue  # another tick decided this candle first
            step = paper_step(book, ctx.slice(0, i + 1), loaded.brain, cfg, fee=account.fee, live=live)
            _save_step(
                cur, account.id, symbol, step, loaded.brain.version, source, [*notes, *step.decided.notes]
            )
        out["decided"].append(
            {"ts": int(ctx.ts[i]), "action": step.decided.action_name, "version": loaded.brain.version,
             "fill": None if step.fill is None else step.fill.to_json(), "source": source}
        )  # fmt: skip
    return out


def tick(
    settings: Settings,
    *,
    name: str | None = None,
    exchange_factory: ExchangeFactory | None = None,
    fetch: bool = True,
) -> dict[str, Any]:
    """One paper tick over every active account (or the one named); a summary per account."""
    agent = AgentSettings.from_env(settings.agent_env)
    out: dict[str, Any] = {}
    for account in accounts(settings, active_only=name is None, name=name):
        if account.state != "active":
            continue
        per = []
        for symbol in account.symbols:
            try:
                per.append(
                    tick_position(settings, account, symbol, exchange_factory=exchange_factory, fetch=fetch,
                                  api_url=agent.api_url, market_timeout_s=agent.market_timeout_s)
                )  # fmt: skip
            except QtrainError as exc:
                log.error("paper %s %s: tick failed: %s", account.name, symbol, exc)
                per.append({"symbol": symbol, "error": str(exc)})
        out[account.name] = per
    return out


# --------------------------------------------------------------------------- status and replay


def status(settings: Settings, name: str | None = None) -> list[dict[str, Any]]:
    """Per account: each position's cash, units, equity and PnL vs buy-and-hold since its start
    (read from PostgreSQL only: decisions, fills and stored candles)."""
    out = []
    url = settings.database_url
    for a in accounts(settings, name=name):
        positions = []
        with db.transaction(url) as cur:
            for symbol in a.symbols:
                book, _, start, last = _book_of(cur, a.id, symbol, lock=False)
                cur.execute("SELECT capital FROM btc.paper_positions WHERE account_id = %s AND symbol = %s",
                            (a.id, symbol))  # fmt: skip
                capital = float(cur.fetchone()[0])
                cur.execute(
                    "SELECT extract(epoch FROM ts)::bigint, version, action, confidence, score, close,"
                    " equity, source, decided_at FROM btc.paper_decisions"
                    " WHERE account_id = %s AND symbol = %s ORDER BY ts DESC LIMIT 1",
                    (a.id, symbol),
                )
                d = cur.fetchone()
                cur.execute(
                    "SELECT count(*) FROM btc.paper_decisions WHERE account_id = %s AND symbol = %s",
                    (a.id, symbol),
                )
                n_dec = int(cur.fetchone()[0])
                cur.execute(
                    "SELECT count(*), coalesce(sum(fee), 0) FROM btc.paper_fills"
                    " WHERE account_id = %s AND symbol = %s",
                    (a.id, symbol),
                )
                n_fills, fees = cur.fetchone()
                step = timeframe_seconds(a.timeframe)
                cur.execute(
                    "SELECT open FROM btc.candles WHERE symbol = %s AND timeframe = %s AND ts = %s",
                    (symbol, a.timeframe, _dt(start + step)),
                )
                bh_open = cur.fetchone()
            equity = float(d[6]) if d else capital
            bh = None
            if d is not None and bh_open is not None and int(d[0]) > start:
                bh = buy_and_hold_equity(capital, entry_open=float(bh_open[0]), close=float(d[5]), fee=a.fee)
            positions.append({
                "symbol": symbol, "position": "long" if book.held else "flat", "qty": book.qty,
                "cash": book.cash, "equity": equity, "capital": capital,
                "pnl": equity - capital, "pnl_pct": (equity / capital - 1.0) * 100.0,
                "buy_and_hold_equity": bh,
                "buy_and_hold_pnl_pct": None if bh is None else (bh / capital - 1.0) * 100.0,
                "first_candle": start, "last_candle": last, "n_decisions": n_dec,
                "n_fills": int(n_fills), "fees_paid": float(fees),
                "last_decision": None if d is None else {
                    "ts": int(d[0]), "version": int(d[1]), "action": ACTIONS[int(d[2])],
                    "confidence": float(d[3]), "score": d[4], "source": d[7],
                    "decided_at": d[8].isoformat(),
                },
            })  # fmt: skip
        equity = sum(p["equity"] for p in positions)
        bhs = [p["buy_and_hold_equity"] for p in positions]
        out.append({
            "name": a.name, "state": a.state, "symbols": list(a.symbols), "timeframe": a.timeframe,
            "exchange": a.exchange, "capital": a.capital, "fee": a.fee, "equity": equity,
            "pnl": equity - a.capital, "pnl_pct": (equity / a.capital - 1.0) * 100.0,
            "buy_and_hold_pnl_pct": None if any(b is None for b in bhs)
            else (sum(bhs) / a.capital - 1.0) * 100.0,
            "positions": positions, "config": a.config,
        })  # fmt: skip
    return out


def history(settings: Settings, name: str, symbol: str) -> dict[str, Any]:
    """Decisions and fills of one position, oldest first, for the report."""
    (a,) = accounts(settings, name=name)
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            "SELECT extract(epoch FROM ts)::bigint, version, action, confidence, score, position, target,"
            " components, weights, missing, notes, close, equity, source FROM btc.paper_decisions"
            " WHERE account_id = %s AND symbol = %s ORDER BY ts",
            (a.id, symbol),
        )
        cols = ("ts", "version", "action", "confidence", "score", "position", "target", "components",
                "weights", "missing", "notes", "close", "equity", "source")  # fmt: skip
        decisions = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        cur.execute(
            "SELECT extract(epoch FROM ts)::bigint, side, price, qty, fee, version FROM btc.paper_fills"
            " WHERE account_id = %s AND symbol = %s ORDER BY ts",
            (a.id, symbol),
        )
        fills = [dict(zip(("ts", "side", "price", "qty", "fee", "version"), r, strict=True))
                 for r in cur.fetchall()]  # fmt: skip
        cur.execute("SELECT capital FROM btc.paper_positions WHERE account_id = %s AND symbol = %s",
                    (a.id, symbol))  # fmt: skip
        capital = float(cur.fetchone()[0])
    return {"account": a, "symbol": symbol, "capital": capital, "decisions": decisions, "fills": fills}


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
) -> dict[str, Any]:
    """``paper_step`` over stored candles of ``[since, until)`` one at a time (no order book, no
    live trades: as a backtest); the fills, the final equity and the number of decisions."""
    if not 0.0 <= fee < 0.1:
        raise BadInput(f"--fee must be in [0, 0.1) (0.001 = 0.1% per side), got {fee}")
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
    return {
        "symbol": symbol, "version": loaded.brain.version, "since": int(ctx.ts[start]),
        "until": int(ctx.ts[-1]) + timeframe_seconds(ctx.timeframe), "trades": fills,
        "equity_final": equity, "n_decisions": len(ctx) - start, "position": "long" if book.held else "flat",
    }  # fmt: skip


def signal_candles(settings: Settings, symbol: str, timeframe: str) -> Candles:
    """The stored candles a signal is decided on: enough history for every feature (``WARMUP`` x 4)."""
    step = timeframe_seconds(timeframe)
    with db.transaction(settings.database_url) as cur:
        from worker.store.candles import max_ts

        newest = max_ts(cur, symbol, timeframe)
    if newest is None:
        raise BadInput(f"no {timeframe} candles for {symbol}: run `qtrain candles fetch --symbols {symbol}`")
    return load_candles(settings.database_url, symbol, timeframe, since=newest - 4 * WARMUP * step)
