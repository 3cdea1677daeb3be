"""The analyse step's per-process candle span cache answers exactly what ``load_candles`` answers."""

from __future__ import annotations

import numpy as np
import pytest

from model.features import compute_features
from model.market.synthetic import make_candles
from worker.store import db
from worker.store.candles import SpanCache, insert_candles, load_candles

H = 3600


def _seed(url: str, n: int, drop: tuple[int, ...] = (), no_tbv: tuple[int, ...] = ()) -> np.ndarray:
    """``n`` hourly BTC-USDT candles minus the rows ``drop`` (gaps), without taker-buy volume at
    the rows ``no_tbv``; returns the stored timestamps."""
    c = make_candles(n, seed=5, price=30_000.0, symbol="BTC-USDT")
    keep = np.setdiff1d(np.arange(n), np.asarray(drop, dtype=np.int64))
    tbv = np.asarray(c.taker_buy_volume, dtype=np.float64).copy()
    tbv[list(no_tbv)] = np.nan
    with db.transaction(url) as cur:
        insert_candles(
            cur,
            "BTC-USDT",
            "1h",
            c.ts[keep],
            c.open[keep],
            c.high[keep],
            c.low[keep],
            c.close[keep],
            c.volume[keep],
            taker_buy_volume=tbv[keep],
        )
    return np.asarray(c.ts[keep])


def _same(a: object, b: object) -> None:
    for name in ("ts", "open", "high", "low", "close", "volume"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    ta, tb = a.taker_buy_volume, b.taker_buy_volume  # type: ignore[attr-defined]
    assert (ta is None) == (tb is None)
    if ta is not None:
        assert ta.tobytes() == tb.tobytes()


def test_spans_give_load_candles_answers_and_features(database_url: str) -> None:
    ts = _seed(database_url, 600, drop=(100, 101, 350), no_tbv=(420,))
    cache = SpanCache(span=256)
    t0 = int(ts[0])
    for start in range(0, 560, 7):
        since, until = t0 + start * H, t0 + (start + 97) * H
        got = cache.get(database_url, "btc-usdt", "1h", since=since, until=until)
        want = load_candles(database_url, "BTC-USDT", "1h", since=since, until=until)
        _same(got, want)
        fg, fw = compute_features(got), compute_features(want)
        assert all(fg[k].tobytes() == fw[k].tobytes() for k in fw)
    # one query per span of 256 candles, not one per window
    assert cache.loads <= 600 // (256 - 97) + 2


def test_a_stale_span_is_served_until_forgotten_or_old(database_url: str) -> None:
    ts = _seed(database_url, 300, drop=(200,))
    cache = SpanCache(span=256, max_age_s=3600)
    t0 = int(ts[0])
    since, until = t0 + 150 * H, t0 + 250 * H
    before = cache.get(database_url, "BTC-USDT", "1h", since=since, until=until)
    _seed(database_url, 300)  # fills the gap at row 200
    now = load_candles(database_url, "BTC-USDT", "1h", since=since, until=until)
    assert len(now) == len(before) + 1
    _same(cache.get(database_url, "BTC-USDT", "1h", since=since, until=until), before)
    cache.forget(database_url, "BTC-USDT", "1h")
    _same(cache.get(database_url, "BTC-USDT", "1h", since=since, until=until), now)
    young = SpanCache(span=256, max_age_s=0.0)
    young.get(database_url, "BTC-USDT", "1h", since=since, until=until)
    young.get(database_url, "BTC-USDT", "1h", since=since, until=until)
    assert young.loads == 2


@pytest.mark.parametrize("n", [0, 5])
def test_spans_of_missing_or_few_candles(database_url: str, n: int) -> None:
    ts = _seed(database_url, n) if n else np.array([1_700_000_000])
    cache = SpanCache(span=64)
    since, until = int(ts[0]), int(ts[0]) + 100 * H
    _same(
        cache.get(database_url, "BTC-USDT", "1h", since=since, until=until),
        load_candles(database_url, "BTC-USDT", "1h", since=since, until=until),
    )
