"""``qtrain backtest`` and ``qtrain check-lookahead``: evaluate Q-tables before anyone trusts them."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from model.candles import minute_utc
from model.evaluation import policy_set
from model.evaluation.backtest import BacktestResult
from model.evaluation.metrics import METRIC_NAMES, json_safe, too_short_to_annualise
from model.trading.live import trades_from_backtest
from producer.console import make_console
from producer.options import output_path, parse_range
from worker.errors import BadInput
from worker.evaluation import backtest as evaluate
from worker.evaluation import lookahead, walk_forward
from worker.settings import MAX_EPOCHS, Settings, check_fee
from worker.symbols import normalize_symbol


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"


def _metric_table(title: str, columns: Mapping[str, Mapping[str, float | None]]) -> Table:
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right")
    for metric in METRIC_NAMES:
        table.add_row(metric, *(_fmt(columns[c].get(metric)) for c in columns))
    return table


def _check_costs(fee: float, slippage_bps: float) -> None:
    check_fee(fee)
    if not 0.0 <= slippage_bps < 1000.0:
        raise BadInput(f"--slippage-bps must be in [0, 1000), got {slippage_bps}")


def _promoted(c: evaluate.Comparison) -> str:
    return "promoted" if c.params.get("promoted") else "not promoted"


def _write_report(path: str, c: evaluate.Comparison) -> None:
    from worker.pages.report import comparison_page  # Bokeh: imported only for --report

    html = comparison_page(c)
    try:
        Path(path).write_text(html, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--report {path}: cannot write ({exc.strerror})") from None


#: Upper bounds of the walk-forward's folds and of check-lookahead's cuts (each is a full pass).
MAX_FOLDS = 1000
MAX_CUTS = 10_000


@click.command()
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Q-table version (default: the promoted one, else the latest, as `models export`).",
)
@click.option("--since", default=None, help="Range start (default: the version's held-out tail).")
@click.option("--until", default=None, help="Range end, exclusive.")
@click.option("--fee", default=0.001, show_default=True, type=float, help="Fee per side (0.001 = 0.1%).")
@click.option("--slippage-bps", default=0.0, show_default=True, type=float, help="Worsens every fill.")
@click.option(
    "--seed",
    default=policy_set.DEFAULT_SEED,
    show_default=True,
    type=int,
    help="The random policy drawn in --report (the random column is the median of 50, as the gate's).",
)
@click.option("--walk-forward", is_flag=True, help="Retrain on each fold's past, test on the next segment.")
@click.option(
    "--folds", default=4, show_default=True, type=click.IntRange(max=MAX_FOLDS), help="With --walk-forward."
)
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(1, MAX_EPOCHS),
    help="With --walk-forward (default: the version's).",
)
@click.option("--report", "report", default=None, help="Write a self-contained HTML report to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON (snake_case, NaN -> null).")
@click.option(
    "--trades",
    "with_trades",
    is_flag=True,
    help='With --json: each policy\'s fills as {"side", "ts", "price", "qty", "fee"} (as `paper replay`).',
)
def backtest(**kw: Any) -> None:
    """Compare the Q-table, the ensemble and baselines on the same range (fees, no look-ahead)."""
    settings = Settings.from_env()
    symbol = normalize_symbol(kw["symbol"])
    _check_costs(kw["fee"], kw["slippage_bps"])
    since, until = parse_range(kw["since"], kw["until"])
    if kw["report"]:
        output_path(kw["report"], flag="--report")  # before the work: one line, nothing written
    costs = {"fee": kw["fee"], "slippage_bps": kw["slippage_bps"], "seed": kw["seed"]}
    if kw["walk_forward"]:
        if kw["report"]:
            raise BadInput("--report is for a single backtest, not --walk-forward")
        wf = walk_forward.walk_forward(
            settings.database_url,
            symbol,
            folds=kw["folds"],
            version=kw["version"],
            since=since,
            until=until,
            epochs=kw["epochs"],
            **costs,
        )
        ids = walk_forward.record(settings.database_url, wf)
        _print_walk_forward(wf, ids, as_json=kw["as_json"])
        return
    c = evaluate.compare(
        settings.database_url, symbol, version=kw["version"], since=since, until=until, **costs
    )
    ids = evaluate.record(settings.database_url, c, kind="manual")
    if kw["report"]:
        _write_report(kw["report"], c)
    if kw["as_json"]:
        out = {
            "symbol": c.symbol,
            "version": c.version,
            "since": c.since,
            "until": c.until,
            "n_candles": len(c.candles),
            **c.params,
            "policies": c.metrics(),
            "notes": list(c.notes),
            "backtest_ids": ids,
            "report": kw["report"],
        }
        if kw["with_trades"]:
            out["trades"] = {name: policy_fills(r, fee=kw["fee"]) for name, r in c.results.items()}
        click.echo(json.dumps(out))
        return
    console = make_console()
    title = (
        f"{c.symbol} Q-table v{c.version} ({_promoted(c)}): {minute_utc(c.since)} –"
        f" {minute_utc(c.until)} UTC,"
        f" {len(c.candles)} candles,"
        f" fee {kw['fee']:g}/side, slippage {kw['slippage_bps']:g} bps"
    )
    console.print(_metric_table(title, c.metrics()))
    for note in c.notes:
        console.print(f"- {note}")
    if kw["report"]:
        console.print(f"report: {kw['report']}")


def policy_fills(result: BacktestResult, *, fee: float) -> list[dict[str, Any]]:
    """A backtest's trades as fills ``{"side", "ts", "price", "qty", "fee"}`` in time order: each
    round trip's buy and sell, and the buy of a position still open at the end."""
    t = result.trades
    entries = [(int(r["entry_ts"]), float(r["entry_price"]), float(r["size"])) for r in t]
    exits = [(int(r["exit_ts"]), float(r["exit_price"]), float(r["size"])) for r in t]
    if result.open_trade is not None:
        o = result.open_trade
        entries.append((o.entry_ts, o.entry_price, o.size))
    return [f.to_json() for f in trades_from_backtest(entries, exits, fee=fee)]


def _print_walk_forward(wf: walk_forward.WalkForward, ids: list[int], *, as_json: bool) -> None:
    agg = wf.aggregate()
    if as_json:
        folds = [
            {
                "fold": f.fold,
                "train_since": f.train_since,
                "train_until": f.train_until,
                "test_since": f.test_since,
                "test_until": f.test_until,
                "n_windows": f.n_windows,
                "policies": {k: json_safe(r.metrics) for k, r in f.results.items()},
            }
            for f in wf.folds
        ]
        out = {
            "symbol": wf.symbol,
            "version": wf.version,
            **wf.params,
            "folds": folds,
            "aggregate": agg,
            "notes": list(wf.notes),
            "backtest_ids": ids,
        }
        click.echo(json.dumps(out))
        return
    console = make_console()
    policies = list(wf.folds[0].results)
    table = Table(
        title=f"{wf.symbol} walk-forward, {len(wf.folds)} folds: total_return_pct / sharpe per policy"
    )
    for col in ("fold", "train", "test", "windows"):
        table.add_column(col)
    for p in policies:
        table.add_column(p, justify="right")
    for f in wf.folds:
        short = too_short_to_annualise((f.test_until - f.test_since) / 86_400)  # no annualised Sharpe then
        cells = [
            f"{_fmt(f.results[p].metrics['total_return_pct'])} / "
            + ("n/a" if short else _fmt(f.results[p].metrics["sharpe"]))
            for p in policies
        ]
        table.add_row(
            str(f.fold),
            f"{minute_utc(f.train_since)} – {minute_utc(f.train_until)}",
            f"{minute_utc(f.test_since)} – {minute_utc(f.test_until)}",
            str(f.n_windows),
            *cells,
        )
    any_short = any(too_short_to_annualise((f.test_until - f.test_since) / 86_400) for f in wf.folds)
    for stat in ("mean", "median"):
        table.add_row(
            stat,
            "",
            "",
            "",
            *(
                f"{_fmt(agg[p]['total_return_pct'][stat])} / "
                + ("n/a" if any_short else _fmt(agg[p]["sharpe"][stat]))
                for p in policies
            ),
        )
    table.add_row("compounded", "", "", "", *(_fmt(agg[p]["compounded_return_pct"]) for p in policies))
    console.print(table)
    for note in wf.notes:
        console.print(f"- {note}")


@click.command(name="check-lookahead")
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Q-table version (default: the promoted one, else the latest).",
)
@click.option("--timeframe", default=None, help="Default: the version's, else 1h.")
@click.option("--since", default=None, help="First candle checked (default: all stored).")
@click.option("--until", default=None, help="End of the checked range, exclusive.")
@click.option(
    "--cuts",
    default=20,
    show_default=True,
    type=click.IntRange(max=MAX_CUTS),
    help="Truncated histories compared.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_lookahead_cmd(**kw: Any) -> None:
    """Recompute features, states and decisions on truncated histories; exit 1 if a past value changed."""
    settings = Settings.from_env()
    symbol = normalize_symbol(kw["symbol"])
    if kw["cuts"] < 1:
        raise BadInput(f"--cuts must be >= 1, got {kw['cuts']}")
    since, until = parse_range(kw["since"], kw["until"])
    opts = {k: kw[k] for k in ("version", "timeframe", "cuts")}
    run = lookahead.run(settings.database_url, symbol, since=since, until=until, **opts)
    report, candles = run.report, run.candles
    issues = {i.name: i for i in report.issues}
    if kw["as_json"]:
        click.echo(json.dumps(run.to_json()))
    else:
        table = Table(
            title=f"look-ahead check: {symbol} {run.timeframe}, {len(candles)} candles, "
            f"{len(report.cut_points)} cuts ({run.note})"
        )
        for col in ("series", "result", "first bad index", "first bad candle", "values changed"):
            table.add_column(col)
        for name in report.names:
            i = issues.get(name)
            if i is None:
                table.add_row(name, "ok", "", "", "")
            else:
                first = i.first_bad_index
                table.add_row(name, "LEAK", str(first), minute_utc(int(candles.ts[first])), str(i.n_bad))
        make_console().print(table)
    if not report.ok:
        first = report.issues[0]
        click.echo(
            f"look-ahead found in {', '.join(report.bad_names())}: {first.name} changed at index"
            f" {first.first_bad_index} when later candles were removed",
            err=True,
        )
        sys.exit(1)


COMMANDS = [backtest, check_lookahead_cmd]
