"""Fetch closed candles from an exchange through ccxt and store them (resumable, rate-limited).

Pagination: the closed candles of ``[--since, --until)`` that are NOT stored yet, found in
PostgreSQL as missing ranges (``missing_spans``: a gap inside what is stored as well as the part
after the newest stored candle, so ``--since`` before a gap fills it), each fetched with
``fetch_ohlcv(symbol, timeframe, since, limit)`` from a cursor that starts at the range's first
candle and moves to the candle after the newest received (or one page further when a page is
empty: a gap at the exchange). A range the exchange has no candles for is asked once per run. ccxt's
``enableRateLimit`` spaces requests; 429 / ``RateLimitExceeded`` / ``DDoSProtection`` and
network errors are retried with exponential backoff. A candle is stored only once closed
(``ts + timeframe <= now``). Each page is checked and stored as a file's rows are
(``worker.store.candles``: ``candle_defects``, then ``store_candles`` with the outlier flag) and
committed on its own, so an interrupted fetch resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import ccxt
import numpy as np

from model.candles import timeframe_seconds
from model.market.defects import outliers
from worker.errors import BadInput, ServiceUnavailable
from worker.retry import backoff_s
from worker.store import candles as candles_store
from worker.store import db
from worker.symbols import normalize_symbol, to_ccxt

DEFAULT_EXCHANGE = "kucoin"
#: Candles per request (KuCoin returns at most 1500, Binance spot 1000).
DEFAULT_LIMIT = 1000
#: Attempts per request before giving up; waits 1, 2, 4, ... seconds (capped at 60) in between.
DEFAULT_MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 1.0
#: Longest wait (s) between two tries of one ccxt request.
BACKOFF_MAX_S = 60.0
_RETRYABLE = (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.RequestTimeout, ccxt.NetworkError)


@dataclass
class FetchResult:
    """What one symbol's fetch did."""

    symbol: str
    timeframe: str
    exchange: str
    start: int
    resumed: bool
    requests: int = 0
    retries: int = 0
    received: int = 0
    inserted: int = 0
    already_present: int = 0
    open_candle_skipped: int = 0
    rejected: int = 0
    flagged: int = 0
    last_ts: int | None = None
    #: Ranges of missing candles requested (the part after the newest stored one counts as one).
    missing_ranges: int = 0

    def count_retry(self) -> None:
        """One more request was retried."""
        self.retries += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def make_exchange(exchange_id: str, *, api_url: str | None = None) -> ccxt.Exchange:
    """A ccxt exchange with rate limiting on, loading spot markets only.

    ``api_url`` replaces every API base URL (tests point it at a loopback server).
    """
    cls = getattr(ccxt, exchange_id.lower(), None) if exchange_id.isidentifier() else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, ccxt.Exchange):
        raise BadInput(f"unknown exchange {exchange_id!r}: use a ccxt id such as kucoin or binance")
    ex = cls(
        {
            "enableRateLimit": True,
            "timeout": 30_000,
            "options": {"fetchMarkets": {"types": ["spot"], "fetchTickersFees": False}},
        }
    )
    if api_url is not None:
        ex.urls["api"] = _replace_urls(ex.urls["api"], api_url.rstrip("/"))
    return ex


def _replace_urls(node: Any, base: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace_urls(v, base) for k, v in node.items()}
    if isinstance(node, str) and node.startswith("http"):
        rest = node.split("://", 1)[1]
        path = rest[rest.find("/") :] if "/" in rest else ""
        return base + path
    return node


def ccxt_call(
    fn: Callable[[], Any],
    *,
    what: str,
    symbol: str,
    max_attempts: int,
    sleep: Callable[[float], None],
    on_retry: Callable[[], None] = lambda: None,
) -> Any:
    """``fn()`` (one ccxt request) with exponential backoff on rate limits and network errors;
    ccxt's errors become one-line ``ServiceUnavailable`` / ``BadInput`` naming ``what``."""
    for attempt in range(max_attempts):
        try:
            return fn()
        except _RETRYABLE as exc:
            if attempt + 1 >= max_attempts:
                raise ServiceUnavailable(
                    f"{what}: still failing after {max_attempts} attempts ({type(exc).__name__})"
                ) from exc
            on_retry()
            sleep(backoff_s(attempt + 1, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_MAX_S))
        except ccxt.BadSymbol as exc:
            raise BadInput(f"{what}: no market {symbol}") from exc
        except ccxt.ExchangeError as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise BadInput(f"{what}: the exchange refused the request: {first}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_symbol(
    exchange: ccxt.Exchange,
    database_url: str,
    symbol: str,
    timeframe: str,
    *,
    since: int,
    until: int | None = None,
    limit: int = DEFAULT_LIMIT,
    now: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch and store the closed candles of ``symbol`` in ``[since, until)`` (epoch s) that are not
    stored yet: gaps inside the stored ones and the part after the newest (module docstring)."""
    symbol = normalize_symbol(symbol)
    try:
        step = timeframe_seconds(timeframe)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if limit < 1:
        raise BadInput(f"limit must be >= 1, got {limit}")
    now_s = time.time() if now is None else now
    end = now_s if until is None else min(until, now_s)
    start = -(-since // step) * step
    stop = int(end // step) * step  # candles before it are closed at end
    with db.transaction(database_url) as cur:
        stored = candles_store.max_ts(cur, symbol, timeframe)
        have = candles_store.stored_ts(cur, symbol, timeframe, start, max(start, stop))
    spans = missing_spans(have, start, stop, step)
    resumed = len(have) > 0 and (not spans or spans[0][0] > start)
    first = spans[0][0] if spans else max(start, stop)
    result = FetchResult(
        symbol, timeframe, exchange.id, first, resumed, last_ts=stored, missing_ranges=len(spans)
    )
    market = to_ccxt(symbol)
    for lo, hi in spans:
        cursor = lo
        while cursor < hi:
            result.requests += 1
            page = ccxt_call(
                partial(exchange.fetch_ohlcv, market, timeframe, cursor * 1000, limit),
                what=result.exchange,
                symbol=symbol,
                max_attempts=max_attempts,
                sleep=sleep,
                on_retry=result.count_retry,
            )
            rows = [r for r in page if r and r[0] is not None and r[0] // 1000 >= cursor]
            result.received += len(rows)
            if not rows:
                cursor += limit * step
                continue
            result.open_candle_skipped += sum(1 for r in rows if r[0] // 1000 + step > now_s)
            closed = [r for r in rows if r[0] // 1000 < hi]
            _store(database_url, symbol, timeframe, closed, result, now_s)
            newest = max(r[0] // 1000 for r in rows)
            if not closed or newest + step >= hi:
                break  # the range is filled, or the exchange has nothing in the rest of it
            cursor = newest + step
    return result


def missing_spans(have: np.ndarray, start: int, stop: int, step: int) -> list[tuple[int, int]]:
    """The ranges ``[lo, hi)`` of ``[start, stop)`` (multiples of ``step``) with no candle in
    ``have`` (sorted epoch seconds inside the range), oldest first."""
    if stop <= start:
        return []
    edges = np.concatenate(([start - step], np.asarray(have, dtype=np.int64), [stop]))
    gap = np.diff(edges) > step
    return [(int(a) + step, int(b)) for a, b in zip(edges[:-1][gap], edges[1:][gap], strict=True)]


def _store(
    database_url: str, symbol: str, timeframe: str, rows: list[list[Any]], result: FetchResult, now: float
) -> None:
    """Check a page's closed candles as the importer checks a file's rows and store the good ones."""
    good = [r for r in rows if len(r) >= 6 and all(v is not None for v in r[:6])]
    result.rejected += len(rows) - len(good)
    if not good:
        return
    arr = np.array([r[:6] for r in good], dtype=np.float64)
    ts = (arr[:, 0] // 1000).astype(np.int64)
    o, h, lo, c, v = arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5]
    ok = candles_store.candle_defects(ts, o, h, lo, c, v, timeframe=timeframe, now=now) == ""
    result.rejected += int((~ok).sum())
    ts, o, h, lo, c, v = ts[ok], o[ok], h[ok], lo[ok], c[ok], v[ok]
    order = np.argsort(ts, kind="stable")
    ts, o, h, lo, c, v = ts[order], o[order], h[order], lo[order], c[order], v[order]
    flagged = outliers(h, lo, c)
    result.flagged += int(flagged.sum())
    with db.transaction(database_url) as cur:
        ins = candles_store.store_candles(cur, symbol, timeframe, ts, o, h, lo, c, v, outlier=flagged)
    result.inserted += ins.inserted
    result.already_present += ins.already_present
    if len(ts):
        result.last_ts = int(ts[-1]) if result.last_ts is None else max(result.last_ts, int(ts[-1]))
