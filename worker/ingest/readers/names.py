"""Symbol, timeframe and market read from a candle file's name, when the name follows a source's rule.

- freqtrade: ``BTC_USDT-1h.feather`` (also ``.json``, ``.json.gz``, ``.parquet``) is BTC-USDT 1h.
  Futures files are ``BTC_USDT_USDT-1h-futures.feather`` (pair ``BTC/USDT:USDT``), with siblings
  ``-mark``, ``-index``, ``-premiumIndex`` and ``-funding_rate``. Decision: those are another
  market than the spot pair (a perpetual's price, a mark or index price, a funding rate), so the
  importer never files them under BTC-USDT by itself: a single such file imports only with an
  explicit ``--symbol`` (the user chooses the name), and a directory import skips them, saying why.
  ``-funding_rate`` and ``-premiumIndex`` are never price candles and are always refused.
- Binance bulk data: ``BTCUSDT-1h-2024-01.zip`` / ``BTCUSDT-1h-2024-01-15.csv``.
- CryptoDataDownload: ``Binance_BTCUSDT_1h.csv``, ``Binance_BTCUSDT_d.csv``, ``Bitstamp_BTCUSD_minute.csv``,
  ``gemini_BTCUSD_2019_1min.csv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.errors import BadInput
from worker.ingest.readers import binance
from worker.symbols import normalize_symbol

#: Candle types of freqtrade files that are price candles of another market than the spot pair.
OTHER_MARKET = frozenset({"futures", "mark", "index"})
#: Candle types that are not price candles at all.
NOT_PRICES = frozenset({"funding_rate", "premiumindex"})

_FREQTRADE = re.compile(
    r"^(?P<pair>[A-Za-z0-9]+(?:_[A-Za-z0-9]+){1,2})-(?P<tf>\d+[smhdwMy])(?:-(?P<type>[A-Za-z_]+))?"
    r"\.(?:feather|json|json\.gz|parquet)$"
)
_CDD = re.compile(
    r"^(?P<exchange>[A-Za-z]+)_(?P<symbol>[A-Za-z0-9]+)_(?:\d{4}_)?(?P<tf>1h|h|hourly|d|1d|daily|minute|1min|1m|"
    r"4h|5m|15m|30m)\.csv$",
    re.IGNORECASE,
)
_CDD_TF = {"h": "1h", "hourly": "1h", "d": "1d", "daily": "1d", "minute": "1m", "1min": "1m"}


@dataclass(frozen=True)
class NameHint:
    """What a file name says: symbol (normalised) and timeframe, None when it does not say."""

    source: str = ""
    symbol: str | None = None
    timeframe: str | None = None
    candle_type: str = ""

    @property
    def other_market(self) -> bool:
        """True for freqtrade futures/mark/index files (not the spot pair's candles)."""
        return self.candle_type.lower() in OTHER_MARKET

    @property
    def not_prices(self) -> bool:
        """True for freqtrade funding-rate / premium-index files."""
        return self.candle_type.lower() in NOT_PRICES


def _symbol(raw: str) -> str | None:
    try:
        return normalize_symbol(raw)
    except BadInput:
        return None


def identify(name: str) -> NameHint:
    """Symbol, timeframe and candle type from a file name (no I/O); empty hint when it follows no rule."""
    m = _FREQTRADE.match(name)
    if m:
        parts = m.group("pair").split("_")
        return NameHint("freqtrade", _symbol("-".join(parts[:2])), m.group("tf"), m.group("type") or "")
    m = binance.NAME.match(name)
    if m:
        return NameHint("binance", _symbol(m.group("symbol")), m.group("tf"))
    m = _CDD.match(name)
    if m:
        tf = m.group("tf").lower()
        return NameHint("cryptodatadownload", _symbol(m.group("symbol")), _CDD_TF.get(tf, tf))
    return NameHint()
