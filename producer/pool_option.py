"""``--pool SYMBOLS|none`` of ``qtrain train`` and ``qtrain evaluate``: what a pooled recipe pools with."""

from __future__ import annotations

from producer.options import parse_symbols
from worker.errors import BadInput

POOL_HELP = (
    "Pooled recipe: the stored symbols to pool with besides --symbols (their training candles only,"
    " unshaped), or none (each symbol alone). Default: one symbol pools with every other symbol stored"
    " at the timeframe over its training range; several pool with each other."
)


def parse_pool(value: str | None) -> tuple[str, ...] | None:
    """``None`` (the default) stays None; ``none`` -> ``()``; ``A,B`` -> ``("A", "B")`` (normalised);
    anything else is one line (BadInput, exit 2)."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    if not value.strip(" ,"):
        raise BadInput("--pool is empty: give symbols (--pool ETH-USDT,XMR-USDT) or --pool none")
    try:
        return parse_symbols(value)
    except BadInput as exc:
        raise BadInput(f"--pool {value!r}: {exc} (or give --pool none)") from None
