"""Files that cannot be imported: exit 2, one line naming the problem, database unchanged."""

from __future__ import annotations

import gzip
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from producer.cli import cli

T0 = 1_704_067_200
PLAIN = "timestamp,open,high,low,close,volume\n"
CDD = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount\n"
GOOD = PLAIN + "".join(f"{T0 + i * 3600},10,12,9,11,5\n" for i in range(5))

# name -> (file content or None for "no file", extra CLI args, word expected in the message)
CASES: dict[str, tuple[bytes | None, list[str], str]] = {
    "missing file": (None, [], "no such file"),
    "empty": (b"", [], "empty"),
    "whitespace only": (b"  \n\n \n", [], "empty"),
    "header only": (PLAIN.encode(), [], "no data rows"),
    "cdd header only": (CDD.encode(), [], "no data rows"),
    "binary": (bytes(range(256)) * 4, [], "binary"),
    "gzip": (gzip.compress(GOOD.encode()), [], "binary"),
    "latin-1": ((PLAIN + f"{T0},10,12,9,11,5\n# café\n").encode("latin-1"), [], "UTF-8"),
    "unknown header": (b"a,b,c\n1,2,3\n", [], "unrecognised header"),
    "missing close column": (b"timestamp,open,high,low,volume\n1704067200,1,2,0.5,1\n", [], "missing column"),
    "cdd missing close": (
        b"unix,date,symbol,open,high,low,Volume BTC,Volume USDT\n1704067200000,x,BTC/USDT,1,2,0.5,3,4\n",
        [],
        "missing column",
    ),
    "headerless 5 columns": (b"1704067200,1,2,0.5,1\n", [], "no header"),
    "all rows high below low": (
        (PLAIN + "".join(f"{T0 + i * 3600},10,8,9,11,5\n" for i in range(4))).encode(),
        [],
        "no valid candle rows",
    ),
    "all unaligned": (
        (PLAIN + "".join(f"{T0 + i * 3600 + 1},10,12,9,11,5\n" for i in range(4))).encode(),
        [],
        "not aligned",
    ),
    "all NULL prices": ((PLAIN + f"{T0},NULL,NULL,NULL,NULL,5\n").encode(), [], "NULL"),
    "epoch zero": ((PLAIN + "0,10,12,9,11,5\n").encode(), [], "out of range"),
    "wrong symbol in file": (
        (CDD + f"{T0 * 1000},d,ETH/USDT,10,12,9,11,5,50,3\n").encode(),
        [],
        "--symbol",
    ),
    "conflicts with reject": (
        (PLAIN + f"{T0},10,12,9,11,5\n{T0},10,12,9,11,6\n").encode(),
        ["--on-conflict", "reject"],
        "conflicting",
    ),
    "bad symbol flag": (GOOD.encode(), ["--symbol", "BTC;DROP TABLE candles"], "symbol"),
    "bad timeframe": (GOOD.encode(), ["--timeframe", "7h"], "timeframe"),
    "binance 11 columns": (b"1704067200000,1,2,0.5,1,5,1704070799999,5,3,2,2\n", [], "no header"),
    "directory": (b"DIR", [], "directory"),
    "broken zip": (b"PK\x03\x04" + b"junk" * 10, [], "broken zip"),
    "truncated json": (b"[[1704067200000,1,2,0.5,1.5,3],", [], "not valid JSON"),
    "json objects not rows": (b'[{"date": 1704067200000}]', [], "no valid candle rows"),
    "json not a list": (b"[", [], "not valid JSON"),
}


def _count(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM btc.candles")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def seeded(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database with 5 candles already stored, so that 'unchanged' means something."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    result = CliRunner().invoke(cli, ["candles", "import", str(good), "--symbol", "BTC-USDT"])
    assert result.exit_code == 0, result.output
    assert _count(database_url) == 5
    return database_url


def test_at_least_15_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_exits_2_one_line_nothing_written(name: str, seeded: str, tmp_path: Path) -> None:
    content, extra, word = CASES[name]
    path = tmp_path / "input.csv"
    if content == b"DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(cli, ["candles", "import", str(path), "--symbol", "BTC-USDT", *extra])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert word.lower() in lines[0].lower(), lines[0]
    assert _count(seeded) == 5
