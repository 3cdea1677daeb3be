"""``qtrain paper``: paper trading with the promoted versions (start, status, stop, report, replay).

Paper only: qtrain never places a real order and never asks for exchange API keys. The decisions
are made by the ``qtrain.paper_tick`` task that Celery beat sends (``worker.runtime.paper_task``); these
commands only write and read PostgreSQL (``status`` reads nothing else).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from model.candles import minute_utc
from producer.console import make_console
from producer.options import output_path, parse_range, parse_symbols
from producer.signal_cmd import agent_options, agent_settings
from worker.clients.exchange import DEFAULT_EXCHANGE
from worker.errors import BadInput
from worker.settings import Settings
from worker.store.candles import load_candles
from worker.symbols import normalize_symbol
from worker.trading import paper
from worker.trading.agent import AgentSettings


@click.group(name="paper")
def paper_group() -> None:
    """Paper trading with the promoted Q-tables (no real orders, no API keys)."""


@paper_group.command(name="start")
@click.option("--symbols", required=True, help="Comma list; the capital is split equally.")
@click.option("--capital", required=True, type=float, help="Starting cash (quote currency).")
@click.option("--fee", default=0.001, show_default=True, type=float, help="Fee per side (0.001 = 0.1%).")
@click.option("--timeframe", default="1h", show_default=True)
@click.option("--exchange", default=DEFAULT_EXCHANGE, show_default=True, help="ccxt id (public data only).")
@click.option("--name", default=None, help="Account name (default: paper-SYMBOLS).")
@click.option("--no-fetch", is_flag=True, help="Do not fetch candles first (use the stored ones).")
@agent_options
@click.option("--api-url", envvar="QTRAIN_EXCHANGE_API_URL", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True)
def start_cmd(**kw: Any) -> None:
    """Open a paper account; the beat's ticks trade it from the next closed candle on."""
    settings = Settings.from_env()
    agent = agent_settings(settings, kw)
    if kw["api_url"]:
        agent = AgentSettings(**{**agent.__dict__, "api_url": kw["api_url"]})
    symbols = parse_symbols(kw["symbols"])
    name = kw["name"] or "paper-" + "-".join(s.replace("-", "") for s in symbols)
    res = paper.create_account(
        settings,
        agent,
        name=name,
        symbols=symbols,
        capital=kw["capital"],
        fee=kw["fee"],
        timeframe=kw["timeframe"],
        exchange=kw["exchange"],
        fetch=not kw["no_fetch"],
    )
    if kw["as_json"]:
        click.echo(json.dumps(res.to_json()))
        return
    firsts = ", ".join(f"{s} from {minute_utc(t)} UTC" for s, t in res.first_candle.items())
    click.echo(
        f"paper account {name!r} started: {kw['capital']:g} split over {len(symbols)} symbol(s), fee"
        f" {kw['fee']:g}/side; first decisions: {firsts}. Ticks come from `celery -A worker beat`"
        " (qtrain.paper_tick); paper only, no order is ever placed."
    )


@paper_group.command(name="status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def status_cmd(name: str | None, as_json: bool) -> None:
    """Position, cash, equity and PnL vs buy-and-hold since start (from PostgreSQL only)."""
    rows = [a.to_json() for a in paper.status(Settings.from_env(), name)]
    if as_json:
        click.echo(json.dumps(rows if name is None else rows[0], default=str))
        return
    if not rows:
        click.echo("no paper accounts: `qtrain paper start --symbols BTC-USDT --capital 10000`")
        return
    table = Table(title="paper accounts (no real orders)")
    for col in (
        "account",
        "state",
        "symbol",
        "position",
        "equity",
        "PnL %",
        "B&H %",
        "decisions",
        "fills",
        "last candle",
        "last action",
    ):
        table.add_column(col)
    for a in rows:
        for p in a["positions"]:
            last = p["last_decision"]
            bh = p["buy_and_hold_pnl_pct"]
            table.add_row(
                a["name"],
                a["state"],
                p["symbol"],
                p["position"],
                f"{p['equity']:,.2f}",
                f"{p['pnl_pct']:+.2f}",
                "–" if bh is None else f"{bh:+.2f}",
                str(p["n_decisions"]),
                str(p["n_fills"]),
                "–" if p["last_candle"] is None else minute_utc(p["last_candle"]),
                "–" if last is None else f"{last['action']} (v{last['version']})",
            )
    make_console().print(table)


@paper_group.command(name="stop")
@click.argument("name")
def stop_cmd(name: str) -> None:
    """Stop an account (its record stays readable)."""
    paper.stop_account(Settings.from_env(), name)
    click.echo(f"paper account {name!r} stopped")


@paper_group.command(name="report")
@click.argument("name")
@click.option("--symbol", default=None, help="Which symbol of the account (default: the first).")
@click.option("--out", "out_path", required=True, help="HTML file to write.")
def report_cmd(name: str, symbol: str | None, out_path: str) -> None:
    """Equity vs buy-and-hold, trades on price and the decisions, as one self-contained HTML file."""
    from worker.pages.report import paper_page  # Bokeh: imported only here

    settings = Settings.from_env()
    out = output_path(out_path, flag="--out")  # before the work: one line, nothing written
    (a,) = paper.accounts(settings, name=name)
    sym = normalize_symbol(symbol) if symbol else a.symbols[0]
    if sym not in a.symbols:
        raise BadInput(f"paper account {name!r} trades {', '.join(a.symbols)}, not {sym}")
    h = paper.history(settings, name, sym)
    if not h["decisions"]:
        raise BadInput(f"paper account {name!r} has no decisions for {sym} yet: wait for the beat's ticks")
    first, last = int(h["decisions"][0]["ts"]), int(h["decisions"][-1]["ts"])
    candles = load_candles(settings.database_url, sym, a.timeframe, since=first, until=last + 1)
    page = paper_page(h, candles, name=name, symbol=sym, fee=a.fee)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--out {out_path}: cannot write ({exc.strerror})") from None
    click.echo(f"report: {out_path}")


@paper_group.command(name="replay")
@click.option("--symbol", required=True)
@click.option("--since", required=True, help="First candle decided (YYYY-MM-DD or ISO 8601).")
@click.option("--until", default=None, help="End, exclusive.")
@click.option(
    "--version", "version", type=int, default=None, help="Q-table version (default: the promoted one)."
)
@click.option("--capital", default=10_000.0, show_default=True, type=float)
@click.option("--fee", default=0.001, show_default=True, type=float)
@agent_options
@click.option("--json", "as_json", is_flag=True)
def replay_cmd(**kw: Any) -> None:
    """Run the paper tick over stored candles one at a time (no order book: as a backtest)."""
    settings = Settings.from_env()
    agent = agent_settings(settings, kw)
    since, until = parse_range(kw["since"], kw["until"])
    assert since is not None
    if not kw["capital"] > 0:
        raise BadInput(f"--capital must be positive, got {kw['capital']}")
    res = paper.replay(
        settings,
        agent,
        normalize_symbol(kw["symbol"]),
        since=since,
        until=until,
        version=kw["version"],
        capital=kw["capital"],
        fee=kw["fee"],
    )
    if kw["as_json"]:
        click.echo(json.dumps(res.to_json()))
        return
    click.echo(
        f"{res.symbol} v{res.version}: {res.n_decisions} decisions, {len(res.trades)} fills,"
        f" final equity {res.equity_final:,.2f} ({res.position} at the end)"
    )


COMMANDS = [paper_group]
