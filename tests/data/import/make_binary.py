"""Regenerate the binary fixtures of this directory (zip, feather) from the documented layouts.

Run from the repository root with pyarrow installed: ``python tests/data/import/make_binary.py``.
freqtrade writes feather through pandas: columns date (UTC datetime), open, high, low, close, volume,
lz4-compressed by default; Binance bulk zips hold one CSV named like the zip.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pyarrow as pa
from pyarrow import feather

HERE = Path(__file__).resolve().parent
T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR_MS = 3_600_000


def _table(start_ms: int, n: int, base: float, unit: str, step_ms: int = HOUR_MS) -> pa.Table:
    per_ms = {"ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
    dates = [(start_ms + i * step_ms) * per_ms for i in range(n)]
    return pa.table(
        {
            "date": pa.array(dates, type=pa.timestamp(unit, tz="UTC")),
            "open": [base + i for i in range(n)],
            "high": [base + i + 10 for i in range(n)],
            "low": [base + i - 10 for i in range(n)],
            "close": [base + i + 5 for i in range(n)],
            "volume": [100.0 + i for i in range(n)],
        }
    )


def _zip(name: str, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(HERE / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(2024, 3, 1, 0, 0, 0))
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)


def main() -> None:
    """Write every binary fixture."""
    feather.write_feather(_table(T0_MS, 5, 42000.0, "ns"), HERE / "BTC_USDT-1h.feather", compression="lz4")
    feather.write_feather(
        _table(T0_MS, 3, 42010.0, "ms"), HERE / "BTC_USDT_USDT-1h-futures.feather", compression="uncompressed"
    )
    funding = _table(T0_MS, 2, 0.0001, "ms", step_ms=8 * HOUR_MS)
    feather.write_feather(funding, HERE / "BTC_USDT_USDT-8h-funding_rate.feather", compression="uncompressed")
    whole = (HERE / "BTC_USDT-1h.feather").read_bytes()
    (HERE / "defect_truncated.feather").write_bytes(whole[: len(whole) // 2])
    csv = (HERE / "ETHUSDT-1h-2024-02.csv.src").read_bytes()
    _zip("ETHUSDT-1h-2024-02.zip", {"ETHUSDT-1h-2024-02.csv": csv})
    _zip("defect_two_members.zip", {"a.csv": csv, "b.csv": csv})


if __name__ == "__main__":
    main()
