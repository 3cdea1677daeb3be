"""Parsing of the CLI's shared option values (dates, symbol lists) into one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.errors import BadInput
from worker.symbols import normalize_symbol


def parse_date(value: str | None, *, flag: str) -> int | None:
    """``2024-01-01`` or ISO 8601 (UTC unless it says otherwise) -> epoch seconds; None stays None."""
    if value is None or value == "":
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{flag} {value!r} is not a date: use YYYY-MM-DD or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def parse_symbols(value: str) -> tuple[str, ...]:
    """``BTC-USDT,eth/usdt`` -> ``("BTC-USDT", "ETH-USDT")``, de-duplicated, order kept."""
    out: list[str] = []
    for part in value.split(","):
        if part.strip():
            sym = normalize_symbol(part.strip())
            if sym not in out:
                out.append(sym)
    if not out:
        raise BadInput("--symbols is empty: give e.g. --symbols BTC-USDT,ETH-USDT")
    return tuple(out)
