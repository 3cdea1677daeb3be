"""The backtest and paper-account HTML reports (``qtrain backtest --report``, ``qtrain paper
report``): equity against buy-and-hold, the drawdown under it and the price with the trades, on
one time axis, then the metrics (and a paper account's decisions). Drawn with Bokeh in the page
of ``worker.pages.page`` (why Bokeh: there). Long series are cut to about ``MAX_POINTS``
points per line, keeping each bucket's minimum and maximum so spikes and drawdown troughs survive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from bokeh.layouts import column
from bokeh.models import (
    BoxAnnotation,
    ColumnDataSource,
    HoverTool,
    Label,
    Model,
    NumeralTickFormatter,
    PrintfTickFormatter,
)

from model.candles import Candles, minute_utc, timeframe_seconds
from model.evaluation.backtest import TRADE_DTYPE, BacktestResult
from model.evaluation.metrics import METRIC_NAMES, compute_metrics, drawdown_series
from worker.pages.page import PALETTE, Section, Table, fmt, page, time_figure, when

MAX_POINTS = 4000
MAX_MARKERS = 3000
MAX_DECISIONS = 500
COLORS = {
    "equity": PALETTE[0],
    "bh": PALETTE[1],
    "dd": PALETTE[3],
    "price": "#444444",
    "buy": PALETTE[2],
    "sell": PALETTE[3],
}
BANDS = ("#9467bd", "#17becf", "#bcbd22", "#8c564b", "#e377c2")
"""Background colours of the paper report's version bands (none of the lines' colours)."""
ACTIONS = ("HOLD", "BUY", "SELL")


def keep_indices(*series: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices to draw of equally long ``series``: all of them when short, else the first, the last,
    and each of ~``max_points / 2`` buckets' minimum and maximum of every series."""
    n = len(series[0])
    if n <= max_points:
        return np.arange(n)
    buckets = max(max_points // 2, 1)
    size = math.ceil(n / buckets)
    keep = [np.array([0, n - 1])]
    for y in series:
        padded = np.full(buckets * size, np.nan)
        padded[:n] = y
        grid = padded.reshape(buckets, size)
        valid = ~np.all(np.isnan(grid), axis=1)
        base = np.arange(buckets)[valid] * size
        keep += [base + np.nanargmin(grid[valid], axis=1), base + np.nanargmax(grid[valid], axis=1)]
    return np.unique(np.concatenate(keep))


def metrics_rows(metrics_table: Mapping[str, Mapping[str, Any]]) -> Table:
    """A metric per row, a column per policy (in ``METRIC_NAMES`` order, those any policy has)."""
    cols = list(metrics_table)
    names = [k for k in METRIC_NAMES if any(k in metrics_table[c] for c in cols)]
    rows = [[k, *(fmt(metrics_table[c].get(k)) for c in cols)] for k in names]
    return Table(head=["metric", *cols], rows=rows)


def _version_at(decisions: Sequence[Mapping[str, Any]], ts: np.ndarray) -> np.ndarray:
    """The version of the last decision at or before each of ``ts`` ("" before the first)."""
    d_ts = np.array([int(d["ts"]) for d in decisions], dtype=np.int64)
    names = np.array([""] + [f"v{d['version']}" for d in decisions], dtype=object)
    return names[np.searchsorted(d_ts, np.asarray(ts, dtype=np.int64), side="right")]


def _version_bands(figs: Sequence[Any], decisions: Sequence[Mapping[str, Any]], end_ts: int) -> None:
    """A shaded band per run of decisions by one version, on every figure, labelled on the first."""
    runs: list[tuple[int, Any]] = []  # (first candle, version)
    for d in decisions:
        if not runs or runs[-1][1] != d["version"]:
            runs.append((int(d["ts"]), d["version"]))
    stops = [start for start, _ in runs[1:]] + [end_ts]
    for k, ((start, version), stop) in enumerate(zip(runs, stops, strict=True)):
        color = BANDS[k % len(BANDS)]
        for p in figs:
            p.add_layout(
                BoxAnnotation(left=start * 1000, right=stop * 1000, fill_color=color, fill_alpha=0.07)
            )
        figs[0].add_layout(
            Label(
                x=start * 1000,
                y=4,
                y_units="screen",
                text=f"v{version}",
                text_color=color,
                text_font_size="12px",
                x_offset=4,
            )
        )


def _trade_markers(p: Any, trades: np.ndarray, result: BacktestResult, versions: Any) -> None:
    """Entries (green up) and exits (red down) on the price, hover: time, side, price, the trade's P&L."""
    shown = trades
    if len(trades) > MAX_MARKERS:
        shown = trades[np.linspace(0, len(trades) - 1, MAX_MARKERS).astype(int)]
    pnl = [f"{t['pnl']:+,.2f} ({t['return_pct']:+.2f}%)" for t in shown]
    legs = {
        "buy": (list(shown["entry_ts"]), list(shown["entry_price"]), list(pnl), "triangle"),
        "sell": (list(shown["exit_ts"]), list(shown["exit_price"]), list(pnl), "inverted_triangle"),
    }
    if result.open_trade is not None:
        o = result.open_trade
        legs["buy"][0].append(o.entry_ts)
        legs["buy"][1].append(o.entry_price)
        legs["buy"][2].append("open at the end")
    for side, (ts, price, text, marker) in legs.items():
        ts_arr = np.asarray(ts, dtype=np.int64)
        data: dict[str, Any] = {
            "t": when(ts_arr),
            "when": [minute_utc(int(x)) for x in ts_arr],
            "price": np.asarray(price, float),
            "side": [side] * len(ts_arr),
            "pnl": text,
        }
        tips = [("", "@side"), ("time", "@when UTC"), ("price", "@price{0,0.00}"), ("trade P&L", "@pnl")]
        if versions is not None:
            data["version"] = list(versions(ts_arr))
            tips.append(("version", "@version"))
        r = p.scatter(
            "t",
            "price",
            source=ColumnDataSource(data),
            marker=marker,
            size=9,
            color=COLORS[side],
            line_color="white",
            legend_label=f"{side}s",
        )
        p.add_tools(HoverTool(renderers=[r], tooltips=tips))


def backtest_charts(
    result: BacktestResult,
    candles: Candles,
    bh: np.ndarray,
    decisions: Sequence[Mapping[str, Any]] | None = None,
) -> Model:
    """Equity against buy-and-hold, the drawdown under it and the price with the trades, on one
    shared time axis (pan or zoom one, all follow); with ``decisions``, the versions as bands."""
    ts = np.asarray(candles.ts, dtype=np.int64)
    eq = np.asarray(result.equity, dtype=float)
    close = np.asarray(candles.close, dtype=float)
    dd = -drawdown_series(eq) * 100.0
    idx = keep_indices(eq, bh, dd, close)
    data: dict[str, Any] = {
        "t": when(ts[idx]),
        "equity": eq[idx],
        "bh": bh[idx],
        "dd": dd[idx],
        "close": close[idx],
    }
    tips = [
        ("time", "@t{%F %H:%M} UTC"),
        ("strategy", "@equity{0,0.00}"),
        ("buy and hold", "@bh{0,0.00}"),
        ("drawdown", "@dd{0.00}%"),
    ]
    versions = None
    if decisions:
        versions = partial(_version_at, decisions)
        data["version"] = list(versions(ts[idx]))
        tips.append(("version", "@version"))
    src = ColumnDataSource(data)
    eqf = time_figure("Equity against buy-and-hold", 320)
    eqf.line("t", "bh", source=src, color=COLORS["bh"], line_width=1.6, legend_label="buy and hold")
    line = eqf.line("t", "equity", source=src, color=COLORS["equity"], line_width=2, legend_label="strategy")
    eqf.add_tools(HoverTool(renderers=[line], tooltips=tips, formatters={"@t": "datetime"}, mode="vline"))
    eqf.yaxis.formatter = NumeralTickFormatter(format="0,0")
    eqf.legend.location = "top_left"
    ddf = time_figure("Drawdown", 170, x_range=eqf.x_range)
    ddf.varea("t", y1=0.0, y2="dd", source=src, fill_color=COLORS["dd"], fill_alpha=0.35)
    ddf.line("t", "dd", source=src, color=COLORS["dd"], line_width=1)
    ddf.yaxis.formatter = PrintfTickFormatter(format="%.0f%%")
    pf = time_figure("Price and trades (hover a marker)", 320, x_range=eqf.x_range)
    pf.line("t", "close", source=src, color=COLORS["price"], line_width=1, legend_label="close")
    pf.yaxis.formatter = NumeralTickFormatter(format="0,0.[00]")
    _trade_markers(pf, result.trades, result, versions)
    pf.legend.location = "top_left"
    figs = [eqf, ddf, pf]
    if decisions:
        _version_bands(figs, decisions, int(ts[-1]))
    return column(*figs, sizing_mode="stretch_width", name="charts")


def decisions_table(decisions: Sequence[Mapping[str, Any]], limit: int = MAX_DECISIONS) -> Table:
    """The newest ``limit`` decisions, newest first: candle, version, action, scores, what was missing."""
    rows = []
    for d in reversed(decisions[-limit:]):
        comps = ", ".join(f"{k} {v:+.2f}" for k, v in (d.get("components") or {}).items())
        score = "" if d.get("score") is None else f"{d['score']:+.3f}"
        rows.append(
            [
                minute_utc(int(d["ts"])),
                f"v{d['version']}",
                ACTIONS[int(d["action"])],
                f"{d['confidence']:.2f}",
                score,
                comps,
                ", ".join(d.get("missing") or []),
                str(d.get("source") or ""),
                f"{d['equity']:,.2f}",
            ]
        )
    head = [
        "candle (UTC)",
        "version",
        "action",
        "confidence",
        "score",
        "components",
        "missing",
        "source",
        "equity",
    ]
    return Table(head=head, rows=rows, name="decisions", text_cols=3, first_class="text")


def render_report(
    result: BacktestResult,
    *,
    title: str,
    candles: Candles,
    bh_equity: np.ndarray | None = None,
    metrics_table: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
    decisions: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The HTML report of ``result`` on ``candles`` (buy-and-hold defaults to the closes scaled to
    the starting equity; ``metrics_table`` maps a column name, e.g. a policy, to its metrics;
    ``decisions``, a paper account's oldest first, add the versions and the decisions table)."""
    n = len(candles)
    if len(result.equity) != n:
        raise ValueError(f"result has {len(result.equity)} candles, candles has {n}")
    if n < 1:
        raise ValueError("a report needs at least one candle")
    eq = np.asarray(result.equity, dtype=float)
    if bh_equity is None:
        close = np.asarray(candles.close, dtype=float)
        bh = eq[0] * close / close[0]
    else:
        bh = np.asarray(bh_equity, dtype=float)
        if len(bh) != n:
            raise ValueError(f"bh_equity has {len(bh)} values, candles has {n}")
    table = metrics_table if metrics_table is not None else {title: result.metrics}
    span = (
        f"{candles.symbol} {candles.timeframe}, {minute_utc(int(candles.ts[0]))} – "
        f"{minute_utc(int(candles.ts[-1]))} UTC, {n} candles, {len(result.trades)} closed trades."
    )
    sections = [
        Section(
            "Equity, drawdown, price and trades",
            root="charts",
            notes=["Drag to pan, wheel to zoom the time axis (the three charts move together)."],
        ),
        Section("Metrics", table=metrics_rows(table)),
    ]
    if decisions:
        shown = min(MAX_DECISIONS, len(decisions))
        sections.append(
            Section(
                f"Decisions (last {shown})",
                table=decisions_table(decisions),
                notes=["Newest first; the version column is the Q-table version that decided."],
            )
        )
    return page(title, [span, *notes], sections, [backtest_charts(result, candles, bh, decisions)])


def comparison_page(c: Any) -> str:
    """The ``qtrain backtest --report`` page of ``c`` (a ``worker.evaluation.backtest.Comparison``)."""
    promoted = "promoted" if c.params.get("promoted") else "not promoted"
    metrics = {k: {m: math.nan if v is None else v for m, v in ms.items()} for k, ms in c.metrics().items()}
    return render_report(
        c.results["qtable"],
        title=f"qtrain backtest: {c.symbol} Q-table v{c.version} ({promoted})",
        candles=c.candles,
        bh_equity=c.results["buy_and_hold"].equity,
        metrics_table=metrics,
        notes=c.notes,
    )


def paper_result(h: Mapping[str, Any], candles: Candles, fee: float) -> tuple[BacktestResult, np.ndarray]:
    """A paper record (``worker.trading.paper.history``) as a ``BacktestResult`` on ``candles`` (equity
    per decided candle) and buy-and-hold bought, fee paid, at the second candle's open."""
    ts = candles.ts
    eq_by_ts = {int(d["ts"]): float(d["equity"]) for d in h["decisions"]}
    equity = np.array([eq_by_ts.get(int(t), np.nan) for t in ts], dtype=np.float64)
    equity = np.where(np.isnan(equity), h["capital"], equity)
    fills = h["fills"]
    buys = [f for f in fills if f["side"] == "buy"]
    sells = [f for f in fills if f["side"] == "sell"]
    trades = np.zeros(len(sells), dtype=TRADE_DTYPE)
    for k, (b, s) in enumerate(zip(buys, sells, strict=False)):
        pnl = float(s["qty"]) * (float(s["price"]) - float(b["price"])) - float(b["fee"]) - float(s["fee"])
        ret = pnl / (float(b["qty"]) * float(b["price"])) * 100.0
        fees = float(b["fee"]) + float(s["fee"])
        trades[k] = (
            0,
            0,
            int(b["ts"]),
            int(s["ts"]),
            float(b["price"]),
            float(s["price"]),
            float(b["qty"]),
            pnl,
            ret,
            fees,
        )
    pos_by_ts = {int(d["ts"]): int(d["position"]) for d in h["decisions"]}
    held = np.array([pos_by_ts.get(int(t), 0) for t in ts], dtype=np.int8)
    prev = np.concatenate(([h["capital"]], equity[:-1]))
    metrics = compute_metrics(
        equity,
        ts,
        trades,
        closes=np.asarray(candles.close),
        position=held.astype(bool),
        fees_paid=float(sum(float(f["fee"]) for f in fills)),
        timeframe_seconds=timeframe_seconds(candles.timeframe),
    )
    result = BacktestResult(equity, equity / prev - 1.0, held, trades, None, 0.0, metrics)
    opens = np.asarray(candles.open)
    bh = h["capital"] / ((1.0 + fee) * opens[1]) * np.asarray(candles.close) if len(ts) > 1 else equity.copy()
    if len(ts) > 1:
        bh[0] = h["capital"]
    return result, bh


def paper_page(h: Mapping[str, Any], candles: Candles, *, name: str, symbol: str, fee: float) -> str:
    """The ``qtrain paper report`` page of account ``name``'s ``symbol``: its record drawn as a
    backtest, with the versions that decided as bands and the decisions table."""
    result, bh = paper_result(h, candles, fee)
    versions = sorted({int(d["version"]) for d in h["decisions"]})
    notes = [
        f"paper only: no real order was placed; versions used: {', '.join(f'v{v}' for v in versions)}",
        f"{len(h['fills'])} fills, fee {fee:g}/side",
    ]
    return render_report(
        result,
        title=f"qtrain paper: {name} {symbol}",
        candles=candles,
        bh_equity=bh,
        metrics_table={"paper": result.metrics},
        decisions=h["decisions"],
        notes=notes,
    )
