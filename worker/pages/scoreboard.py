"""The ``qtrain evaluate --report`` page: the walk-forward scoreboard drawn with Bokeh (why Bokeh:
``worker.pages.page``).

Sections: the parameters as a table (data range, folds, recipes and their values, fee, baselines,
seeds), each policy's Sharpe per fold as grouped bars, a fold picker with that fold's equity
curves against buy-and-hold, the summary table and the per-fold table. Every policy present in
the scoreboard is drawn (Q-tables of each recipe, unshaped twins, rules, the baselines): nothing
here lists policy names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, CustomJS, FactorRange, HoverTool, Select, Span
from bokeh.plotting import figure
from bokeh.transform import dodge

from model.evaluation.scoreboard import RANDOM_P_TRADE, policy_name
from model.learning.training import RECIPES, recipe_metadata
from worker.pages.report import PALETTE, Section, Table, page, time_figure, when

BH = "buy_and_hold"
PICK_JS = """
const f = folds[Number(cb_obj.value)];
shown.data = Object.assign({}, f.data);
fig.title.text = "Equity in fold: " + cb_obj.options.find((o) => o[0] === cb_obj.value)[1];
"""
"""The fold picker: copy the chosen fold's columns into the plotted source."""


def _label(f: Mapping[str, Any]) -> str:
    return f"{f['symbol']} {f['test_since'][:10]}"


def _num(v: Any, spec: str = "{:+.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)


def policy_names(board: Any) -> list[str]:
    """Every policy of the scoreboard, in the summary's order, then any only the folds name."""
    names = list(board.summary)
    for f in board.folds:
        names.extend(p for p in f["policies"] if p not in names)
    return names


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per policy; buy-and-hold keeps orange, as in the backtest report."""
    rest = [c for c in PALETTE if c != PALETTE[1]]
    out = {n: rest[k % len(rest)] for k, n in enumerate(n for n in names if n != BH)}
    out[BH] = PALETTE[1]
    return out


def sharpe_chart(board: Any, names: Sequence[str], colors: Mapping[str, str]) -> Any:
    """Per fold, a bar per policy of its out-of-sample Sharpe; hover: fold, policy, Sharpe, return,
    trades; click a legend entry to hide that policy."""
    labels = [_label(f) for f in board.folds]
    p = figure(
        x_range=FactorRange(*labels),
        height=380,
        sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,reset,save",
        title="Out-of-sample Sharpe per fold and policy",
        name="sharpe",
        toolbar_location="right",
    )
    width = 0.84 / max(len(names), 1)
    for k, name in enumerate(names):
        cells = [f["policies"].get(name, {}) for f in board.folds]
        src = ColumnDataSource(
            {
                "fold": labels,
                "policy": [name] * len(labels),
                "sharpe": [np.nan if c.get("sharpe") is None else float(c["sharpe"]) for c in cells],
                "ret": [_num(c.get("total_return_pct"), "{:+.2f}%") for c in cells],
                "trades": [_num(c.get("n_trades"), "{:.0f}") for c in cells],
            }
        )
        offset = -0.42 + width * (k + 0.5)
        p.vbar(
            x=dodge("fold", offset, range=p.x_range),
            top="sharpe",
            width=width * 0.92,
            source=src,
            color=colors[name],
            legend_label=name,
        )
    p.add_tools(
        HoverTool(
            tooltips=[
                ("fold", "@fold"),
                ("policy", "@policy"),
                ("Sharpe", "@sharpe{+0.00}"),
                ("return", "@ret"),
                ("closed trades", "@trades"),
            ]
        )
    )
    p.add_layout(Span(location=0, dimension="width", line_color="#888", line_dash="dashed"))
    p.xaxis.major_label_orientation = 0.8 if len(labels) > 6 else 0.0
    p.xgrid.grid_line_color = None
    p.legend.click_policy = "hide"
    p.legend.label_text_font_size = "12px"
    p.add_layout(p.legend[0], "right")
    return p


def _fold_data(f: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    eq = f.get("equity") or {"ts": [], "policies": {}}
    n = len(eq["ts"])
    data: dict[str, Any] = {"t": when(np.asarray(eq["ts"], dtype=np.int64))}
    for name in names:
        curve = eq["policies"].get(name)
        pct = None if curve is None else (np.asarray(curve, dtype=float) - 1.0) * 100.0
        data[name] = np.full(n, np.nan) if pct is None else pct
    return data


def equity_picker(board: Any, names: Sequence[str], colors: Mapping[str, str]) -> Any:
    """A fold picker over one chart: the chosen fold's equity curve of each policy (return since the
    fold's first test candle, %) against buy-and-hold (thick orange)."""
    curves = [n for n in names if any(n in (f.get("equity") or {}).get("policies", {}) for f in board.folds)]
    folds = [ColumnDataSource(_fold_data(f, curves)) for f in board.folds]
    shown = ColumnDataSource(dict(folds[0].data), name="fold_shown")
    labels = [f"{_label(f)} – {f['test_until'][:10]}" for f in board.folds]
    fig = time_figure(f"Equity in fold: {labels[0]}", 360, name="fold_figure")
    for name in curves:
        bh = name == BH
        fig.line(
            "t",
            name,
            source=shown,
            color=colors[name],
            line_width=3.2 if bh else 1.7,
            legend_label=name,
            alpha=0.95,
        )
    tips = [("time", "@t{%F %H:%M} UTC"), *((n, f"@{{{n}}}{{+0.00}}%") for n in curves)]
    fig.add_tools(
        HoverTool(tooltips=tips, formatters={"@t": "datetime"}, mode="vline", renderers=fig.renderers[:1])
    )
    fig.yaxis.axis_label = "return since the fold's start, %"
    fig.add_layout(Span(location=0, dimension="width", line_color="#888", line_dash="dashed"))
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "12px"
    fig.add_layout(fig.legend[0], "right")
    options = [(str(i), s) for i, s in enumerate(labels)]
    select = Select(title="Fold", value="0", options=options, width=360, name="fold_picker")
    select.js_on_change("value", CustomJS(args={"folds": folds, "shown": shown, "fig": fig}, code=PICK_JS))
    return column(select, fig, sizing_mode="stretch_width", name="equity")


def parameters_table(board: Any) -> Table:
    """What was run, readable: data per symbol, folds, analyst, each recipe's values, costs, seeds."""
    prm = dict(board.params)
    rows: list[Sequence[str] | str] = ["data"]
    by_symbol: dict[str, list[Mapping[str, Any]]] = {}
    for f in board.folds:
        by_symbol.setdefault(f["symbol"], []).append(f)
    for sym, fs in by_symbol.items():
        rows.append(
            [
                sym,
                f"trains from {fs[0]['train_since'][:10]}; tested {fs[0]['test_since'][:10]} – "
                f"{fs[-1]['test_until'][:10]} in {len(fs)} folds",
            ]
        )
    rows.append(["timeframe", str(prm.pop("timeframe", "?"))])
    rows.append("folds")
    rows.append(["train days", f"{prm.pop('train_days', '?')} (each fold trains on its past only)"])
    rows.append(["test days", f"{prm.pop('test_days', '?')} (back to back, out of sample)"])
    rows.append("analyst")
    analyst = str(prm.pop("analyst", "?"))
    model = prm.pop("model", None)
    rows.append(["analyst", analyst + (f" (model {model})" if model else "")])
    rows.append(["windows", f"{prm.pop('window', '?')} candles, stride {prm.pop('stride', '?')}"])
    pools = prm.pop("pooled", {})
    for recipe in prm.pop("recipes", []):
        rows.append(f"recipe {recipe} (policy {policy_name(recipe)})")
        values = recipe_metadata(recipe)["params"] if recipe in RECIPES else {}
        rows.extend([k, str(v)] for k, v in values.items())
        if recipe in pools:  # a pooled recipe: which symbols each fold date's tables learned from
            p = pools[recipe]
            what = "each symbol alone (--pool none)" if p.get("alone") else ", ".join(p["symbols"])
            if p.get("stored"):
                what += f" ({', '.join(p['stored'])} from the store: training candles only, not scored)"
            rows.append(["pooled", f"{what} on each of {p['fold_dates']} fold dates"])
    rows.append("costs and baselines")
    fee = prm.pop("fee", None)
    rows.append(["fee", "?" if fee is None else f"{fee:g} per side ({fee * 100:g}%)"])
    n_random, seed = prm.pop("random_seeds", None), prm.pop("seed", 0)
    if n_random is not None:
        seeds = f"seeds {seed}–{seed + n_random - 1}"
        what = (
            f"median of {n_random} random policies, {seeds}, trade probability {RANDOM_P_TRADE:g} per candle"
        )
        rows.append(["random baseline", what])
    rows.append(["seed", f"{seed} (recipes that draw at random, first random policy)"])
    if prm:
        rows.append("other")
        rows.extend([k, str(v)] for k, v in sorted(prm.items()))
    return Table(head=None, rows=rows, name="params", text_cols=2)


def summary_table(board: Any) -> Table:
    """Per policy: median Sharpe, folds above the random median and above buy-and-hold, trades."""
    rows = [
        [
            name,
            _num(s.get("median_sharpe")),
            f"{s.get('beats_random_median')}/{s.get('folds')}",
            f"{s.get('beats_buy_and_hold')}/{s.get('folds')}",
            _num(s.get("trades_per_fold"), "{:.0f}"),
        ]
        for name, s in board.summary.items()
    ]
    head = ["policy", "median Sharpe", "> random median", "> buy-and-hold", "trades/fold"]
    return Table(head=head, rows=rows, name="summary")


def ablation_table(board: Any) -> Table | None:
    """Per shaped table: the folds its Sharpe was above / below / equal to its unshaped twin's and
    each negative control's, with the median margin; None when the board has no ablation."""
    ablation = getattr(board, "ablation", None) or {}
    rows: list[list[str]] = []
    for name, a in ablation.items():
        versus = [(a["unshaped"], a)] + [(v["policy"], v) for v in a.get("controls", {}).values()]
        for other, v in versus:
            counts = [f"{v['helped']}/{v['folds']}", str(v["hurt"]), str(v["tied"])]
            rows.append([name, other, *counts, _num(v.get("median_sharpe_margin"))])
    if not rows:
        return None
    head = ["table", "against", "helped", "hurt", "tied", "median margin"]
    return Table(head=head, rows=rows, name="ablation", text_cols=2)


def folds_table(board: Any, names: Sequence[str]) -> Table:
    """A row per fold: its test range and each policy's Sharpe."""
    rows = [
        [
            f["symbol"],
            f["test_since"][:10],
            f["test_until"][:10],
            *(_num(f["policies"].get(p, {}).get("sharpe")) for p in names),
        ]
        for f in board.folds
    ]
    return Table(
        head=["symbol", "test since", "until", *names],
        rows=rows,
        name="folds",
        text_cols=3,
        first_class="text",
    )


def render_scoreboard(board: Any) -> str:
    """The whole page of ``board`` (a ``worker.evaluation.scoreboard.Scoreboard``)."""
    if not board.folds:
        raise ValueError("the scoreboard has no folds to draw")
    names = policy_names(board)
    colors = _colors(names)
    n = len(board.folds)
    title = f"Walk-forward scoreboard: {n} folds, out of sample ({board.params.get('analyst', '?')} analyst)"
    intro = ["Every fold trains on its past only and is tested on the next range; each policy starts flat."]
    roots = [sharpe_chart(board, names, colors)]
    hide = "Hover a bar for its numbers; click a legend entry to hide a policy."
    sections = [
        Section("Summary", table=summary_table(board), notes=list(board.notes)),
        Section("Sharpe per fold", root="sharpe", notes=[hide]),
    ]
    versus = ablation_table(board)
    if versus is not None:
        why = (
            "Shaped table against the same recipe without analyses (unshaped) and on the negative"
            " controls (shuffled: the same answers on the wrong windows; constant: the most common"
            " answer everywhere)."
        )
        sections.insert(1, Section("What the analyses add", table=versus, notes=[why]))
    if any(f.get("equity") for f in board.folds):
        roots.append(equity_picker(board, names, colors))
        pick = "Pick a fold. random has no curve: it is the median of metrics over seeded random policies."
        sections.append(Section("Equity in one fold", root="equity", notes=[pick]))
    else:
        sections.append(Section("Equity in one fold", notes=["This scoreboard has no per-fold equity."]))
    sections += [
        Section("Parameters", table=parameters_table(board)),
        Section("Folds", table=folds_table(board, names)),
    ]
    return page(title, intro, sections, roots)
