"""Paper trading rows: ``btc.paper_accounts``, ``paper_positions``, ``paper_decisions``, ``paper_fills``.

Every query of paper trading lives here, decoded by column name into frozen dataclasses; what a
tick decides and what a status adds up is ``worker.trading.paper``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model import ACTIONS
from model.trading.live import Book, Step
from worker.errors import QtrainError
from worker.store import db
from worker.store.batches import ts_to_dt
from worker.store.db import Cursor


def _dt(ts: int | None) -> Any:
    return None if ts is None else ts_to_dt(ts)


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


def _account(r: dict[str, Any]) -> Account:
    cfg = r["config"] if isinstance(r["config"], dict) else json.loads(r["config"])
    return Account(
        id=int(r["id"]),
        name=r["name"],
        symbols=tuple(r["symbols"]),
        timeframe=r["timeframe"],
        exchange=r["exchange"],
        capital=float(r["capital"]),
        fee=float(r["fee"]),
        config=cfg,
        state=r["state"],
    )


def accounts(url: str, *, active_only: bool = False, name: str | None = None) -> list[Account]:
    """Accounts by id: all, only the active ones, or the one named (empty when there is none)."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT id, name, symbols, timeframe, exchange, capital, fee, config, state"
            " FROM btc.paper_accounts WHERE (NOT %s OR state = 'active')"
            " AND (%s::text IS NULL OR name = %s) ORDER BY id",
            (active_only, name, name),
        )
        return [_account(db.named(cur, r)) for r in cur.fetchall()]


def account_exists(url: str, name: str) -> bool:
    """Whether an account of that name exists (active or stopped)."""
    with db.transaction(url) as cur:
        cur.execute("SELECT 1 FROM btc.paper_accounts WHERE name = %s", (name,))
        return cur.fetchone() is not None


@dataclass(frozen=True)
class NewPosition:
    """One symbol of a new account: its share of the capital and its first candles."""

    symbol: str
    capital: float
    anchor_ts: int
    start_ts: int


def insert_account(
    url: str,
    *,
    name: str,
    symbols: tuple[str, ...],
    timeframe: str,
    exchange: str,
    capital: float,
    fee: float,
    config: dict[str, Any],
    positions: list[NewPosition],
) -> int | None:
    """Write an account and its positions in one transaction; its id, or None when the name is taken."""
    with db.transaction(url) as cur:
        cur.execute(
            "INSERT INTO btc.paper_accounts (name, symbols, timeframe, exchange, capital, fee, config)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, list(symbols), timeframe, exchange, capital, fee, json.dumps(config)),
        )
        row = cur.fetchone()
        if row is None:
            return None
        account_id = int(row[0])
        for p in positions:
            cur.execute(
                "INSERT INTO btc.paper_positions (account_id, symbol, capital, anchor_ts, start_ts, cash)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (account_id, p.symbol, p.capital, _dt(p.anchor_ts), _dt(p.start_ts), p.capital),
            )
    return account_id


def stop_account(url: str, name: str) -> bool:
    """Mark an account stopped (its record stays); False when there is no such account."""
    with db.transaction(url) as cur:
        cur.execute(
            "UPDATE btc.paper_accounts SET state = 'stopped', stopped_at = coalesce(stopped_at, now())"
            " WHERE name = %s RETURNING id",
            (name,),
        )
        return cur.fetchone() is not None


@dataclass(frozen=True)
class Position:
    """One ``btc.paper_positions`` row: the book and its candles (epoch seconds)."""

    book: Book
    capital: float
    anchor_ts: int
    start_ts: int
    last_ts: int | None


_POSITION_COLS = (
    "p.cash, p.qty, p.held, p.target, p.capital, extract(epoch FROM p.anchor_ts)::bigint AS anchor_ts,"
    " extract(epoch FROM p.start_ts)::bigint AS start_ts, extract(epoch FROM p.last_ts)::bigint AS last_ts"
)


def _position(r: dict[str, Any]) -> Position:
    book = Book(cash=float(r["cash"]), qty=float(r["qty"]), held=int(r["held"]), target=int(r["target"]))
    last = None if r["last_ts"] is None else int(r["last_ts"])
    return Position(book, float(r["capital"]), int(r["anchor_ts"]), int(r["start_ts"]), last)


def position(cur: Cursor, account_id: int, symbol: str, *, lock: bool) -> Position:
    """The position of ``symbol`` in an account (``lock``: FOR UPDATE, in the caller's transaction)."""
    cur.execute(
        f"SELECT {_POSITION_COLS} FROM btc.paper_positions p WHERE p.account_id = %s AND p.symbol = %s"
        + (" FOR UPDATE" if lock else ""),
        (account_id, symbol),
    )
    row = cur.fetchone()
    if row is None:
        raise QtrainError(f"paper account {account_id} has no position for {symbol}")
    return _position(db.named(cur, row))


def save_step(
    cur: Cursor, account_id: int, symbol: str, step: Step, version: int, source: str, notes: list[str]
) -> None:
    """Write one decided candle: the decision, its fill (if any) and the new position."""
    d = step.decided.decision
    score = None if d.score != d.score else d.score  # NaN -> NULL
    cur.execute(
        "INSERT INTO btc.paper_decisions (account_id, symbol, ts, version, action, confidence, score,"
        " position, target, components, weights, missing, notes, close, cash, qty, equity, source)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            account_id,
            symbol,
            _dt(step.decided.ts),
            version,
            d.action,
            d.confidence,
            score,
            step.decided.position,
            step.book.target,
            json.dumps(d.components),
            json.dumps(d.weights_used),
            list(d.missing),
            json.dumps([*notes, d.note]),
            step.decided.close,
            step.book.cash,
            step.book.qty,
            step.equity,
            source,
        ),
    )
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


@dataclass(frozen=True)
class LastDecision:
    """The newest decision of a position."""

    ts: int
    version: int
    action: str
    confidence: float
    score: float | None
    close: float
    equity: float
    source: str
    decided_at: str


@dataclass(frozen=True)
class PositionRecord:
    """A position with what its decisions and fills add up to, read in one query."""

    position: Position
    last: LastDecision | None
    n_decisions: int
    n_fills: int
    fees_paid: float
    entry_open: float | None
    """Open of the candle after the start: where buy-and-hold enters."""


def position_record(url: str, account: Account, symbol: str, step_s: int) -> PositionRecord:
    """The position of ``symbol`` with its newest decision, counts, fees and buy-and-hold entry."""
    with db.transaction(url) as cur:
        cur.execute(
            f"SELECT {_POSITION_COLS},"
            " (SELECT count(*) FROM btc.paper_decisions d WHERE d.account_id = p.account_id"
            "  AND d.symbol = p.symbol) AS n_decisions, f.n_fills, f.fees_paid,"
            " extract(epoch FROM l.ts)::bigint AS l_ts, l.version AS l_version, l.action AS l_action,"
            " l.confidence AS l_confidence, l.score AS l_score, l.close AS l_close, l.equity AS l_equity,"
            " l.source AS l_source, l.decided_at AS l_decided_at,"
            " (SELECT c.open FROM btc.candles c WHERE c.symbol = p.symbol AND c.timeframe = %s"
            "  AND c.ts = p.start_ts + make_interval(secs => %s)) AS entry_open"
            " FROM btc.paper_positions p"
            " LEFT JOIN LATERAL (SELECT * FROM btc.paper_decisions d WHERE d.account_id = p.account_id"
            "  AND d.symbol = p.symbol ORDER BY d.ts DESC LIMIT 1) l ON true"
            " LEFT JOIN LATERAL (SELECT count(*) AS n_fills, coalesce(sum(fee), 0) AS fees_paid"
            "  FROM btc.paper_fills x WHERE x.account_id = p.account_id AND x.symbol = p.symbol) f ON true"
            " WHERE p.account_id = %s AND p.symbol = %s",
            (account.timeframe, step_s, account.id, symbol),
        )
        row = cur.fetchone()
        if row is None:
            raise QtrainError(f"paper account {account.name} has no position for {symbol}")
        r = db.named(cur, row)
    last = None
    if r["l_ts"] is not None:
        last = LastDecision(
            ts=int(r["l_ts"]),
            version=int(r["l_version"]),
            action=ACTIONS[int(r["l_action"])],
            confidence=float(r["l_confidence"]),
            score=r["l_score"],
            close=float(r["l_close"]),
            equity=float(r["l_equity"]),
            source=r["l_source"],
            decided_at=r["l_decided_at"].isoformat(),
        )
    entry = None if r["entry_open"] is None else float(r["entry_open"])
    return PositionRecord(
        _position(r), last, int(r["n_decisions"]), int(r["n_fills"]), float(r["fees_paid"]), entry
    )


_DECISION_COLS = (
    "ts",
    "version",
    "action",
    "confidence",
    "score",
    "position",
    "target",
    "components",
    "weights",
    "missing",
    "notes",
    "close",
    "equity",
    "source",
)
_FILL_COLS = ("ts", "side", "price", "qty", "fee", "version")


def decisions_and_fills(
    url: str, account_id: int, symbol: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Every decision and fill of one position, oldest first (ts in epoch seconds), and its capital."""

    def cols(names: tuple[str, ...]) -> str:
        return ", ".join("extract(epoch FROM ts)::bigint AS ts" if c == "ts" else c for c in names)

    with db.transaction(url) as cur:
        cur.execute(
            f"SELECT {cols(_DECISION_COLS)} FROM btc.paper_decisions"
            " WHERE account_id = %s AND symbol = %s ORDER BY ts",
            (account_id, symbol),
        )
        decisions = [db.named(cur, r) for r in cur.fetchall()]
        cur.execute(
            f"SELECT {cols(_FILL_COLS)} FROM btc.paper_fills"
            " WHERE account_id = %s AND symbol = %s ORDER BY ts",
            (account_id, symbol),
        )
        fills = [db.named(cur, r) for r in cur.fetchall()]
        cur.execute(
            "SELECT capital FROM btc.paper_positions WHERE account_id = %s AND symbol = %s",
            (account_id, symbol),
        )
        capital = float(cur.fetchone()[0])
    return decisions, fills, capital
