"""Candle file readers: one module per source format, all returning ``Columns`` (see ``base``).

``open_source`` unwraps containers (a ``.zip`` holding one CSV, a ``.json.gz``), ``detect`` picks
the reader from the content (magic bytes, first character, header line) with the file name as a
tie-breaker, and ``names.identify`` reads symbol and timeframe from the file name. Readers only
turn cells into numbers; validation, duplicates and the report are ``worker.ingest.importer``'s job.
"""

from __future__ import annotations

from worker.ingest.readers import binance, cryptodatadownload, freqtrade, plain
from worker.ingest.readers.base import Columns, Reader, Source
from worker.ingest.readers.detect import FORMATS, detect, open_source

__all__ = [
    "FORMATS",
    "Columns",
    "Reader",
    "Source",
    "binance",
    "cryptodatadownload",
    "detect",
    "freqtrade",
    "open_source",
    "plain",
]
