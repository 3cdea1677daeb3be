"""Import speed of the shared 36,000-row export: parse, bulk insert (COPY) vs a row-per-statement loop.

Run: ``.venv/bin/python bench/bench_import.py [FILE]`` with PostgreSQL up (uses throwaway databases).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throwaway_db import drop_db, fresh_db  # noqa: E402
from worker.ingest import importer  # noqa: E402
from worker.store import candles as candles_store  # noqa: E402
from worker.store import db

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "Binance_BTCUSDT_1h.csv"


def main() -> None:
    """Print a table: parse, bulk insert, total, and the row-by-row baseline with ratios."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FILE
    t0 = time.perf_counter()
    data = importer.read_file(path)
    parsed = importer.parse_candles(data, symbol="BTC-USDT", source=str(path))
    t_parse = time.perf_counter() - t0
    cols = (parsed.ts, parsed.open, parsed.high, parsed.low, parsed.close, parsed.volume)
    optional = {"quote_volume": parsed.quote_volume, "trades": parsed.trades}

    url = fresh_db("qtrain_bench")
    try:
        t1 = time.perf_counter()
        with db.transaction(url) as cur:
            inserted = candles_store.insert_candles(cur, "BTC-USDT", "1h", *cols, **optional)
        t_bulk = time.perf_counter() - t1
    finally:
        drop_db(url)

    url = fresh_db("qtrain_bench")
    try:
        t2 = time.perf_counter()
        with db.transaction(url) as cur:
            for i in range(len(parsed.ts)):
                cur.execute(
                    "INSERT INTO btc.candles (symbol, timeframe, ts, open, high, low, close, volume)"
                    " VALUES (%s, %s, to_timestamp(%s), %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    ("BTC-USDT", "1h", int(parsed.ts[i]), *(float(c[i]) for c in cols[1:])),
                )
        t_loop = time.perf_counter() - t2
    finally:
        drop_db(url)

    n = parsed.report.rows_read
    print(f"file: {path.name}, rows read {n}, candles {inserted}")
    print(f"{'step':<34}{'seconds':>10}{'rows/s':>12}{'vs bulk':>10}")
    rows = [
        ("parse (csv -> numpy + report)", t_parse, None),
        ("insert, bulk COPY + ON CONFLICT", t_bulk, 1.0),
        ("total import (parse + bulk)", t_parse + t_bulk, None),
        ("insert, row-per-statement loop", t_loop, t_loop / t_bulk),
    ]
    for name, secs, ratio in rows:
        r = "" if ratio is None else f"{ratio:.1f}x"
        print(f"{name:<34}{secs:>10.3f}{inserted / secs:>12.0f}{r:>10}")


if __name__ == "__main__":
    main()
