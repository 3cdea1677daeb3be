"""freqtrade's data directory: ``user_data/data/<exchange>/<PAIR>-<timeframe>.feather`` (default).

``freqtrade download-data`` writes ``.feather`` (Arrow IPC: columns date (tz-aware datetime), open,
high, low, close, volume), or with ``--data-format-ohlcv`` ``.json`` (a list of
``[ms, open, high, low, close, volume]`` rows), ``.json.gz`` or ``.parquet``. The pair's ``/``
becomes ``_``: ``BTC_USDT-1h.feather`` is BTC-USDT 1h (see ``worker.ingest.readers.names`` for futures).
Reading ``.feather``/``.parquet`` needs pyarrow: ``pip install "qtrain[freqtrade]"``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from worker.errors import BadInput
from worker.ingest.readers import text
from worker.ingest.readers.base import PRICE_FIELDS, Columns, Source

FORMAT = "freqtrade"
FIELDS = ("date", *PRICE_FIELDS, "volume")
ARROW_MAGIC = (b"ARROW1", b"FEA1")
PARQUET_MAGIC = b"PAR1"
_EXTENSIONS = (".feather", ".json", ".parquet")
_DIVISORS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def sniff(src: Source) -> bool:
    """Arrow/Parquet magic bytes, a JSON list, or a ``.feather``/``.json``/``.parquet`` name."""
    head = src.data[:16]
    if head.startswith(ARROW_MAGIC) or head.startswith(PARQUET_MAGIC):
        return True
    if src.data[:1024].lstrip().startswith(b"["):
        return True
    return src.name.lower().endswith(_EXTENSIONS)


def read(src: Source, symbol: str | None) -> Columns:
    """Rows of a freqtrade candle file (``symbol`` is not needed)."""
    head = src.data[:16]
    if head.startswith(ARROW_MAGIC) or head.startswith(PARQUET_MAGIC) or not src.data.lstrip()[:1] == b"[":
        return _read_arrow(src)
    return _read_json(src)


def _read_json(src: Source) -> Columns:
    try:
        rows = json.loads(src.text())
    except json.JSONDecodeError as exc:
        raise BadInput(f"{src.label}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise BadInput(f"{src.label}: expected a JSON list of [ms, open, high, low, close, volume] rows")
    if not rows:
        raise BadInput(f"{src.label}: no data rows (empty JSON list)")
    cells = [[_cell(v) for v in r] if isinstance(r, list) else [] for r in rows]
    cols = {name: i for i, name in enumerate(FIELDS) if name != "date"}
    out = text.columns_from_rows(
        FORMAT,
        cells,
        list(range(1, len(cells) + 1)),
        ncols=len(FIELDS),
        ts_col=0,
        cols=cols,
        text_dates=True,
        source=src.label,
    )
    out.row_word = "row"
    return out


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def _read_arrow(src: Source) -> Columns:
    """Rows of a ``.feather`` or ``.parquet`` table (pyarrow needed)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyarrow import feather, parquet
    except ImportError:
        raise BadInput(
            f'{src.label}: reading .feather needs pyarrow: pip install "qtrain[freqtrade]"'
        ) from None
    reader = parquet.read_table if src.data[:4] == PARQUET_MAGIC else feather.read_table
    try:
        table = reader(io.BytesIO(src.data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInput(
            f"{src.label}: not a readable freqtrade feather/parquet file ({str(exc)[:80]})"
        ) from None
    names = [n.lower() for n in table.column_names]
    missing = [f for f in FIELDS[:-1] if f not in names]
    if missing:
        raise BadInput(f"{src.label}: missing column(s) {', '.join(missing)} (columns: {', '.join(names)})")
    n = table.num_rows
    if n == 0:
        raise BadInput(f"{src.label}: no data rows")
    col = {name: table.column(names.index(name)) for name in FIELDS if name in names}
    ts, unit, reason = _arrow_times(col["date"], pa, pc)
    values: dict[str, np.ndarray] = {}
    bad: dict[str, np.ndarray] = {}
    for name in FIELDS[1:]:
        if name not in col:
            continue
        try:
            values[name] = np.asarray(
                col[name].cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        except pa.ArrowException:
            raise BadInput(f"{src.label}: column {name} is not numeric ({col[name].type})") from None
        bad[name] = np.isinf(values[name])
    return Columns(
        fmt=FORMAT,
        ts=ts,
        ts_unit=unit,
        reason=reason,
        values=values,
        bad=bad,
        row_no=np.arange(1, n + 1),
        row_word="row",
    )


def _arrow_times(date: Any, pa: Any, pc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epoch seconds, unit, reason) of an Arrow date column (timestamp or epoch numbers)."""
    n = len(date)
    valid = np.asarray(date.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    reason = np.where(valid, "", "timestamp missing").astype(object)
    if pa.types.is_timestamp(date.type):
        div = _DIVISORS[date.type.unit]
        ints = np.asarray(
            pc.fill_null(date.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        whole, frac = np.divmod(ints, div)
        seconds = whole.astype(np.float64) + frac / div
        seconds[~valid] = np.nan
        return seconds, np.where(valid, "datetime", "").astype(object), reason
    if pa.types.is_integer(date.type) or pa.types.is_floating(date.type):
        raw = np.asarray(date.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        seconds, unit = text.epoch_seconds(raw, valid & np.isfinite(raw))
        return seconds, unit, reason
    cells = ["" if v is None else str(v) for v in date.to_pylist()]
    seconds, unit, reasons = text.timestamps(cells, text_dates=True)
    return seconds, unit, np.array(reasons, dtype=object).reshape(n)
