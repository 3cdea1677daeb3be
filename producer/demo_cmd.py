"""``qtrain demo``: the whole path on one machine in one command.

Database, candles (synthetic for two symbols, or ``--csv FILE --symbol S``), local workers when
none is running, a batch trained with Ollama when it answers (else the heuristic analyst, saying
so), and the summary. Running it again is cheap: every window is then a cache hit.
"""

from __future__ import annotations

import json
from typing import Any

import click

from model.synthetic import make_candles
from producer import train_cmd
from producer.workers import running_workers, start_workers
from worker.errors import QtrainError
from worker.pipeline import dispatch
from worker.settings import Settings
from worker.store import batches, db, migrate
from worker.store.candles import insert_candles

DEMO_SYMBOLS = {"BTC-USDT": (1, 30_000.0), "ETH-USDT": (2, 2_000.0)}


def insert_synthetic(database_url: str, n: int, symbols: dict[str, tuple[int, float]]) -> None:
    """Insert ``n`` seeded synthetic hourly candles per ``symbol -> (seed, start price)`` (idempotent)."""
    with db.transaction(database_url) as cur:
        for symbol, (seed, price) in symbols.items():
            c = make_candles(n, seed=seed, price=price, symbol=symbol)
            insert_candles(
                cur, symbol, "1h", c.ts, c.open, c.high, c.low, c.close, c.volume,
                taker_buy_volume=c.taker_buy_volume,
            )  # fmt: skip


def load_demo_candles(settings: Settings, n: int) -> list[str]:
    """Insert seeded synthetic candles for the demo symbols; returns the symbols."""
    insert_synthetic(settings.database_url, n, DEMO_SYMBOLS)
    return list(DEMO_SYMBOLS)


def choose_analyst(settings: Settings, wanted: str) -> tuple[str, str]:
    """``auto``: Ollama when every host answers and has the model, else heuristic; (analyst, why)."""
    if wanted != "auto":
        return wanted, f"--analyst {wanted}"
    try:
        dispatch.check_ollama(settings, settings.ollama_model)
    except QtrainError as exc:
        return "heuristic", f"Ollama not usable ({exc}); using the built-in heuristic analyst"
    return "ollama", f"Ollama answers at {', '.join(settings.ollama_hosts)} with {settings.ollama_model}"


@click.command()
@click.option("--workers", "n_workers", default=2, show_default=True, help="Worker processes to start.")
@click.option("--concurrency", default=2, show_default=True, help="Pool processes per worker.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Import this CSV.")
@click.option("--symbol", default=None, help="Symbol of --csv, e.g. BTC-USDT (default: from the file name).")
@click.option("--candles", "n_candles", default=1500, show_default=True, help="Synthetic candles per symbol.")
@click.option("--epochs", default=3, show_default=True)
@click.option(
    "--analyst", type=click.Choice(["auto", "ollama", "heuristic"]), default="auto", show_default=True
)
@click.option("--timeout", default=900.0, show_default=True, help="Give up waiting after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
def demo(**kw: Any) -> None:
    """Run the whole pipeline on this machine: db init, candles, workers, training, summary."""
    settings = Settings.from_env()
    say = (lambda *_: None) if kw["as_json"] else click.echo
    migrate.migrate(settings.database_url)
    say(f"database ready: {db.redact(settings.database_url)}")
    if kw["csv_path"]:
        from producer.candles_cmd import import_file

        report = import_file(settings, kw["csv_path"], kw["symbol"], "1h")  # symbol: else from the name
        symbols = [report.symbol]
        say(f"imported {kw['csv_path']}: {report.inserted} new candles")
    else:
        symbols = load_demo_candles(settings, kw["n_candles"])
        say(f"synthetic candles: {kw['n_candles']} hourly candles for {', '.join(symbols)}")
    dispatch.check_broker(settings)
    analyst, why = choose_analyst(settings, kw["analyst"])
    say(f"analyst: {analyst} ({why})")
    started = None
    if running_workers(settings.broker_url) == 0:
        say(f"starting {kw['n_workers']} worker process(es) x {kw['concurrency']} slots")
        started = start_workers(kw["n_workers"], concurrency=kw["concurrency"], prefix="demo")
    else:
        say("using the Celery workers already running")
    try:
        req = dispatch.TrainRequest(symbols=tuple(symbols), epochs=kw["epochs"], analyst=analyst, seed=42)
        created = dispatch.create(settings, req)
        from worker.runtime import publish

        dispatch.enqueue_batch(settings, created.batch_id, req.symbols, enqueue=publish.enqueue)
        say(f"batch {created.batch_id}: {created.windows} windows enqueued")
        final = train_cmd.wait(settings, created.batch_id, timeout=kw["timeout"], quiet=kw["as_json"])
    finally:
        if started is not None:
            started.stop()
    if kw["as_json"]:
        click.echo(json.dumps(final.to_json()))
        return
    train_cmd.print_summary(final)
    print_gate(settings, final)
    say(f"Q-tables in {settings.models_dir}/ (fast_model_<SYMBOL>.npz = the promoted one)")
    say(f"next: qtrain backtest --symbol {symbols[0]} --report report.html   |   qtrain models list")


def print_gate(settings: Settings, final: batches.BatchStatus) -> None:
    """One line per symbol: the new version on its held-out tail against every bar the gate held it
    to (buy-and-hold, the random-policy median, the promoted version), by how much, the verdict and
    which bar decided, and what the LLM adds over the same batch trained without analyses."""
    from worker.pipeline import records
    from worker.pipeline.promotion import PromotionConfig

    cfg = PromotionConfig.from_settings(settings)
    for symbol, s in final.symbols.items():
        rows = [
            r
            for r in records.version_records(settings.database_url, symbol, cfg)
            if r.row.version == s.q_version
        ]
        if rows and rows[0].holdout is not None:
            click.echo(records.gate_line(rows[0]))


COMMANDS = [demo]
