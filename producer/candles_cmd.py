"""``qtrain candles import|fetch|list``: bring candles into PostgreSQL and show what is stored."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from model.candles import minute_utc
from producer.console import make_console
from producer.lazy import LazyDefaultOption
from producer.options import parse_date
from worker.errors import BadInput
from worker.ingest import directory, files, importer, readers
from worker.settings import Settings
from worker.store import candles as candles_store
from worker.symbols import normalize_symbol

_CONFLICT_HELP = (
    "How duplicate timestamps with different values are resolved. Default most-complete: keep the row "
    "with the most non-NULL optional fields (ties: first in file); in CryptoDataDownload exports that is "
    "the exact millisecond row rather than its rounded float-second copy. first/last: by file position; "
    "max-volume: larger volume; reject: refuse the file."
)


@click.group(name="candles")
def candles() -> None:
    """Import, fetch and list candles."""


@candles.command(name="import")
@click.argument("path", type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--symbol",
    default=None,
    help="Symbol such as BTC-USDT (btc/usdt, BTCUSDT accepted). Default: from the file name or content. "
    "For a directory: only files of this symbol (and files whose name says none).",
)
@click.option(
    "--timeframe",
    default=None,
    help="Candle length (1m 5m 15m 30m 1h 4h 1d). Default: from the file name, else the timestamps' "
    "spacing, else 1h. For a directory: only files of this timeframe.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(readers.FORMATS),
    default=None,
    help="Skip detection and read as this format.",
)
@click.option(
    "--on-conflict",
    type=click.Choice(importer.CONFLICT_POLICIES),
    default=importer.DEFAULT_ON_CONFLICT,
    show_default=True,
    help=_CONFLICT_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_cmd(
    path: str, symbol: str | None, timeframe: str | None, fmt: str | None, on_conflict: str, as_json: bool
) -> None:
    """Import a candle file or a directory of them, the format detected from content and name.

    Reads CryptoDataDownload CSVs (both layouts), Binance bulk klines (.csv or .zip), freqtrade
    .feather/.json and timestamp,open,high,low,close[,volume] CSVs. One transaction: a file that
    cannot be read writes nothing (exit 2). Rows are validated and each defect counted; outliers
    are kept and flagged; a file without volume is stored with volume NULL.
    """
    settings = Settings.from_env()
    if Path(path).is_dir():
        result = files.import_directory(settings, path, symbol, timeframe, on_conflict=on_conflict, fmt=fmt)
        if as_json:
            click.echo(json.dumps(result.to_dict()))
            return
        table = Table(title=f"import {result.directory}")
        for col in directory.COLUMNS:
            table.add_column(col, overflow="fold")
        for row in directory.summary_rows(result):
            table.add_row(*row)
        make_console().print(table)
        return
    report = files.import_file(settings, path, symbol, timeframe, on_conflict=on_conflict, fmt=fmt)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    table = Table(title=f"import {path} -> {report.symbol} {report.timeframe}", show_header=True)
    table.add_column("what")
    table.add_column("count / how", overflow="fold")
    for what, value in importer.summary_rows(report):
        table.add_row(what, value)
    table.add_row("time", f"parse {report.seconds_parse:.2f} s, insert {report.seconds_insert:.2f} s")
    make_console().print(table)


@candles.command(name="fetch")
@click.option("--symbols", required=True, help="Comma list, e.g. BTC-USDT,ETH-USDT.")
@click.option("--timeframe", default="1h", show_default=True)
@click.option("--since", required=True, help="First candle (YYYY-MM-DD or ISO 8601, UTC).")
@click.option("--until", default=None, help="Stop before this time (default: now).")
@click.option(
    "--exchange",
    "exchange_id",
    cls=LazyDefaultOption,
    lazy_default="worker.clients.exchange.DEFAULT_EXCHANGE",
    show_default=True,
    help="A ccxt id.",
)
@click.option(
    "--limit",
    cls=LazyDefaultOption,
    lazy_default="worker.clients.exchange.DEFAULT_LIMIT",
    type=int,
    show_default=True,
    help="Candles per request.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--api-url", envvar="QTRAIN_EXCHANGE_API_URL", default=None, hidden=True)
def fetch_cmd(
    symbols: str,
    timeframe: str,
    since: str,
    until: str | None,
    exchange_id: str,
    limit: int,
    as_json: bool,
    api_url: str | None,
) -> None:
    """Fetch the closed candles of [--since, --until) that are not stored yet through ccxt: gaps
    inside the stored ones included, then the part after the newest."""
    from worker.clients.exchange import fetch_symbol, make_exchange  # ccxt: ~0.5 s to import, only here

    settings = Settings.from_env()
    names = [normalize_symbol(s) for s in symbols.split(",") if s.strip()]
    if not names:
        raise BadInput("--symbols is empty: give e.g. BTC-USDT,ETH-USDT")
    start, stop = parse_date(since, flag="--since"), parse_date(until, flag="--until")
    if start is None:  # pragma: no cover - click makes --since required
        raise BadInput("--since is required")
    exchange = make_exchange(exchange_id, api_url=api_url)
    results = [
        fetch_symbol(exchange, settings.database_url, s, timeframe, since=start, until=stop, limit=limit)
        for s in names
    ]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
        return
    table = Table(title=f"fetch {exchange_id} {timeframe}")
    cols = (
        "symbol",
        "from",
        "missing ranges",
        "requests",
        "retries",
        "received",
        "inserted",
        "present",
        "open skipped",
    )
    for col in cols:
        table.add_column(col)
    for r in results:
        table.add_row(
            r.symbol,
            _when(r.start) + (" (resumed)" if r.resumed else ""),
            str(r.missing_ranges),
            str(r.requests),
            str(r.retries),
            str(r.received),
            str(r.inserted),
            str(r.already_present),
            str(r.open_candle_skipped),
        )
    make_console().print(table)


def _when(ts: int | None) -> str:
    return "-" if ts is None else minute_utc(ts)


@candles.command(name="delete")
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option("--timeframe", default=None, help="Only this timeframe (default: every stored one).")
@click.option(
    "--since", default=None, help="First candle deleted (YYYY-MM-DD or ISO 8601, UTC; default: the first)."
)
@click.option("--until", default=None, help="End of the deleted range, exclusive (default: after the last).")
@click.option("--yes", is_flag=True, help="Delete them. Without it: only say what would be deleted (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def delete_cmd(
    symbol: str, timeframe: str | None, since: str | None, until: str | None, yes: bool, as_json: bool
) -> None:
    """Delete a symbol's stored candles, or those of [--since, --until); asks for --yes.

    Without --yes nothing is deleted: the command prints how many candles it would delete and exits 1,
    so that a script that forgot the flag does not go on as if they were gone. With --yes it deletes
    them in one transaction and prints the count (exit 0). Nothing matching: exit 0, nothing done.
    """
    settings = Settings.from_env()
    name = normalize_symbol(symbol)
    lo, hi = parse_date(since, flag="--since"), parse_date(until, flag="--until")
    if lo is not None and hi is not None and hi <= lo:
        raise BadInput(f"--until ({until}) must be after --since ({since})")
    counts = candles_store.delete_candles(
        settings.database_url, name, timeframe=timeframe, since=lo, until=hi, dry_run=not yes
    )
    total = sum(counts.values())
    span = f"[{_when(lo) if lo is not None else 'first'}, " + (f"{_when(hi)})" if hi is not None else "last]")
    what = ", ".join(f"{n} {tf}" for tf, n in counts.items()) or "0"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "symbol": name,
                    "since": lo,
                    "until": hi,
                    "counts": counts,
                    "total": total,
                    "deleted": yes and total > 0,
                }
            )
        )
    elif total == 0:
        click.echo(f"no stored candles of {name} in {span}: nothing to delete")
    elif yes:
        click.echo(f"deleted {total} candles of {name} in {span} ({what})")
    else:
        click.echo(
            f"would delete {total} candles of {name} in {span} ({what}); nothing deleted: add --yes to"
            " delete them"
        )
    if total and not yes:
        raise SystemExit(1)


@candles.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (epoch seconds).")
def list_cmd(as_json: bool) -> None:
    """Per symbol and timeframe: first, last, count, gaps (runs of missing candles), flagged, no volume."""
    rows = candles_store.list_candles(Settings.from_env().database_url)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title="candles")
    for col in (
        "symbol",
        "timeframe",
        "first",
        "last",
        "count",
        "gaps",
        "longest gap",
        "flagged",
        "no volume",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["symbol"],
            r["timeframe"],
            _when(r["first"]),
            _when(r["last"]),
            str(r["count"]),
            str(r["gaps"]),
            str(r["longest_gap"]),
            str(r["flagged"]),
            str(r["no_volume"]),
        )
    make_console().print(table)


COMMANDS = [candles]
