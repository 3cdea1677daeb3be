"""``qtrain evaluate``: the walk-forward scoreboard, as a table, JSON or one HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from model.folds import DEFAULT_TEST_DAYS, DEFAULT_TRAIN_DAYS
from model.training import RECIPES
from producer.console import make_console
from producer.options import parse_date, parse_symbols
from worker.evaluation import scoreboard
from worker.settings import DEFAULT_TIMEFRAME, Settings, check_fee

ANALYST_HELP = "heuristic: in-process, no LLM; cached: analyses already in PostgreSQL, no Ollama call."
RECIPE_HELP = "Also score this recipe's table (repeatable); the default recipe is always scored."
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f", "#17becf")


@click.command()
@click.option("--symbols", required=True, help="Comma list, e.g. BTC-USDT,ETH-USDT.")
@click.option("--timeframe", default=DEFAULT_TIMEFRAME, show_default=True)
@click.option(
    "--train-days", default=DEFAULT_TRAIN_DAYS, show_default=True, type=int, help="Training span per fold."
)
@click.option(
    "--test-days", default=DEFAULT_TEST_DAYS, show_default=True, type=int, help="Test span per fold."
)
@click.option(
    "--since", default=None, help="First test range starts here (default: first quarter after training)."
)
@click.option("--until", default=None, help="Last test range ends here (exclusive).")
@click.option(
    "--analyst",
    type=click.Choice(scoreboard.ANALYSTS),
    default="heuristic",
    show_default=True,
    help=ANALYST_HELP,
)
@click.option("--model", default=None, help="With --analyst cached: only this model's analyses.")
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(sorted(RECIPES)), help=RECIPE_HELP)
@click.option("--random-seeds", default=50, show_default=True, type=int, help="Random policies per fold.")
@click.option("--fee", default=0.001, show_default=True, type=float, help="Fee per side in the backtests.")
@click.option("--json", "as_json", is_flag=True, help="Print the scoreboard as JSON.")
@click.option("--report", "report", default=None, type=click.Path(dir_okay=False), help="Write an HTML page.")
def evaluate(**kw: Any) -> None:
    """Walk-forward scoreboard: each fold trains on its past only and is tested on the next range;
    every policy (Q-table per recipe, rules, buy-and-hold, random median, flat) out of sample."""
    settings = Settings.from_env()
    req = scoreboard.EvaluateRequest(
        symbols=parse_symbols(kw["symbols"]), timeframe=kw["timeframe"], train_days=kw["train_days"],
        test_days=kw["test_days"], since=parse_date(kw["since"], flag="--since"),
        until=parse_date(kw["until"], flag="--until"), analyst=kw["analyst"],
        recipes=scoreboard.recipes_of(kw["recipes"]), random_seeds=kw["random_seeds"], fee=kw["fee"],
        model=kw["model"],
    )  # fmt: skip
    check_fee(req.fee)
    console = Console(stderr=True, quiet=kw["as_json"])
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("folds", total=None)

        def step(symbol: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"folds ({symbol})")

        board = scoreboard.evaluate(settings.database_url, req, progress=step)
    if kw["report"]:
        Path(kw["report"]).write_text(render_html(board), encoding="utf-8")
    if kw["as_json"]:
        click.echo(json.dumps(board.to_json(), sort_keys=True))
        return
    print_summary(board)
    if kw["report"]:
        click.echo(f"report: {kw['report']}")


def _num(v: Any, fmt: str = "{:+.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def print_summary(board: scoreboard.Scoreboard) -> None:
    """The summary table: per policy, median out-of-sample Sharpe and fold counts."""
    n = len(board.folds)
    table = Table(
        title=f"walk-forward scoreboard: {n} folds, out of sample ({board.params['analyst']} analyst)"
    )
    for col in ("policy", "median Sharpe", "> random median", "> buy-and-hold", "trades/fold"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, s in board.summary.items():
        n = s["folds"]
        table.add_row(name, _num(s["median_sharpe"]), f"{s['beats_random_median']}/{n}",
                      f"{s['beats_buy_and_hold']}/{n}", _num(s["trades_per_fold"], "{:.0f}"))  # fmt: skip
    console = make_console()
    console.print(table)
    for note in board.notes:
        console.print(note)


def _sharpe_chart(board: scoreboard.Scoreboard) -> str:
    """Per-fold out-of-sample Sharpe of each policy: one polyline per policy over the folds."""
    names = list(board.summary)
    values = [[f["policies"].get(p, {}).get("sharpe") for f in board.folds] for p in names]
    flat = [v for row in values for v in row if v is not None]
    if not flat:
        return "<p>no Sharpe values</p>"
    lo, hi = min(min(flat), 0.0), max(max(flat), 0.0)
    w, h, pad = 1100, 320, 40
    n = max(len(board.folds) - 1, 1)

    def xy(i: int, v: float) -> str:
        return (
            f"{pad + i * (w - 2 * pad) / n:.1f},{h - pad - (v - lo) / ((hi - lo) or 1) * (h - 2 * pad):.1f}"
        )

    zero = xy(0, 0.0).split(",")[1]
    parts = [f'<line x1="{pad}" x2="{w - pad}" y1="{zero}" y2="{zero}" stroke="#999" stroke-dasharray="4"/>']
    for k, (name, row) in enumerate(zip(names, values, strict=True)):
        color = COLORS[k % len(COLORS)]
        pts = " ".join(xy(i, v) for i, v in enumerate(row) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{pts}"/>')
        parts.append(
            f'<text x="{pad + 10 + 150 * k}" y="16" fill="{color}" font-size="13">{html.escape(name)}</text>'
        )
    for i, f in enumerate(board.folds):  # where each symbol's folds start, with the first test date
        if i == 0 or f["symbol"] != board.folds[i - 1]["symbol"]:
            x = xy(i, lo).split(",")[0]
            parts.append(f'<line x1="{x}" x2="{x}" y1="{pad}" y2="{h - pad}" stroke="#ccc"/>')
            label = f"{f['symbol']} from {f['test_since'][:10]}"
            parts.append(f'<text x="{x}" y="{h - pad + 16}" font-size="11">{html.escape(label)}</text>')
    parts.append(f'<text x="4" y="{pad}" font-size="11">{hi:.1f}</text>')
    parts.append(f'<text x="4" y="{h - pad}" font-size="11">{lo:.1f}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">{"".join(parts)}</svg>'
    )


def render_html(board: scoreboard.Scoreboard) -> str:
    """One self-contained page: the per-fold Sharpe chart and the summary table (no scripts)."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_num(s['median_sharpe'])}</td>"
        f"<td>{s['beats_random_median']}/{s['folds']}</td><td>{s['beats_buy_and_hold']}/{s['folds']}</td>"
        f"<td>{_num(s['trades_per_fold'], '{:.0f}')}</td></tr>"
        for name, s in board.summary.items()
    )
    folds = "".join(
        f"<tr><td>{html.escape(f['symbol'])}</td><td>{f['test_since'][:10]}</td><td>{f['test_until'][:10]}</td>"
        + "".join(f"<td>{_num(f['policies'].get(p, {}).get('sharpe'))}</td>" for p in board.summary)
        + "</tr>"
        for f in board.folds
    )
    heads = "".join(f"<th>{html.escape(p)}</th>" for p in board.summary)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in board.notes)
    params = html.escape(json.dumps(board.params, sort_keys=True))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>qtrain walk-forward scoreboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>Walk-forward scoreboard ({len(board.folds)} folds, out of sample)</h1><p>{params}</p>"
        f"<h2>Sharpe per fold</h2>{_sharpe_chart(board)}"
        "<h2>Summary</h2><table><tr><th>policy</th><th>median Sharpe</th>"
        f"<th>&gt; random median</th><th>&gt; buy-and-hold</th><th>trades/fold</th></tr>{rows}</table>{notes}"
        "<h2>Folds</h2><table><tr><th>symbol</th><th>test since</th><th>until</th>"
        f"{heads}</tr>{folds}</table>"
        "</body></html>"
    )


COMMANDS = [evaluate]
