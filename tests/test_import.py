"""Import of the real CryptoDataDownload exports and of the other formats, end to end."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.market.defects import OUTLIER_FLAG
from producer.cli import cli
from tests.conftest import shared_csv
from tests.sql import execute, query
from worker.errors import BadInput
from worker.ingest import importer
from worker.store import candles as candles_store

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
NOW = T0 + 400 * 86400


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def _independent_facts(path: Path) -> dict[str, int]:
    """Facts about a CryptoDataDownload file computed without the importer's code."""
    rows_by_hour: dict[int, list[tuple[str, ...]]] = defaultdict(list)
    null_trades = 0
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            unix = float(row["unix"])
            ts = int(unix // 1000) if unix > 10**11 else int(unix)
            volumes = [k for k in row if k.lower().startswith("volume")]
            prices = tuple(float(row[k]) for k in ("open", "high", "low", "close", *volumes))
            rows_by_hour[ts].append(prices)
            null_trades += row["tradecount"] == "NULL"
    hours = sorted(rows_by_hour)
    conflicting = sum(len(v) - 1 for v in rows_by_hour.values() if len(set(v)) > 1)
    gaps = sum(1 for a, b in zip(hours, hours[1:], strict=False) if b - a > 3600)
    return {"hours": len(hours), "conflicting": conflicting, "gaps": gaps, "null_trades": null_trades}


@pytest.mark.parametrize("name", ["Binance_BTCUSDT_1h.csv", "Binance_ETHUSDT_1h.csv"])
def test_shared_file_one_candle_per_hour_and_reimport_inserts_nothing(
    name: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_csv(name)
    symbol = name.split("_")[1].replace("USDT", "-USDT")
    facts = _independent_facts(path)
    monkeypatch.setenv("DATABASE_URL", database_url)

    code, out, err = _run(["candles", "import", str(path), "--symbol", symbol, "--json"])
    assert code == 0, err
    report = json.loads(out)
    (count, distinct), *_ = query(
        database_url, "SELECT count(*), count(DISTINCT ts) FROM btc.candles WHERE symbol = %s", (symbol,)
    )
    assert count == distinct == facts["hours"]
    assert report["inserted"] == facts["hours"]
    assert report["rows_read"] == sum(1 for _ in path.open()) - 1
    assert report["duplicates_conflicting"] == facts["conflicting"] == 2649
    assert report["gaps"] == facts["gaps"] > 0
    assert report["null_optional"]["trades"] == facts["null_trades"]
    assert report["order"] == "newest-first"
    assert set(report["ts_units"]) == {"s", "ms"}
    assert report["outliers_flagged"] >= 1
    assert report["accounted"] is True
    # the 2017-08-17 04:00 bad tick (high ~4x the price) is kept and flagged, not dropped
    flagged = query(
        database_url,
        "SELECT extract(epoch FROM ts)::bigint FROM btc.candles WHERE symbol = %s AND flag = %s",
        (symbol, OUTLIER_FLAG),
    )
    assert (1502942400,) in flagged
    # the exact millisecond row wins over its rounded float-second copy (tradecount kept)
    (trades,), *_ = query(
        database_url,
        "SELECT trades FROM btc.candles WHERE symbol = %s AND ts = to_timestamp(1596322800)",
        (symbol,),
    )
    assert trades is not None

    code, out, err = _run(["candles", "import", str(path), "--symbol", symbol, "--json"])
    assert code == 0, err
    again = json.loads(out)
    assert again["inserted"] == 0 and again["already_present"] == facts["hours"]
    assert again["already_present_differing"] == 0

    code, out, _ = _run(["candles", "list", "--json"])
    listed = json.loads(out)
    assert listed == [
        {
            "symbol": symbol,
            "timeframe": "1h",
            "first": report["first_ts"],
            "last": report["last_ts"],
            "count": facts["hours"],
            "gaps": facts["gaps"],
            "longest_gap": report["longest_gap"],
            "flagged": report["outliers_flagged"],
            "no_volume": 0,
        }
    ]
    loaded = candles_store.load_candles(database_url, symbol, "1h")
    assert len(loaded) == facts["hours"] and np.all(np.diff(loaded.ts) > 0)


def _plain_rows(n: int, start: int = T0) -> list[str]:
    out = []
    for i in range(n):
        o = 100.0 + i
        out.append(f"{start + i * 3600},{o},{o + 2},{o - 1},{o + 1},{10 + i}")
    return out


def test_plain_iso_and_epoch_ms(tmp_path: Path) -> None:
    data = "timestamp,open,high,low,close,volume\n"
    data += "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
    data += "2024-01-01 01:00:00+00:00,1.5,2,1,1.2,11\n"
    data += f"{(T0 + 7200) * 1000},1.2,1.3,1.1,1.25,12\n"
    parsed = importer.parse_candles(data.encode(), symbol="BTC-USDT", now=NOW)
    assert parsed.ts.tolist() == [T0, T0 + 3600, T0 + 7200]
    assert parsed.report.ts_units == {"iso8601": 2, "ms": 1}
    assert parsed.report.format == "plain"


def test_binance_kline_us_and_ms_with_taker_volume() -> None:
    def line(ts: int, mult: int) -> str:
        close_time = (ts + 3599) * mult + (mult - 1)
        return f"{ts * mult},10,12,9,11,100,{close_time},1100,42,60,660,0"

    data = "\n".join([line(T0, 1000), line(T0 + 3600, 1_000_000), line(T0 + 7200, 1000)]) + "\n"
    parsed = importer.parse_candles(data.encode(), symbol="BTCUSDT", now=NOW)
    assert parsed.report.format == "binance"
    assert parsed.ts.tolist() == [T0, T0 + 3600, T0 + 7200]
    assert parsed.taker_buy_volume.tolist() == [60.0] * 3
    assert parsed.trades.tolist() == [42.0] * 3
    assert parsed.report.ts_units == {"ms": 2, "us": 1}


def test_row_defects_are_rejected_with_reasons_and_accounted() -> None:
    rows = _plain_rows(30)
    rows[3] = f"{T0 + 3 * 3600},100,99,98,101,5"  # high below close
    rows[4] = f"{T0 + 4 * 3600},NULL,105,100,101,5"
    rows[5] = f"{T0 + 5 * 3600},,105,100,101,5"
    rows[6] = f"{T0 + 6 * 3600 + 60},100,105,99,101,5"  # not aligned
    rows[7] = f"{NOW + 86400},100,105,99,101,5"  # future
    rows[8] = f"{T0 + 8 * 3600},100,105,99,101"  # too few fields
    rows[9] = f"{T0 + 9 * 3600},abc,105,99,101,5"
    del rows[20:23]  # a gap of three candles
    data = ("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n").encode()
    report = importer.parse_candles(data, symbol="BTC-USDT", now=NOW).report
    assert report.rejected == {
        "high/low do not bound open/close": 1,
        "NULL or empty open": 2,
        "timestamp not aligned to 1h": 1,
        "timestamp out of range (before 2009 or in the future)": 1,
        "wrong number of fields (expected 6)": 1,
        "not a number in open": 1,
    }
    assert report.rows_read == 27 and report.candles == 20 and report.accounted()
    # rows 3..9 rejected (one gap of 7) and rows 20..22 deleted (one gap of 3)
    assert (report.gaps, report.longest_gap) == (2, 7)


@pytest.mark.parametrize(
    ("policy", "expected_close"),
    [("first", 1.0), ("last", 3.0), ("max-volume", 2.0), ("most-complete", 3.0)],
)
def test_conflict_policies(policy: str, expected_close: float) -> None:
    data = (
        "timestamp,open,high,low,close,volume,trades\n"
        f"{T0},1,5,0.5,1,10,\n"
        f"{T0},1,5,0.5,2,30,\n"
        f"{T0},1,5,0.5,3,20,7\n"
        f"{T0},1,5,0.5,3,20,7\n"
    ).encode()
    parsed = importer.parse_candles(data, symbol="BTC-USDT", on_conflict=policy, now=NOW)
    assert parsed.close.tolist() == [expected_close]
    r = parsed.report
    assert r.duplicate_timestamps == 1 and r.rows_read == 4 and r.accounted()
    assert r.duplicates_identical + r.duplicates_conflicting == 3
    with pytest.raises(BadInput, match="conflicting"):
        importer.parse_candles(data, symbol="BTC-USDT", on_conflict="reject", now=NOW)


def test_missing_schema_says_run_db_init(database_url: str, tmp_path: Path, monkeypatch) -> None:
    execute(database_url, "DROP SCHEMA btc CASCADE")
    f = tmp_path / "c.csv"
    f.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(_plain_rows(3)) + "\n")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = _run(["candles", "import", str(f), "--symbol", "BTC-USDT"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "qtrain db init" in err


def test_load_candles_window(database_url: str, tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "c.csv"
    f.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(reversed(_plain_rows(10))) + "\n")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = _run(["candles", "import", str(f), "--symbol", "btc/usdt"])
    assert code == 0, err
    c = candles_store.load_candles(database_url, "BTCUSDT", "1h", since=T0 + 3600, until=T0 + 4 * 3600)
    assert c.ts.tolist() == [T0 + 3600, T0 + 7200, T0 + 10800]
    assert c.close.tolist() == [102.0, 103.0, 104.0]
    assert c.symbol == "BTC-USDT" and c.taker_buy_volume is None
    assert len(candles_store.load_candles(database_url, "ETH-USDT", "1h")) == 0


_valid_rows = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=200),
        st.floats(min_value=1, max_value=1e6, allow_nan=False),
        st.floats(min_value=0, max_value=1e4, allow_nan=False),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda r: r[0],
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_valid_rows, data=st.data())
def test_any_permutation_or_duplication_gives_same_candles(
    rows: list[tuple[int, float, float]], data
) -> None:
    lines = [f"{T0 + h * 3600},{p!r},{p * 1.01!r},{p * 0.99!r},{p!r},{v!r}" for h, p, v in rows]
    extra = data.draw(st.lists(st.sampled_from(lines), max_size=20))
    shuffled = data.draw(st.permutations(lines + extra))
    header = "timestamp,open,high,low,close,volume\n"
    base = importer.parse_candles((header + "\n".join(lines)).encode(), symbol="BTC-USDT", now=NOW)
    mixed = importer.parse_candles((header + "\n".join(shuffled)).encode(), symbol="BTC-USDT", now=NOW)
    assert mixed.ts.tolist() == sorted(T0 + h * 3600 for h, _, _ in rows)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(mixed, name), getattr(base, name))
    r = mixed.report
    assert r.duplicates_identical == len(extra) and r.duplicates_conflicting == 0 and r.accounted()
