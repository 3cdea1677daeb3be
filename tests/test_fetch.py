"""``candles fetch`` against a loopback server that answers like KuCoin: pages, resume, 429, open candle."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from producer.cli import cli
from tests.fake_exchange import FakeKucoin, serve
from worker.clients.exchange import fetch_symbol, make_exchange

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
STEP = 3600


def _stored(url: str, symbol: str) -> list[int]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM ts)::bigint FROM btc.candles WHERE symbol = %s ORDER BY ts",
                (symbol,),
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_fetch_pages_retries_429_skips_open_candle_and_resumes(database_url: str) -> None:
    fake = FakeKucoin(fail_429=1)
    ts = fake.add_series("BTC-USDT", start=T0, count=120)  # the last one is still open at `now`
    now = float(ts[-1] + STEP // 2)
    sleeps: list[float] = []
    with serve(fake):
        ex = make_exchange("kucoin", api_url=fake.url)
        fake.now = now - 40 * STEP  # candle 79 is open
        first = fetch_symbol(
            ex, database_url, "BTC-USDT", "1h", since=T0, limit=50, now=fake.now, sleep=sleeps.append
        )
        assert first.retries == 1 and sleeps == [1.0]  # the 429 was retried after a backoff
        assert _stored(database_url, "BTC-USDT") == [int(t) for t in ts[:79]]
        assert first.open_candle_skipped == 1 and first.inserted == 79

        n_before = len(fake.candle_requests())
        fake.now = now
        second = fetch_symbol(
            ex, database_url, "BTC-USDT", "1h", since=T0, limit=50, now=now, sleep=sleeps.append
        )
        resumed_requests = fake.candle_requests()[n_before:]
    assert second.resumed and second.start == int(ts[79])
    assert int(resumed_requests[0]["startAt"]) == int(ts[78]) + STEP  # after the newest stored candle
    assert second.inserted == 40 and second.already_present == 0
    assert _stored(database_url, "BTC-USDT") == [int(t) for t in ts[:-1]]  # open candle never stored
    assert fake.unexpected == []
    assert len(resumed_requests) == 1


def test_cli_fetch_two_symbols_then_nothing_new(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKucoin(page_cap=1500)
    fake.add_series("BTC-USDT", start=T0, count=30, seed=1)
    fake.add_series("ETH-USDT", start=T0, count=30, seed=2)
    monkeypatch.setenv("DATABASE_URL", database_url)
    with serve(fake):
        monkeypatch.setenv("QTRAIN_EXCHANGE_API_URL", fake.url)
        args = ["candles", "fetch", "--symbols", "btc/usdt,ETHUSDT", "--since", "2024-01-01", "--json"]
        args += ["--until", "2024-01-02T00:00:00Z"]
        r1 = CliRunner().invoke(cli, args)
        assert r1.exit_code == 0, (r1.output, r1.exception)
        r2 = CliRunner().invoke(cli, args)
    one, two = json.loads(r1.stdout), json.loads(r2.stdout)
    assert [r["inserted"] for r in one] == [24, 24]  # until is exclusive: 00:00..23:00
    assert [r["inserted"] for r in two] == [0, 0] and [r["requests"] for r in two] == [0, 0]
    assert len(_stored(database_url, "ETH-USDT")) == 24
    assert fake.unexpected == []


def test_unknown_exchange_and_market_are_one_line(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    r = CliRunner().invoke(
        cli, ["candles", "fetch", "--symbols", "BTC-USDT", "--since", "2024-01-01", "--exchange", "nope"]
    )
    assert r.exit_code == 2 and "unknown exchange" in r.stderr
    fake = FakeKucoin()
    fake.add_series("BTC-USDT", start=T0, count=5)
    with serve(fake):
        monkeypatch.setenv("QTRAIN_EXCHANGE_API_URL", fake.url)
        r = CliRunner().invoke(cli, ["candles", "fetch", "--symbols", "DOGE-USDT", "--since", "2024-01-01"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (r.stderr, r.exception)


def _delete(args: list[str]):
    return CliRunner().invoke(cli, ["candles", "delete", *args])


def test_delete_asks_for_yes_then_fetch_since_fills_the_gap_and_the_older_part(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29: `fetch --since` used to resume after the newest candle and never fill what lay
    before it. Now a hole in the middle and the part before the first stored candle are fetched."""
    fake = FakeKucoin(page_cap=1500)
    ts = [int(t) for t in fake.add_series("BTC-USDT", start=T0, count=72, seed=3)]
    monkeypatch.setenv("DATABASE_URL", database_url)
    args = [
        "candles",
        "fetch",
        "--symbols",
        "BTC-USDT",
        "--since",
        "2024-01-01",
        "--until",
        "2024-01-03",
        "--json",
    ]
    with serve(fake):
        monkeypatch.setenv("QTRAIN_EXCHANGE_API_URL", fake.url)
        assert CliRunner().invoke(cli, args).exit_code == 0
        assert _stored(database_url, "BTC-USDT") == ts[:48]
        # without --yes: says what it would delete, deletes nothing, exit 1
        span = ["--symbol", "btc/usdt", "--since", "2024-01-01T10:00", "--until", "2024-01-01T20:00"]
        dry = _delete(span)
        assert dry.exit_code == 1 and "would delete 10 candles of BTC-USDT" in dry.stdout, dry.output
        assert "nothing deleted: add --yes" in dry.stdout and len(_stored(database_url, "BTC-USDT")) == 48
        done = _delete([*span, "--yes"])
        assert done.exit_code == 0 and "deleted 10 candles of BTC-USDT" in done.stdout, done.output
        assert _stored(database_url, "BTC-USDT") == ts[:10] + ts[20:48]
        first = _delete(["--symbol", "BTC-USDT", "--until", "2024-01-01T05:00", "--yes", "--json"])
        assert json.loads(first.stdout) == {
            "symbol": "BTC-USDT",
            "since": None,
            "until": T0 + 5 * STEP,
            "counts": {"1h": 5},
            "total": 5,
            "deleted": True,
        }
        n_before = len(fake.candle_requests())
        again = CliRunner().invoke(cli, args)
        asked = [int(r["startAt"]) for r in fake.candle_requests()[n_before:]]
    (r,) = json.loads(again.stdout)
    assert _stored(database_url, "BTC-USDT") == ts[:48]  # both holes filled, nothing else changed
    assert r["missing_ranges"] == 2 and r["inserted"] == 15 and r["already_present"] == 0
    assert asked == [ts[0], ts[10]] and r["start"] == ts[0] and not r["resumed"]
    assert fake.unexpected == []


def test_delete_refuses_bad_input_in_one_line(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    cases = [
        (["--symbol", "BTC-USDT;DROP TABLE x"], "invalid symbol"),
        (["--symbol", "BTC-USDT", "--since", "2024-02-01", "--until", "2024-01-01"], "must be after --since"),
        (["--symbol", "BTC-USDT", "--timeframe", "7x"], "timeframe"),
        (["--symbol", "BTC-USDT", "--since", "yesterday-ish"], "--since"),
    ]
    for extra, needle in cases:
        r = _delete([*extra, "--yes"])
        assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
            extra,
            r.output,
        )
    r = _delete(["--symbol", "ETH-USDT"])
    assert r.exit_code == 0 and "nothing to delete" in r.stdout


def test_missing_spans_property() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from worker.clients.exchange import missing_spans

    @given(st.sets(st.integers(0, 59)), st.integers(0, 30), st.integers(0, 60))
    def check(have: set[int], lo: int, hi: int) -> None:
        inside = sorted(h for h in have if lo <= h < hi)
        spans = missing_spans([h * STEP for h in inside], lo * STEP, hi * STEP, STEP)
        covered = {t // STEP for a, b in spans for t in range(a, b, STEP)}
        assert covered == set(range(lo, hi)) - set(inside)  # exactly the missing candles
        assert all(a < b for a, b in spans) and all(
            b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False)
        )

    check()


def test_fetch_and_import_keep_and_refuse_the_same_candles(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One set of candle checks for both ways in (``worker.store.candles.candle_defects``): the same
    defective rows, served by the exchange and read from a file, leave the same candles stored."""
    fake = FakeKucoin()
    ts = [int(t) for t in fake.add_series("BTC-USDT", start=T0, count=24, seed=5)]
    rows = fake.candles["BTC-USDT"]  # [time, open, close, high, low, volume, turnover]
    rows[3][3] = str(float(rows[3][2]) * 0.5)  # high under the close
    rows[5][4] = "0"  # low 0: a price <= 0
    rows[7][5] = "-1"  # negative volume
    rows[9][0] = str(ts[9] + 60)  # not on the hour
    bad = {ts[3], ts[5], ts[7], ts[9]}
    with serve(fake):
        ex = make_exchange("kucoin", api_url=fake.url)
        got = fetch_symbol(ex, database_url, "BTC-USDT", "1h", since=T0, now=float(ts[-1] + 2 * STEP))
    csv = tmp_path / "rows.csv"
    lines = [f"{r[0]},{r[1]},{r[3]},{r[4]},{r[2]},{r[5]}" for r in rows]  # as timestamp,open,high,low,close
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    monkeypatch.setenv("DATABASE_URL", database_url)
    args = ["candles", "import", str(csv), "--symbol", "ETH-USDT", "--timeframe", "1h", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert got.rejected == report["rejected_total"] == len(bad)
    kept = [t for t in ts if t not in bad]
    assert _stored(database_url, "BTC-USDT") == _stored(database_url, "ETH-USDT") == kept
