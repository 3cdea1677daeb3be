"""One self-contained HTML backtest report: inline SVG charts and a metric table, no scripts, no CDN.

Charts: equity against buy-and-hold, drawdown, and price with trade markers. Long series are
downsampled to about 2,000 points per line keeping each bucket's min and max, so spikes and
drawdown troughs survive.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from model.backtest import BacktestResult
from model.candles import Candles
from model.metrics import METRIC_NAMES, drawdown_series

MAX_POINTS = 2000
MAX_MARKERS = 3000
WIDTH, HEIGHT = 1100, 300
PAD_L, PAD_R, PAD_T, PAD_B = 80, 20, 16, 28
COLORS = {"equity": "#1f77b4", "bh": "#ff7f0e", "dd": "#d62728", "price": "#444444"}


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` of (x, y), keeping the first, last, and each bucket's min and max."""
    n = len(y)
    if n <= max_points:
        return np.asarray(x), np.asarray(y)
    buckets = max(max_points // 2, 1)
    size = math.ceil(n / buckets)
    padded = np.full(buckets * size, np.nan)
    padded[:n] = y
    grid = padded.reshape(buckets, size)
    valid = ~np.all(np.isnan(grid), axis=1)
    base = np.arange(buckets)[valid] * size
    lo = base + np.nanargmin(grid[valid], axis=1)
    hi = base + np.nanargmax(grid[valid], axis=1)
    idx = np.unique(np.concatenate(([0, n - 1], lo, hi)))
    return np.asarray(x)[idx], np.asarray(y)[idx]


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"


def _date(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%d %H:%M")


class _Frame:
    """Maps data coordinates to SVG pixels for one chart."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, pad_top: bool = True) -> None:
        if y1 <= y0:
            y0 = y0 - 1.0
        pad = (y1 - y0) * 0.04
        top = y1 + pad if pad_top else y1
        self.x0, self.x1, self.y0, self.y1 = x0, max(x1, x0 + 1), y0 - pad, top

    def px(self, x: np.ndarray) -> np.ndarray:
        return PAD_L + (np.asarray(x, dtype=float) - self.x0) / (self.x1 - self.x0) * (WIDTH - PAD_L - PAD_R)

    def py(self, y: np.ndarray) -> np.ndarray:
        return PAD_T + (self.y1 - np.asarray(y, dtype=float)) / (self.y1 - self.y0) * (HEIGHT - PAD_T - PAD_B)


def _points(frame: _Frame, x: np.ndarray, y: np.ndarray) -> str:
    xs, ys = downsample(x, y)
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(frame.px(xs), frame.py(ys), strict=True))


def _axes(frame: _Frame, unit: str) -> str:
    parts = [
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{WIDTH - PAD_L - PAD_R}" '
        f'height="{HEIGHT - PAD_T - PAD_B}" fill="#fbfbfd" stroke="#ccc"/>'
    ]
    for frac in np.linspace(0.0, 1.0, 5):
        v = frame.y0 + (frame.y1 - frame.y0) * frac
        y = float(frame.py(np.array([v]))[0])
        parts.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(_fmt(v))}{unit}</text>'
        )
    parts.append(f'<text x="{PAD_L}" y="{HEIGHT - 8}">{_date(frame.x0)}</text>')
    parts.append(f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 8}" text-anchor="end">{_date(frame.x1)}</text>')
    return "".join(parts)


def _svg(body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(label)}">{body}</svg>'
    )


def _line(frame: _Frame, x: np.ndarray, y: np.ndarray, color: str, width: float = 1.4) -> str:
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{_points(frame, x, y)}"/>'


def _equity_chart(ts: np.ndarray, equity: np.ndarray, bh: np.ndarray) -> str:
    lo = float(min(equity.min(), bh.min()))
    hi = float(max(equity.max(), bh.max()))
    f = _Frame(float(ts[0]), float(ts[-1]), lo, hi)
    return _svg(
        _axes(f, "") + _line(f, ts, bh, COLORS["bh"]) + _line(f, ts, equity, COLORS["equity"], 1.8),
        "equity against buy-and-hold",
    )


def _drawdown_chart(ts: np.ndarray, equity: np.ndarray) -> str:
    dd = -drawdown_series(equity) * 100.0
    f = _Frame(float(ts[0]), float(ts[-1]), float(dd.min()), 0.0, pad_top=False)
    xs, ys = downsample(ts, dd)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(f.px(xs), f.py(ys), strict=True))
    x_first, x_last = f.px(xs[[0, -1]])
    y_zero = float(f.py(np.array([0.0]))[0])
    area = (
        f'<polygon fill="{COLORS["dd"]}" fill-opacity="0.35" stroke="{COLORS["dd"]}" '
        f'points="{x_first:.1f},{y_zero:.1f} {pts} {x_last:.1f},{y_zero:.1f}"/>'
    )
    return _svg(_axes(f, "%") + area, "drawdown")


def _price_chart(candles: Candles, trades: np.ndarray) -> str:
    ts, close = candles.ts, np.asarray(candles.close, dtype=float)
    prices = [close]
    if len(trades):
        prices += [trades["entry_price"], trades["exit_price"]]
    lo = float(min(p.min() for p in prices))
    hi = float(max(p.max() for p in prices))
    f = _Frame(float(ts[0]), float(ts[-1]), lo, hi)
    body = [_axes(f, ""), _line(f, ts, close, COLORS["price"], 1.0)]
    shown = (
        trades
        if len(trades) <= MAX_MARKERS
        else trades[np.linspace(0, len(trades) - 1, MAX_MARKERS).astype(int)]
    )
    for key, color, sign in (("entry", "#2ca02c", 1), ("exit", "#d62728", -1)):
        xs = f.px(shown[f"{key}_ts"])
        ys = f.py(shown[f"{key}_price"])
        marks = "".join(
            f'<path d="M{x:.1f},{y:.1f}l-5,{6 * sign}h10z"/>' for x, y in zip(xs, ys, strict=True)
        )
        body.append(f'<g fill="{color}" class="{key}-markers">{marks}</g>')
    return _svg("".join(body), "price with trade markers")


def _table(metrics_table: Mapping[str, Mapping[str, float]]) -> str:
    cols = list(metrics_table)
    names = [k for k in METRIC_NAMES if any(k in metrics_table[c] for c in cols)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = "".join(
        f"<tr><td>{k}</td>"
        + "".join(f"<td>{_fmt(metrics_table[c].get(k, math.nan))}</td>" for c in cols)
        + "</tr>"
        for k in names
    )
    return (
        f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin:20px 0 4px}svg text{font-size:11px;fill:#555}
.legend span{display:inline-block;margin-right:16px}.legend i{display:inline-block;width:18px;height:4px;
margin-right:6px;vertical-align:middle}table.metrics{border-collapse:collapse;margin-top:8px}
table.metrics td,table.metrics th{border:1px solid #ddd;padding:3px 10px;text-align:right}
table.metrics td:first-child{text-align:left;font-family:monospace}"""


def render_report(
    result: BacktestResult,
    *,
    title: str,
    candles: Candles,
    bh_equity: np.ndarray | None = None,
    metrics_table: Mapping[str, Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The HTML report of ``result`` on ``candles`` (buy-and-hold defaults to the closes scaled to
    the starting equity; ``metrics_table`` maps a column name, e.g. a policy, to its metrics)."""
    n = len(candles)
    if len(result.equity) != n:
        raise ValueError(f"result has {len(result.equity)} candles, candles has {n}")
    ts = np.asarray(candles.ts)
    eq = np.asarray(result.equity, dtype=float)
    if bh_equity is None:
        close = np.asarray(candles.close, dtype=float)
        bh = eq[0] * close / close[0]
    else:
        bh = np.asarray(bh_equity, dtype=float)
        if len(bh) != n:
            raise ValueError(f"bh_equity has {len(bh)} values, candles has {n}")
    table = metrics_table if metrics_table is not None else {title: result.metrics}
    legend = (
        f'<div class="legend"><span><i style="background:{COLORS["equity"]}"></i>strategy</span>'
        f'<span><i style="background:{COLORS["bh"]}"></i>buy and hold</span></div>'
    )
    what = html.escape(f"{candles.symbol} {candles.timeframe}")
    span = f"{what}, {_date(ts[0])} – {_date(ts[-1])} UTC"
    note_html = "".join(f"<p>{html.escape(s)}</p>" for s in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{span}, {n} candles, {len(result.trades)} closed trades.</p>{note_html}"
        f"<h2>Equity</h2>{legend}{_equity_chart(ts, eq, bh)}"
        f"<h2>Drawdown</h2>{_drawdown_chart(ts, eq)}"
        f"<h2>Price and trades</h2>{_price_chart(candles, result.trades)}"
        f"<h2>Metrics</h2>{_table(table)}</body></html>\n"
    )
