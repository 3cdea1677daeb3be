"""Minimal loader of the shared CryptoDataDownload CSVs for the backtest tests and the benchmark.

Not the importer (that one reports every defect): this one sorts ascending, keeps the first row of
each duplicated hour (in file order) and drops rows with a missing price, which is enough for
comparing two backtest engines on the same data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from model.candles import Candles


def load_csv_candles(path: Path, *, last: int | None = None, symbol: str = "BTC-USDT") -> Candles:
    """Candles from a ``Binance_*_1h.csv`` file (ms or s timestamps), oldest first, unique hours."""
    rows: list[tuple[float, ...]] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if not header[0].lower().startswith("unix"):
            header = next(reader)
        for rec in reader:
            try:
                rows.append(tuple(float(x) for x in (rec[0], rec[3], rec[4], rec[5], rec[6], rec[7])))
            except (ValueError, IndexError):
                continue
    arr = np.array(rows, dtype=np.float64)
    arr = arr[np.all(np.isfinite(arr), axis=1)]
    ts = np.where(arr[:, 0] > 1e11, arr[:, 0] / 1000.0, arr[:, 0])
    ts = (np.floor(ts / 3600.0) * 3600).astype(np.int64)
    _, first = np.unique(ts, return_index=True)
    arr, ts = arr[first], ts[first]
    if last is not None:
        arr, ts = arr[-last:], ts[-last:]
    return Candles(ts, arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5], symbol=symbol, timeframe="1h")
