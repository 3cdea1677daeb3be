"""A loopback HTTP server that answers like KuCoin's public spot API (the endpoints ccxt calls).

Serves ``/api/v3/currencies`` and ``/api/v2/symbols`` (minimal recorded bodies, so that ccxt's
``load_markets`` works offline) and ``/api/v1/market/candles`` (real body shape: newest first,
``[time s, open, close, high, low, volume, turnover]`` as strings, at most ``page_cap`` rows of
``[startAt, endAt)``). Answers 429 with KuCoin's body for the first ``fail_429`` candle requests.
With ``closed_only`` it serves only candles closed at ``now`` (default: the open one too).

Live market data (issue 11): ``/api/v1/market/orderbook/level2_{20,100}`` (bids and asks as
``[price, size]`` strings around the last served close) and ``/api/v1/market/histories`` (recent
trades, ``side`` is the taker's, ``time`` in ns). Both are deterministic functions of the served
clock, so a decision made twice for the same candle sees the same book. ``book`` / ``trades``:
``"normal"``, ``"empty"`` or ``"error"`` (a 500). The next ``market_429`` of those requests get a
429 and the next ``market_stall`` sleep ``stall_s`` before answering (a client timeout).
Anything else is a 404 recorded in ``unexpected``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from model.market.synthetic import make_candles

KUCOIN_TYPES = {
    "1min": 60,
    "5min": 300,
    "15min": 900,
    "30min": 1800,
    "1hour": 3600,
    "4hour": 14400,
    "1day": 86400,
}

_CURRENCIES = [
    {
        "currency": c,
        "name": c,
        "fullName": c,
        "precision": 8,
        "confirms": None,
        "contractAddress": None,
        "isMarginEnabled": True,
        "isDebitEnabled": True,
        "chains": [],
    }
    for c in ("BTC", "ETH", "USDT")
]


def _symbol(base: str, quote: str) -> dict[str, object]:
    return {
        "symbol": f"{base}-{quote}",
        "name": f"{base}-{quote}",
        "baseCurrency": base,
        "quoteCurrency": quote,
        "feeCurrency": quote,
        "market": "USDS",
        "baseMinSize": "0.00001",
        "quoteMinSize": "0.1",
        "baseMaxSize": "10000000000",
        "quoteMaxSize": "99999999",
        "baseIncrement": "0.00000001",
        "quoteIncrement": "0.000001",
        "priceIncrement": "0.01",
        "priceLimitRate": "0.1",
        "minFunds": "0.1",
        "isMarginEnabled": True,
        "enableTrading": True,
        "feeCategory": 1,
        "makerFeeCoefficient": "1.00",
        "takerFeeCoefficient": "1.00",
        "st": False,
    }


@dataclass
class FakeKucoin:
    """State of the fake exchange: candles per symbol (open candle included), requests seen."""

    candles: dict[str, list[list[str]]] = field(default_factory=dict)  # symbol -> oldest-first rows
    page_cap: int = 1500
    now: float | None = None  # the exchange's clock: no candle opened after it exists yet
    fail_429: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed_only: bool = False
    step: int = 3600
    book: str = "normal"
    trades: str = "normal"
    market_429: int = 0
    market_stall: int = 0
    stall_s: float = 3.0

    def add_series(
        self, symbol: str, *, start: int, count: int, step: int = 3600, seed: int = 1
    ) -> np.ndarray:
        """Add ``count`` seeded candles from ``start``; returns their timestamps."""
        c = make_candles(count, seed=seed, start=start, step=step, symbol=symbol)
        rows = [
            [str(int(t)), f"{o:.2f}", f"{cl:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{v:.6f}", f"{v * cl:.4f}"]
            for t, o, h, lo, cl, v in zip(c.ts, c.open, c.high, c.low, c.close, c.volume, strict=True)
        ]
        self.candles[symbol] = rows
        return c.ts

    def candle_requests(self) -> list[dict[str, str]]:
        """Query parameters of every candle request, in order (429-answered ones included)."""
        return [q for p, q in self.requests if p == "/api/v1/market/candles"]

    def market_requests(self) -> list[str]:
        """Paths of every order-book and trades request, in order (failed ones included)."""
        return [
            p
            for p, _ in self.requests
            if p.startswith(("/api/v1/market/orderbook", "/api/v1/market/histories"))
        ]

    def _served(self, symbol: str) -> list[list[str]]:
        rows = self.candles.get(symbol) or []
        last = 2**62 if self.now is None else self.now - (self.step if self.closed_only else 0)
        return [r for r in rows if int(r[0]) <= last]

    def _market(self, path: str, query: dict[str, str]) -> tuple[int, object] | None:
        """Order book and trades (None: not one of those paths)."""
        is_book = path.startswith("/api/v1/market/orderbook/level2_")
        if not is_book and path != "/api/v1/market/histories":
            return None
        mode = self.book if is_book else self.trades
        if self.market_429 > 0:
            self.market_429 -= 1
            return 429, {"code": "429000", "msg": "Too many requests. System-level rate limit exceeded."}
        if mode == "error":
            return 500, {"code": "500000", "msg": "Internal Server Error"}
        served = self._served(query.get("symbol", ""))
        if not served:
            return 400, {"code": "400100", "msg": "Unsupported trading pair."}
        price = float(served[-1][2])
        clock = int(served[-1][0])
        rng = np.random.default_rng(clock // self.step)
        if is_book:
            levels = 0 if mode == "empty" else 20
            bids = [
                [f"{price * (1 - 0.0005 * (i + 1)):.2f}", f"{rng.uniform(0.1, 2.0):.6f}"]
                for i in range(levels)
            ]
            asks = [
                [f"{price * (1 + 0.0005 * (i + 1)):.2f}", f"{rng.uniform(0.1, 2.0):.6f}"]
                for i in range(levels)
            ]
            data: object = {"sequence": str(clock), "time": clock * 1000, "bids": bids, "asks": asks}
            return 200, {"code": "200000", "data": data}
        n = 0 if mode == "empty" else 50
        trades = [
            {
                "sequence": str(clock * 100 + i),
                "price": f"{price:.2f}",
                "size": f"{rng.uniform(0.01, 1.0):.6f}",
                "side": "buy" if rng.random() < 0.55 else "sell",
                "time": (clock + self.step - 60 + i) * 10**9,
            }
            for i in range(n)
        ]
        return 200, {"code": "200000", "data": trades}

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        stall = False
        with self.lock:
            if self.market_stall > 0 and path.startswith(
                ("/api/v1/market/orderbook", "/api/v1/market/histories")
            ):
                self.market_stall -= 1
                stall = True
        if stall:
            time.sleep(self.stall_s)
        with self.lock:
            self.requests.append((path, query))
            market = self._market(path, query)
            if market is not None:
                return market
            if path == "/api/v3/currencies":
                return 200, {"code": "200000", "data": _CURRENCIES}
            if path == "/api/v2/symbols":
                data = [_symbol(*s.split("-")) for s in self.candles]
                return 200, {"code": "200000", "data": data}
            if path == "/api/v1/market/candles":
                if self.fail_429 > 0:
                    self.fail_429 -= 1
                    return 429, {
                        "code": "429000",
                        "msg": "Too many requests. System-level rate limit exceeded.",
                    }
                rows = self.candles.get(query.get("symbol", ""))
                if rows is None or query.get("type") not in KUCOIN_TYPES:
                    return 400, {"code": "400100", "msg": "Unsupported trading pair."}
                lo = int(query.get("startAt", 0))
                hi = int(query.get("endAt", 2**62)) or 2**62
                last = 2**62 if self.now is None else self.now - (self.step if self.closed_only else 0)
                sel = [r for r in rows if lo <= int(r[0]) < hi and int(r[0]) <= last]
                return 200, {"code": "200000", "data": list(reversed(sel))[: self.page_cap]}
            self.unexpected.append(path)
            return 404, {"code": "404000", "msg": "Not Found"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKucoin

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status, body = self.server.fake.answer(parts.path, query)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@contextmanager
def serve(fake: FakeKucoin) -> Iterator[FakeKucoin]:
    """Run ``fake`` on 127.0.0.1 (random port) in a thread; ``fake.url`` is its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
