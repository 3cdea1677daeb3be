"""``candles fetch`` against a loopback server that answers like KuCoin: pages, resume, 429, open candle."""

from __future__ import annotations

import json

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
