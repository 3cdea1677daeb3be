"""``qtrain evaluate``: the walk-forward scoreboard, as a table, JSON or one HTML page."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from model.analyst.prompt import prompt_version
from model.evaluation.folds import DEFAULT_TEST_DAYS, DEFAULT_TRAIN_DAYS
from model.learning.training import RECIPES
from producer.console import make_console
from producer.options import output_path, parse_range, parse_symbols
from producer.pool_option import POOL_HELP, parse_pool
from worker.errors import BadInput
from worker.evaluation import scoreboard
from worker.settings import DEFAULT_TIMEFRAME, Settings, check_fee

#: Upper bounds: a fold's span (100 years of days) and random policies per fold (each a backtest).
MAX_DAYS = 36_500
MAX_RANDOM_SEEDS = 10_000
ANALYST_HELP = "heuristic: in-process, no LLM; cached: analyses already in PostgreSQL, no Ollama call."
RECIPE_HELP = "Also score this recipe's table (repeatable); the default recipe is always scored."


@click.command()
@click.option("--symbols", required=True, help="Comma list, e.g. BTC-USDT,ETH-USDT.")
@click.option("--timeframe", default=DEFAULT_TIMEFRAME, show_default=True)
@click.option(
    "--train-days",
    default=DEFAULT_TRAIN_DAYS,
    show_default=True,
    type=click.IntRange(max=MAX_DAYS),
    help="Training span per fold.",
)
@click.option(
    "--test-days",
    default=DEFAULT_TEST_DAYS,
    show_default=True,
    type=click.IntRange(max=MAX_DAYS),
    help="Test span per fold.",
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
@click.option(
    "--model",
    default=None,
    help="With --analyst cached: only this model's analyses (always only those of QTRAIN_PROMPT's style).",
)
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(sorted(RECIPES)), help=RECIPE_HELP)
@click.option("--pool", default=None, metavar="SYMBOLS|none", help=POOL_HELP)
@click.option(
    "--random-seeds",
    default=50,
    show_default=True,
    type=click.IntRange(max=MAX_RANDOM_SEEDS),
    help="Random policies per fold.",
)
@click.option("--fee", default=0.001, show_default=True, type=float, help="Fee per side in the backtests.")
@click.option("--json", "as_json", is_flag=True, help="Print the scoreboard as JSON.")
@click.option("--report", "report", default=None, type=click.Path(dir_okay=False), help="Write an HTML page.")
def evaluate(**kw: Any) -> None:
    """Walk-forward scoreboard: each fold trains on its past only and is tested on the next range;
    every policy (Q-table per recipe, rules, buy-and-hold, random median, flat) out of sample."""
    settings = Settings.from_env()
    since, until = parse_range(kw["since"], kw["until"])
    report = output_path(kw["report"], flag="--report") if kw["report"] else None
    req = scoreboard.EvaluateRequest(
        symbols=parse_symbols(kw["symbols"]),
        timeframe=kw["timeframe"],
        train_days=kw["train_days"],
        test_days=kw["test_days"],
        since=since,
        until=until,
        analyst=kw["analyst"],
        recipes=scoreboard.recipes_of(kw["recipes"]),
        random_seeds=kw["random_seeds"],
        fee=kw["fee"],
        model=kw["model"],
        pool=parse_pool(kw["pool"]),
        prompt_version=prompt_version(settings.prompt_style) if kw["analyst"] == "cached" else None,
    )
    check_fee(req.fee)
    console = make_console(stderr=True, quiet=kw["as_json"])
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("folds", total=None)

        def step(symbol: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"folds ({symbol})")

        board = scoreboard.evaluate(settings.database_url, req, progress=step)
    if report is not None:
        from worker.pages.scoreboard import render_scoreboard  # Bokeh: imported only for --report

        try:
            report.write_text(render_scoreboard(board), encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--report {kw['report']}: cannot write ({exc.strerror})") from None
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
        table.add_row(
            name,
            _num(s["median_sharpe"]),
            f"{s['beats_random_median']}/{n}",
            f"{s['beats_buy_and_hold']}/{n}",
            _num(s["trades_per_fold"], "{:.0f}"),
        )
    console = make_console()
    console.print(table)
    versus = ablation_table(board)
    if versus is not None:
        console.print(versus)
    for note in board.notes:
        console.print(note)


def ablation_table(board: scoreboard.Scoreboard) -> Table | None:
    """Per shaped table: the folds it helped / hurt / tied against its unshaped twin and each
    negative control, with the median Sharpe margin; None when the board has no ablation."""
    if not board.ablation:
        return None
    table = Table(title="what the analyses add: the shaped table against each (Sharpe per fold)")
    for col in ("table", "against", "helped", "hurt", "tied", "median margin"):
        table.add_column(col, justify="left" if col in ("table", "against") else "right")
    for name, a in board.ablation.items():
        rows = [(a["unshaped"], a)] + [(v["policy"], v) for v in a.get("controls", {}).values()]
        for other, v in rows:
            table.add_row(
                name,
                other,
                f"{v['helped']}/{v['folds']}",
                str(v["hurt"]),
                str(v["tied"]),
                _num(v["median_sharpe_margin"]),
            )
    return table


COMMANDS = [evaluate]
