"""Every supported layout, one fixture each (tests/data/import/, written from the formats' docs).

Table-driven: LAYOUTS (imports, with the exact hours expected), DEFECTS (one defect per file,
counted by kind), FATAL (exit 2, one line, nothing written). Fixture hours are listed by hand from
the files, so a wrong unit, a 12-AM/12-PM slip or a lost row fails here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from model.features import FEATURE_WARMUP, compute_features
from producer.cli import cli
from tests.conftest import shared_csv
from tests.sql import query
from worker.ingest import importer
from worker.store import candles as candles_store

DATA = Path(__file__).resolve().parent / "data" / "import"


def _h(*stamps: str) -> list[int]:
    """Epoch seconds of 'YYYY-MM-DD HH:MM' UTC stamps."""
    return [int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()) for s in stamps]


def _hours(start: str, n: int, step: int = 3600) -> list[int]:
    return [_h(start)[0] + i * step for i in range(n)]


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def _stored(url: str, symbol: str, timeframe: str) -> list[int]:
    rows = query(
        url,
        "SELECT extract(epoch FROM ts)::bigint FROM btc.candles"
        " WHERE symbol = %s AND timeframe = %s ORDER BY ts",
        (symbol, timeframe),
    )
    return [r[0] for r in rows]


def _count(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM btc.candles")[0][0])


# file, extra args, format, symbol, timeframe, the distinct valid hours, volume missing
LAYOUTS: list[tuple[str, list[str], str, str, str, list[int], bool]] = [
    (
        "Binance_BTCUSDT_1h.csv",  # CDD newest: banner, ms + float s, a conflicting duplicate hour
        [],
        "cryptodatadownload",
        "BTC-USDT",
        "1h",
        _hours("2024-01-01 00:00", 5),
        False,
    ),
    (
        "Bitstamp_BTCUSD_1h.csv",  # CDD older: CRLF, 12-hour dates, 12-AM = 00:00, 12-PM = 12:00
        [],
        "cryptodatadownload",
        "BTC-USD",
        "1h",
        _h(
            "2019-12-01 23:00", "2019-12-02 00:00", "2019-12-02 11:00", "2019-12-02 12:00", "2019-12-02 13:00"
        ),
        False,
    ),
    (
        "cdd_old_no_volume.csv",  # the file: Date,Open,High,Low,Close, no volume
        ["--symbol", "BTC-USD"],
        "cryptodatadownload",
        "BTC-USD",
        "1h",
        _hours("2019-12-02 00:00", 4),
        True,
    ),
    (
        "cdd_mixed_dates.csv",  # both date styles in one column; symbol from the symbol column
        [],
        "cryptodatadownload",
        "ETH-USDT",
        "1h",
        _hours("2019-12-02 02:00", 4),
        False,
    ),
    ("BTCUSDT-1h-2024-01.csv", [], "binance", "BTC-USDT", "1h", _hours("2024-01-01 00:00", 4), False),
    ("BTCUSDT-1h-2025-01-01.csv", [], "binance", "BTC-USDT", "1h", _hours("2025-01-01 00:00", 3), False),
    ("BTCUSDT-1h-2024-03.csv", [], "binance", "BTC-USDT", "1h", _hours("2024-03-01 00:00", 3), False),
    ("ETHUSDT-1h-2024-02.zip", [], "binance", "ETH-USDT", "1h", _hours("2024-02-01 00:00", 3), False),
    ("BTC_USDT-1h.feather", [], "freqtrade", "BTC-USDT", "1h", _hours("2024-01-01 00:00", 5), False),
    ("SHIB_USDT-1h.json", [], "freqtrade", "SHIB-USDT", "1h", _hours("2024-01-01 00:00", 3), False),
    (
        "BTC_USDT_USDT-1h-futures.feather",  # another market: only with an explicit --symbol
        ["--symbol", "BTCPERP-USDT"],
        "freqtrade",
        "BTCPERP-USDT",
        "1h",
        _hours("2024-01-01 00:00", 3),
        False,
    ),
    (
        "pepe_prices.csv",  # plain, ISO dates, 3.04E-05 prices, 4h told by the spacing
        ["--symbol", "PEPE-USDT"],
        "plain",
        "PEPE-USDT",
        "4h",
        _hours("2024-01-01 00:00", 4, 4 * 3600),
        False,
    ),
    (
        "BTCUSDT-1h-2024-01.csv",  # --format skips detection
        ["--format", "binance", "--symbol", "BTC-USDT", "--timeframe", "1h"],
        "binance",
        "BTC-USDT",
        "1h",
        _hours("2024-01-01 00:00", 4),
        False,
    ),
]


@pytest.mark.parametrize("case", LAYOUTS, ids=[f"{c[0]}{' '.join(c[1])}" for c in LAYOUTS])
def test_layout_imports_each_valid_hour_once_and_reimport_adds_nothing(
    case: tuple[str, list[str], str, str, str, list[int], bool],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, args, fmt, symbol, timeframe, hours, no_volume = case
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(DATA / name), *args, "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert (report["format"], report["symbol"], report["timeframe"]) == (fmt, symbol, timeframe)
    assert report["volume_missing"] is no_volume and report["accounted"] is True
    stored = _stored(database_url, symbol, timeframe)
    assert stored == hours
    assert report["inserted"] == len(hours) == _count(database_url)
    volumes = query(database_url, "SELECT count(*) FILTER (WHERE volume IS NULL) FROM btc.candles")[0][0]
    assert volumes == (len(hours) if no_volume else 0)

    code, out, err = _run(["candles", "import", str(DATA / name), *args, "--json"])
    assert code == 0, err
    again = json.loads(out)
    assert again["inserted"] == 0 and again["already_present"] == len(hours)
    assert again["already_present_differing"] == 0 and _count(database_url) == len(hours)


def test_scientific_notation_prices_are_stored_exactly(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = _run(["candles", "import", str(DATA / "pepe_prices.csv"), "--symbol", "PEPE-USDT"])
    assert code == 0, err
    rows = query(database_url, "SELECT open, volume FROM btc.candles ORDER BY ts LIMIT 1")
    assert rows == [(3.04e-05, 1.5e09)]


# file, extra args, rejections expected, candles stored
DEFECTS: list[tuple[str, list[str], dict[str, int], int]] = [
    ("defect_cdd_bad_12h.csv", ["--symbol", "BTC-USD"], {"timestamp unparseable": 1}, 2),
    (
        "defect_binance_short_row.csv",
        ["--symbol", "BTC-USDT"],
        {"wrong number of fields (expected 12)": 1},
        2,
    ),
    ("defect_binance_unaligned_us.csv", ["--symbol", "BTC-USDT"], {"timestamp not aligned to 1h": 1}, 2),
    ("defect_freqtrade_null_close.json", ["--symbol", "BTC-USDT"], {"NULL or empty close": 1}, 2),
    (
        "defect_freqtrade_short_row.json",
        ["--symbol", "BTC-USDT"],
        {"wrong number of fields (expected 6)": 1},
        2,
    ),
    ("defect_plain_not_a_number.csv", ["--symbol", "BTC-USDT"], {"not a number in close": 1}, 2),
]


@pytest.mark.parametrize("case", DEFECTS, ids=[c[0] for c in DEFECTS])
def test_defect_is_counted_by_kind_and_the_rest_imports(
    case: tuple[str, list[str], dict[str, int], int], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, args, rejected, candles = case
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(DATA / name), *args, "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["rejected"] == rejected and report["accounted"] is True
    assert report["candles"] == report["inserted"] == candles == _count(database_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich folds long cells at 80
    code, out, _ = _run(["candles", "import", str(DATA / name), *args])
    assert code == 0 and f"rejected: {next(iter(rejected))}" in out  # the table names the defect


# file (or a tmp copy named so), extra args, word in the one-line message
FATAL: list[tuple[str, str, list[str], str]] = [
    ("BTC_USDT_USDT-8h-funding_rate.feather", "", [], "no price candles"),
    ("BTC_USDT_USDT-8h-funding_rate.feather", "", ["--symbol", "BTC-USDT"], "no price candles"),
    ("BTC_USDT_USDT-1h-futures.feather", "", [], "--symbol"),
    ("defect_truncated.feather", "", ["--symbol", "BTC-USDT"], "not a readable"),
    ("defect_two_members.zip", "", ["--symbol", "BTC-USDT"], "zip holds 2 files"),
    ("cdd_old_no_volume.csv", "", [], "give --symbol"),
    ("pepe_prices.csv", "", ["--symbol", "PEPE-USDT", "--format", "binance"], "12 columns"),
    ("pepe_prices.csv", "", ["--symbol", "PEPE-USDT", "--format", "cryptodatadownload"], "missing column"),
    ("BTCUSDT-1h-2024-01.csv", "BTCUSDT-3m-2024-01.csv", [], "unknown timeframe '3m' (from file name)"),
    ("Binance_BTCUSDT_1h.csv", "", ["--symbol", "ETH-USDT"], "file holds BTC-USDT rows"),
]


@pytest.mark.parametrize("case", FATAL, ids=[f"{c[0]} {' '.join(c[2])}" for c in FATAL])
def test_unusable_file_exits_2_with_one_line_and_writes_nothing(
    case: tuple[str, str, list[str], str], database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, rename, args, word = case
    path = DATA / name
    if rename:
        path = tmp_path / rename
        shutil.copy(DATA / name, path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(path), *args])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    assert word in lines[0]
    assert _count(database_url) == 0


def test_feather_without_pyarrow_says_how_to_install(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for mod in ("pyarrow", "pyarrow.compute", "pyarrow.feather", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails like on a machine without it
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = _run(["candles", "import", str(DATA / "BTC_USDT-1h.feather")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'pip install "qtrain[freqtrade]"' in err
    # json needs no pyarrow
    code, _, err = _run(["candles", "import", str(DATA / "SHIB_USDT-1h.json")])
    assert code == 0, err


def test_missing_volume_is_null_nan_counted_and_features_survive(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = _h("2019-12-02 00:00")[0]
    lines = ["Date,Open,High,Low,Close"]
    for i in range(60):
        stamp = datetime.fromtimestamp(start + i * 3600, UTC)
        hour12 = f"{stamp:%Y-%m-%d} {(stamp.hour % 12) or 12:02d}-{'AM' if stamp.hour < 12 else 'PM'}"
        p = 7000 + 10 * np.sin(i / 5)
        lines.append(f"{hour12},{p:.2f},{p + 5:.2f},{p - 5:.2f},{p + 1:.2f}")
    f = tmp_path / "old_export.csv"
    f.write_bytes(("\r\n".join([lines[0], *reversed(lines[1:])]) + "\r\n").encode())
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(f), "--symbol", "BTC-USD"])
    assert code == 0, err
    assert importer.NO_VOLUME.split(":")[0] in out and "volume" in out
    assert candles_store.count_missing_volume(database_url, "BTC-USD", "1h") == 60
    assert candles_store.count_missing_volume(database_url, "BTC-USD", "1h", since=start + 50 * 3600) == 10
    assert candles_store.count_missing_volume(database_url, "ETH-USDT", "1h") == 0
    code, out, _ = _run(["candles", "list", "--json"])
    assert [(r["symbol"], r["count"], r["no_volume"]) for r in json.loads(out)] == [("BTC-USD", 60, 60)]
    loaded = candles_store.load_candles(database_url, "BTC-USD", "1h")
    assert len(loaded) == 60 and np.isnan(loaded.volume).all()
    assert np.array_equal(loaded.ts, np.arange(start, start + 60 * 3600, 3600))
    feats = compute_features(loaded)  # NaN volume: volume_z is all NaN, nothing else is touched
    assert np.isnan(feats["volume_z"]).all()
    for name in ("rsi", "atr_pct", "ret_24", "ema_gap"):
        assert np.isfinite(feats[name][FEATURE_WARMUP[name] :]).all(), name


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _old_layout(rows: list[dict[str, str]]) -> bytes:
    """The shared newest-layout export rewritten as the older layout (Date,Open,High,Low,Close, CRLF)."""
    out = io.StringIO()
    out.write("Date,Open,High,Low,Close\r\n")
    for r in rows:
        out.write(f"{r['date']},{r['open']},{r['high']},{r['low']},{r['close']}\r\n")
    return out.getvalue().encode()


def _date_hour(cell: str) -> int:
    """A CryptoDataDownload date cell as epoch seconds, parsed with strptime (not the importer's code)."""
    for fmt in ("%Y-%m-%d %I-%p", "%Y-%m-%d %H:%M:%S"):
        try:
            return int(datetime.strptime(cell, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    raise ValueError(cell)


def test_shared_export_in_the_older_layout_reads_every_date_style() -> None:
    path = shared_csv("Binance_BTCUSDT_1h.csv")
    rows = _rows(path)
    old = importer.parse_candles(_old_layout(rows), symbol="BTC-USDT", source="old.csv")
    # the date column mixes '2017-08-17 05-AM' and '2021-06-10 00:00:00'
    assert set(old.report.ts_units) == {"12-hour", "iso8601"}
    assert old.report.volume_missing and old.report.timeframe == "1h"
    assert old.report.rejected == {} and old.report.accounted()
    assert old.ts.tolist() == sorted({_date_hour(r["date"]) for r in rows})
    # CDD's own date column is 4 h behind its unix column on 91 rows (2017-09): the newest layout
    # reads unix, the older layout can only read the date; every other hour agrees.
    newest = importer.parse_candles(path.read_bytes(), source=str(path))
    unix = {(float(r["unix"]) / (1000 if float(r["unix"]) > 1e11 else 1)) for r in rows}
    shifted = sum(1 for r in rows if _date_hour(r["date"]) not in unix)
    assert len(np.setdiff1d(newest.ts, old.ts)) <= shifted < 100


def _freqtrade_dir(root: Path) -> Path:
    """A freqtrade ``user_data/data/binance`` directory built from the fixtures."""
    d = root / "user_data" / "data" / "binance"
    (d / "futures").mkdir(parents=True)
    shutil.copy(DATA / "BTC_USDT-1h.feather", d)
    shutil.copy(DATA / "SHIB_USDT-1h.json", d)
    shutil.copy(DATA / "BTC_USDT_USDT-1h-futures.feather", d / "futures")
    shutil.copy(DATA / "BTC_USDT_USDT-8h-funding_rate.feather", d / "futures")
    (d / "BTC_USDT-trades.json").write_text("[]\n")
    (d / "pairs.json").write_text('["BTC/USDT", "SHIB/USDT"]\n')
    (d / "README.md").write_text("not data\n")
    return d


def test_directory_imports_every_recognised_file_in_one_table(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _freqtrade_dir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(d), "--json"])
    assert code == 0, err
    result = json.loads(out)
    imported = {(r["symbol"], r["timeframe"]): r["inserted"] for r in result["files"]}
    assert imported == {("BTC-USDT", "1h"): 5, ("SHIB-USDT", "1h"): 3}
    skipped = {f: why for f, why in ((s["file"], s["reason"]) for s in result["skipped"])}
    assert set(skipped) == {
        "BTC_USDT-trades.json",
        "pairs.json",
        "futures/BTC_USDT_USDT-1h-futures.feather",
        "futures/BTC_USDT_USDT-8h-funding_rate.feather",
    }
    assert "--symbol" in skipped["futures/BTC_USDT_USDT-1h-futures.feather"]
    assert result["ignored"] == 1 and result["inserted"] == 8 == _count(database_url)
    assert _stored(database_url, "BTC-USDT", "1h") == _hours("2024-01-01 00:00", 5)

    monkeypatch.setenv("COLUMNS", "200")  # rich folds long cells at 80
    code, out, err = _run(["candles", "import", str(d)])
    assert code == 0, err
    assert out.count("skipped") == 5 and "BTC_USDT-1h.feather" in out and _count(database_url) == 8
    code, out, _ = _run(["candles", "import", str(d), "--json"])
    assert json.loads(out)["inserted"] == 0

    code, out, err = _run(["candles", "import", str(d), "--symbol", "SHIB-USDT", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert [r["symbol"] for r in result["files"]] == ["SHIB-USDT"]
    assert any("name says BTC-USDT" in s["reason"] for s in result["skipped"])


def test_directory_with_one_unreadable_file_writes_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _freqtrade_dir(tmp_path)
    shutil.copy(DATA / "defect_truncated.feather", d / "XRP_USDT-1h.feather")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(d)])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "XRP_USDT-1h.feather" in lines[0], err
    assert _count(database_url) == 0


def test_empty_directory_is_one_line(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = _run(["candles", "import", str(tmp_path)])
    assert code == 2 and "no candle files" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=150, deadline=None)
@given(hour=st.integers(min_value=1_262_304_000 // 3600, max_value=2_051_222_400 // 3600))  # 2010..2035
def test_any_hour_reads_back_from_every_spelling(hour: int) -> None:
    ts = hour * 3600
    dt = datetime.fromtimestamp(ts, UTC)
    spellings = [
        f"{dt:%Y-%m-%d %I-%p}",  # CryptoDataDownload 12-hour (12-AM is midnight)
        f"{dt:%Y-%m-%d %H:%M:%S}",
        f"{dt:%Y-%m-%dT%H:%M:%S}+00:00",
        str(ts),
        f"{float(ts)}",
        str(ts * 1000),  # Binance before 2025
        str(ts * 1_000_000),  # Binance from 2025
    ]
    rows = "".join(f"{s},1,2,0.5,1.5\r\n" for s in spellings)
    parsed = importer.parse_candles(
        f"Date,Open,High,Low,Close\r\n{rows}".encode(), symbol="BTC-USDT", now=ts + 86400
    )
    assert parsed.ts.tolist() == [ts]
    assert parsed.report.duplicates_identical == len(spellings) - 1 and parsed.report.accounted()


def test_freqtrade_jsongz_and_parquet_read_like_json_and_feather(tmp_path: Path) -> None:
    from pyarrow import feather, parquet  # dev extra

    plain = importer.parse_candles((DATA / "SHIB_USDT-1h.json").read_bytes(), source="SHIB_USDT-1h.json")
    packed = gzip.compress((DATA / "SHIB_USDT-1h.json").read_bytes())
    gz = importer.parse_candles(packed, source=str(tmp_path / "SHIB_USDT-1h.json.gz"))
    assert (gz.report.symbol, gz.report.timeframe) == ("SHIB-USDT", "1h")
    np.testing.assert_array_equal(gz.ts, plain.ts)
    np.testing.assert_array_equal(gz.close, plain.close)

    table = feather.read_table(DATA / "BTC_USDT-1h.feather")
    parquet.write_table(table, tmp_path / "BTC_USDT-1h.parquet")
    pq = importer.parse_candles((tmp_path / "BTC_USDT-1h.parquet").read_bytes(), source="BTC_USDT-1h.parquet")
    fe = importer.parse_candles((DATA / "BTC_USDT-1h.feather").read_bytes(), source="BTC_USDT-1h.feather")
    assert pq.report.format == "freqtrade" and pq.report.symbol == "BTC-USDT"
    np.testing.assert_array_equal(pq.ts, fe.ts)
    np.testing.assert_array_equal(pq.volume, fe.volume)
