"""Symbol normalisation: every accepted spelling maps to BASE-QUOTE, anything doubtful is refused."""

from __future__ import annotations

import pytest

from worker.errors import BadInput
from worker.symbols import normalize_symbol, to_ccxt


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("btc/usdt", "BTC-USDT"),
        ("BTCUSDT", "BTC-USDT"),
        ("BTC_USDT", "BTC-USDT"),
        ("btc-usdt", "BTC-USDT"),
        ("  ETH/USDT ", "ETH-USDT"),
        ("ETHBTC", "ETH-BTC"),
        ("1inch/usdt", "1INCH-USDT"),
        ("solusdc", "SOL-USDC"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalize_symbol(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "BTC",  # no quote
        "BTCBUSD",  # BTC-BUSD or BTCB-USD
        "ETHTUSD",  # ETH-TUSD or ETHT-USD
        "BTC-USDT; DROP TABLE candles",
        "BTC-USDT'--",
        "' OR 1=1 --",
        "BTC-USDT-PERP",
        "BTC/USDT:USDT",
        "B-USDT",
        "USDT-USDT",
        "BTC-",
        "XYZABC",  # no known quote
        "A" * 40,
        "btc usdt",
    ],
)
def test_rejects(raw: str) -> None:
    with pytest.raises(BadInput) as err:
        normalize_symbol(raw)
    assert "\n" not in str(err.value)


def test_to_ccxt() -> None:
    assert to_ccxt("btc_usdt") == "BTC/USDT"
