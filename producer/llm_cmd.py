"""``qtrain llm check``: what a user needs to know of their model before a GPU-night.

The configured server (QTRAIN_LLM_API, either API, the workers' client) is asked about N windows of
stored candles (``worker.evaluation.llm_check``); the answers are measured (``model.analyst.llm_check``).
A table by default, one line per finding; ``--json`` for the keys validity, tokens, sensitivity,
memory and verdict.
"""

from __future__ import annotations

import json
from typing import Any

import click

from producer.options import parse_symbols
from worker.settings import DEFAULT_TIMEFRAME, Settings


@click.group(name="llm")
def llm() -> None:
    """The configured LLM: check its answers before a long batch."""


@llm.command(name="check")
@click.option("--symbols", default=None, help="Comma list (default: every symbol stored at the timeframe).")
@click.option(
    "--windows", default=8, show_default=True, type=int, help="Windows asked about, spread over the data."
)
@click.option("--timeframe", default=DEFAULT_TIMEFRAME, show_default=True)
@click.option(
    "--reason-first", is_flag=True, help="Ask for a short reasoning before the fields (an experiment)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(symbols: str | None, windows: int, timeframe: str, reason_first: bool, as_json: bool) -> None:
    """The model's validity, cost, sensitivity to the window and memory of the market, on stored candles."""
    from worker.clients.factory import chat_client
    from worker.evaluation.llm_check import CheckRequest, pick_windows, run_check

    settings = Settings.from_env()
    wanted = parse_symbols(symbols) if symbols else ()
    req = CheckRequest(symbols=wanted, windows=windows, timeframe=timeframe, reason_first=reason_first)
    picked = pick_windows(settings, req)  # bad input (no candles, bad --windows) before any server call
    client = chat_client(settings)
    try:
        client.preflight()  # an unreachable server or a missing model: one line, exit 2
        report = run_check(settings, req, client, progress=None if as_json else _progress, picked=picked)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print(report)


def _progress(done: int, total: int) -> None:
    click.echo(f"window {done}/{total} asked (4 calls each)", err=True)


def _rate(node: dict[str, Any]) -> str:
    v = node.get("value")
    return "–" if v is None else f"{v:.0%} of {node['n']}"


def _chance(node: dict[str, Any]) -> str:
    return f"anonymous prompt; chance {node['chance']:.0%}; said {node.get('most_guessed') or '–'} most"


def _print(r: dict[str, Any]) -> None:
    from rich.table import Table

    from producer.console import make_console

    v, t, s, m = r["validity"], r["tokens"], r["sensitivity"], r["memory"]
    table = Table(title=f"llm check: {r['model']} ({r['api']}), {r['windows']} windows, prompt {r['prompt']}")
    for col in ("finding", "value", "what it means"):
        table.add_column(col)
    reasons = ", ".join(f"{k} {n}" for k, n in list(v["reasons"].items())[:4]) or "none"
    gap = m["names_gap"]
    tokens = f"{t['prompt_median'] or 0:,.0f} + {t['answer_median'] or 0:,.0f} tokens"
    next24 = f"named {_rate(m['next24_named'])}, anonymous {_rate(m['next24_anonymous'])}"
    rows = [
        (
            "valid answers",
            f"{v['parsed']} clean, {v['repaired']} repaired, {v['failed']} failed",
            f"of {v['answers']}; reasons: {reasons}",
        ),
        ("cost a window", f"{tokens}, {t['seconds_median'] or 0:.1f} s", "medians: prompt + answer tokens"),
        ("most common action", f"{s['mode_action']} {_rate(s['mode_share'])}", "100% = one answer for all"),
        ("regime vs the window's trend", _rate(s["regime_agreement"]), "of bull/bear answers; chance 50%"),
        ("action flips when mirrored", _rate(s["mirror_flip"]), "returns negated; a prior never flips"),
        ("names the asset", _rate(m["asset"]), _chance(m["asset"])),
        ("names the year", _rate(m["year"]), _chance(m["year"])),
        (
            "action vs the next 24 candles",
            next24,
            "gap " + ("–" if gap is None else f"{gap:+.0%}") + ": what names add to the window",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console = make_console()
    console.print(table)
    console.print(f"verdict: {r['verdict']}")


COMMANDS = [llm]
