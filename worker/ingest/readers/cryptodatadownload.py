"""CryptoDataDownload exports, both layouts.

- Newest: ``unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount``; ``unix`` in
  ms or float seconds (mixed within one file), the base currency's volume column picked by symbol.
- Older: ``Date,Symbol,Open,High,Low,Close[,Volume BTC,Volume USD | Volume From,Volume To | Volume]``
  or just ``Date,Open,High,Low,Close``, CRLF line ends, 12-hour dates ``2019-12-02 03-AM`` (a file
  may mix them with ``2019-12-02 15:00:00``), often after a banner line (a URL or "Created with
  CryptoDataDownload.com"). Without a volume column the candles are stored with volume NULL.

Dates are UTC. When a file has both, ``unix`` is read and ``date`` ignored: in the shared
Binance_BTCUSDT_1h.csv export 91 rows (2017-09) have a ``date`` 4 hours behind their ``unix``, so
the older layout (date only) necessarily places those 91 rows 4 hours early. The symbol comes from
``--symbol``, the file name (``Binance_BTCUSDT_1h.csv``) or the ``symbol`` column, and every row's
``symbol`` cell must agree with it.
"""

from __future__ import annotations

from worker.errors import BadInput
from worker.ingest.readers import text
from worker.ingest.readers.base import PRICE_FIELDS, Columns, Source
from worker.symbols import normalize_symbol

FORMAT = "cryptodatadownload"
_UNIX = ("unix", "unix timestamp")


def _banner(line: str) -> bool:
    low = line.strip().lower()
    return "cryptodatadownload" in low or low.startswith("http")


def _split(src: Source) -> tuple[int, list[str]]:
    """(header lines to skip including any banner, header names)."""
    lines = text.first_lines(src, 3)
    skip = 1 if lines and _banner(lines[0]) else 0
    if len(lines) <= skip:
        raise BadInput(f"{src.label}: CryptoDataDownload banner but no header line")
    return skip + 1, text.header_cells(lines[skip])


def sniff(src: Source) -> bool:
    """A banner line, or a header with unix / symbol / ``Volume <currency>`` columns, or 12-hour dates."""
    lines = text.first_lines(src, 3)
    if not lines:
        return False
    if _banner(lines[0]):
        return True
    names = text.header_cells(lines[0])
    if any(n in names for n in (*_UNIX, "symbol", "tradecount")) or any(
        n.startswith("volume ") for n in names
    ):
        return True
    if "date" in names and len(lines) > 1:
        cells = next(iter(text.body_rows(lines[1], 0)[0]), [])
        idx = names.index("date")
        return len(cells) > idx and (text.parse_date(cells[idx].strip()) or (0, ""))[1] == "12-hour"
    return False


def _content_symbol(rows: list[list[str]], col: int | None) -> str | None:
    """The normalised symbol of the first non-empty ``symbol`` cell, or None."""
    if col is None:
        return None
    for r in rows:
        if len(r) > col and r[col].strip():
            try:
                return normalize_symbol(r[col])
            except BadInput:
                return None
    return None


def _volume_columns(names: list[str], symbol: str | None, source: str) -> dict[str, int]:
    """``volume`` / ``quote_volume`` column indices; none when the file has no volume."""
    if "volume from" in names or "volume to" in names:
        return {
            k: names.index(n)
            for k, n in (("volume", "volume from"), ("quote_volume", "volume to"))
            if n in names
        }
    if "volume" in names:
        return {"volume": names.index("volume")}
    vols = [i for i, n in enumerate(names) if n.startswith("volume ")]
    if not vols:
        return {}
    by_ccy = {names[i].split(" ", 1)[1].strip().upper(): i for i in vols}
    if symbol is None:
        raise BadInput(f"{source}: cannot tell which volume column is the base currency's: give --symbol")
    base, quote = symbol.split("-")
    cols: dict[str, int] = {}
    if base in by_ccy:
        cols["volume"] = by_ccy[base]
    elif len(vols) == 2 and quote in by_ccy:
        cols["volume"] = next(i for i in vols if i != by_ccy[quote])
    elif len(vols) == 1 and quote not in by_ccy:
        cols["volume"] = vols[0]
    else:
        raise BadInput(
            f"{source}: no 'Volume {base}' column for symbol {symbol} (columns: {', '.join(names)})"
        )
    if quote in by_ccy:
        cols["quote_volume"] = by_ccy[quote]
    return cols


def read(src: Source, symbol: str | None) -> Columns:
    """Rows of a CryptoDataDownload export; ``symbol`` (or the file's own) picks the volume column."""
    body = src.text()
    header_lines, names = _split(src)
    missing = [c for c in PRICE_FIELDS if c not in names]
    unix = next((names.index(n) for n in _UNIX if n in names), None)
    ts_col = unix if unix is not None else (names.index("date") if "date" in names else None)
    if ts_col is None:
        missing.insert(0, "unix or date")
    if missing:
        raise BadInput(f"{src.label}: missing column(s) {', '.join(missing)} in CryptoDataDownload header")
    assert ts_col is not None
    rows, line_no, blank = text.body_rows(body, header_lines)
    symbol_col = names.index("symbol") if "symbol" in names else None
    content = _content_symbol(rows, symbol_col)
    cols = {c: names.index(c) for c in PRICE_FIELDS}
    cols.update(_volume_columns(names, symbol or content, src.label))
    if "tradecount" in names:
        cols["trades"] = names.index("tradecount")
    out = text.columns_from_rows(
        FORMAT,
        rows,
        line_no,
        ncols=len(names),
        ts_col=ts_col,
        cols=cols,
        text_dates=unix is None,
        blank_lines=blank,
        symbol_col=symbol_col,
        source=src.label,
    )
    out.content_symbol = content
    return out
