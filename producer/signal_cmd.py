"""``qtrain signal``: what the promoted Q-table version's ensemble decides now, per symbol.

Paper only: it reads public market data (candles, order book, recent trades) and prints a
decision; it never places an order and never asks for exchange API keys.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from model.candles import timeframe_seconds
from model.trading.ensemble import COMPONENTS
from producer.console import make_console
from producer.options import parse_symbols
from worker.clients.exchange import DEFAULT_EXCHANGE
from worker.errors import BadInput
from worker.settings import Settings
from worker.trading.agent import AgentSettings
from worker.trading.signal import signal_one


def agent_options(fn: Any) -> Any:
    """The flags that override the agent's environment (shared by ``signal`` and ``paper start``)."""
    for opt in reversed(
        [
            click.option(
                "--weights", default=None, help="e.g. technical=0.35,orderbook=0.3,llm=0.1 [QTRAIN_WEIGHTS]."
            ),
            click.option("--buy-threshold", type=float, default=None, help="[QTRAIN_BUY_THRESHOLD, 0.2]"),
            click.option("--sell-threshold", type=float, default=None, help="[QTRAIN_SELL_THRESHOLD, -0.2]"),
            click.option("--min-confidence", type=float, default=None, help="[QTRAIN_MIN_CONFIDENCE, 0.3]"),
            click.option("--book-depth", type=int, default=None, help="Order-book levels per side [10]."),
            click.option("--max-rules", type=int, default=None, help="LLM rules used, newest first [50]."),
        ]
    ):
        fn = opt(fn)
    return fn


def agent_settings(settings: Settings, kw: dict[str, Any]) -> AgentSettings:
    """``AgentSettings`` from the environment with the command's flags on top."""
    keys = ("weights", "buy_threshold", "sell_threshold", "min_confidence", "book_depth", "max_rules")
    return AgentSettings.from_env(settings.agent_env, **{k: kw.get(k) for k in keys})


@click.command()
@click.option("--symbols", required=True, help="Comma list, e.g. BTC-USDT,ETH-USDT.")
@click.option("--timeframe", default="1h", show_default=True)
@click.option(
    "--exchange", default=DEFAULT_EXCHANGE, show_default=True, help="ccxt exchange id (public data only)."
)
@click.option("--offline", is_flag=True, help="Stored candles only: no fetch, no order book, no trades.")
@click.option(
    "--position",
    type=click.Choice(["flat", "long"]),
    default="flat",
    show_default=True,
    help="Position the Q-table component decides for.",
)
@agent_options
@click.option("--api-url", envvar="QTRAIN_EXCHANGE_API_URL", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per symbol in a list.")
def signal(**kw: Any) -> None:
    """Decide now with the promoted version: action, confidence, score and every component."""
    settings = Settings.from_env()
    agent = agent_settings(settings, kw)
    if kw["api_url"]:
        agent = AgentSettings(**{**agent.__dict__, "api_url": kw["api_url"]})
    symbols = parse_symbols(kw["symbols"])
    try:
        timeframe_seconds(kw["timeframe"])
    except ValueError as exc:
        raise BadInput(f"--timeframe: {exc}") from None
    now = time.time()
    out = [
        signal_one(
            settings,
            agent,
            s,
            timeframe=kw["timeframe"],
            exchange=kw["exchange"],
            offline=kw["offline"],
            position=1 if kw["position"] == "long" else 0,
            now=now,
        )
        for s in symbols
    ]
    if kw["as_json"]:
        click.echo(json.dumps(out))
        return
    table = Table(title="qtrain signal (paper only: no order is ever placed)")
    for col in ("symbol", "action", "confidence", "score", *COMPONENTS, "version", "candle", "age"):
        table.add_column(col)
    for r in out:
        cells = []
        for name in COMPONENTS:
            c = r["components"][name]
            cells.append("–" if c["score"] is None else f"{c['score']:+.2f} ×{c['weight']:.2f}")
        score = "–" if r["score"] is None else f"{r['score']:+.3f}"
        table.add_row(
            r["symbol"],
            r["action"],
            f"{r['confidence']:.2f}",
            score,
            *cells,
            f"v{r['version']}",
            r["candle_time"][:16],
            f"{r['data_age_s'] / 60:.0f} min",
        )
    console = make_console()
    console.print(table)
    for r in out:
        for note in r["notes"]:
            console.print(f"- {r['symbol']}: {note}")


COMMANDS = [signal]
