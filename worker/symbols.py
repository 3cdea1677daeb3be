"""Symbol normalisation: every symbol qtrain stores or queries is written ``BASE-QUOTE`` (``BTC-USDT``).

Accepted spellings: ``btc/usdt``, ``BTC_USDT``, ``btc-usdt``, ``BTC/USDT`` and the glued
exchange form ``BTCUSDT`` when exactly one known quote currency ends it. Anything else (several
possible splits, unknown quote, characters other than letters, digits and one separator, SQL
fragments) is rejected with ``BadInput`` rather than guessed.
"""

from __future__ import annotations

import re

from worker.errors import BadInput

#: Quote currencies recognised at the end of a glued symbol such as ``ETHBTC``.
KNOWN_QUOTES: tuple[str, ...] = (
    "USDT",
    "USDC",
    "BUSD",
    "FDUSD",
    "TUSD",
    "DAI",
    "USD",
    "EUR",
    "GBP",
    "TRY",
    "BTC",
    "ETH",
    "BNB",
)

_PART = re.compile(r"^[A-Z0-9]{2,12}$")
_SEPARATORS = re.compile(r"[/_\-]")
MAX_LEN = 25


def normalize_symbol(raw: str) -> str:
    """``raw`` as ``BASE-QUOTE`` (``btc/usdt`` -> ``BTC-USDT``); BadInput when invalid or ambiguous."""
    if not isinstance(raw, str):
        raise BadInput(f"symbol must be text like BTC-USDT, got {type(raw).__name__}")
    s = raw.strip().upper()
    shown = raw if len(raw) <= MAX_LEN else raw[:MAX_LEN] + "..."
    if not s:
        raise BadInput("symbol is empty: write it like BTC-USDT")
    if len(s) > MAX_LEN or not re.fullmatch(r"[A-Z0-9/_\-]+", s):
        raise BadInput(f"invalid symbol {shown!r}: use letters and digits like BTC-USDT")
    parts = _SEPARATORS.split(s)
    if len(parts) == 2:
        base, quote = parts
    elif len(parts) > 2:
        raise BadInput(f"invalid symbol {shown!r}: one separator only, like BTC-USDT")
    else:
        splits = [(s[: -len(q)], q) for q in KNOWN_QUOTES if s.endswith(q) and len(s) - len(q) >= 2]
        if not splits:
            raise BadInput(f"cannot split symbol {shown!r} into base and quote: write it like BTC-USDT")
        if len(splits) > 1:
            options = " or ".join(f"{b}-{q}" for b, q in splits)
            raise BadInput(f"ambiguous symbol {shown!r} ({options}): write it with a dash")
        base, quote = splits[0]
    if not _PART.match(base) or not _PART.match(quote):
        raise BadInput(f"invalid symbol {shown!r}: base and quote need 2-12 letters or digits, like BTC-USDT")
    if base == quote:
        raise BadInput(f"invalid symbol {shown!r}: base and quote are the same")
    return f"{base}-{quote}"


def to_ccxt(symbol: str) -> str:
    """The ccxt unified spelling (``BTC/USDT``) of a qtrain symbol."""
    return normalize_symbol(symbol).replace("-", "/")


SYNTHETIC_PREFIX = "SYNTH"
"""Base currencies starting with this are ``qtrain demo``'s invented markets (``SYNTH1-USDT``): no
exchange lists them, and whatever shows their numbers says they are synthetic."""


def is_synthetic(symbol: str) -> bool:
    """True for the demo's synthetic symbols (``SYNTH1-USDT``, ``SYNTH2-USDT``)."""
    return symbol.upper().startswith(SYNTHETIC_PREFIX)
