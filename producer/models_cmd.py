"""``qtrain models list|export|promote|rollback``: Q-table versions, their holdout results, overrides."""

from __future__ import annotations

import getpass
import hashlib
import json
from typing import Any

import click
from rich.table import Table

from model.evaluation.metrics import ANNUALISED, too_short_to_annualise
from model.learning.qlearning import FastQLearning
from producer.console import make_console
from producer.options import output_path
from worker.errors import BadInput, QtrainError
from worker.pipeline import promotion, records
from worker.settings import Settings
from worker.store import versions
from worker.symbols import normalize_symbol


@click.group(name="models")
def models() -> None:
    """Q-table versions: list, export, promote, roll back."""


def _sym(value: str | None) -> str | None:
    return None if value is None else normalize_symbol(value)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _margin(h: dict[str, Any] | None, bar: str) -> str:
    m = ((h or {}).get("margins") or {}).get(bar)
    return "–" if m is None else f"{m:+.3g}"


TABLE_OF = {"llm_shaped": "LLM", "unshaped": "unshaped twin"}


@models.command(name="list")
@click.option("--symbol", default=None, help="Only this symbol.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(symbol: str | None, as_json: bool) -> None:
    """Versions with their held-out backtest: the criterion, its margin over buy-and-hold, the
    random-policy median and the version promoted when it was gated (positive = better), what the
    LLM adds over the same batch trained without analyses, what their content adds over the best
    negative control (the same analyses on the wrong windows, or one constant answer), and which
    table the version holds; return, drawdown; * = promoted."""
    settings = Settings.from_env()
    cfg = promotion.PromotionConfig.from_settings(settings)
    metric = cfg.metric
    rows = records.version_records(settings.database_url, _sym(symbol), cfg)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows]))
        return
    if not rows:
        click.echo("no Q-table versions yet: `qtrain train --symbols ...` creates them")
        return
    table = Table(
        title=f"Q-table versions (holdout criterion: {metric}; LLM adds = shaped - unshaped twin;"
        " content adds = shaped - best control)"
    )
    cols = (
        "symbol",
        "version",
        "promoted",
        "created",
        "batch",
        "evidence",
        metric,
        "vs bh",
        "vs random",
        "vs promoted",
        "LLM adds",
        "content adds",
        "table",
        "return %",
        "max dd %",
        "bh return %",
    )
    for col in cols:
        table.add_column(col, justify="right" if col not in ("symbol", "created", "table") else "left")
    for rec in rows:
        r, h = rec.row, rec.holdout or {}
        mark = "*" if r.promoted else ""
        if r.promoted and r.promoted_by:
            mark = f"* ({r.promoted_by})"
        ev = (r.gate or {}).get("evidence")
        hide = ev is not None and metric in ANNUALISED and too_short_to_annualise(ev["days"])
        figures = (
            ["n/a"] * 6
            if hide
            # an annualised figure of a tail under 30 days: not shown
            else [
                _fmt(h.get("value")),
                _margin(h, "buy_and_hold"),
                _margin(h, "random_median"),
                _margin(h, "incumbent"),
                _llm(rec.ablation),
                _content(rec.ablation),
            ]
        )
        table.add_row(
            r.symbol,
            str(r.version),
            mark,
            r.created_at.isoformat()[:16].replace("T", " "),
            _fmt(r.batch_id),
            _evidence(ev),
            *figures,
            TABLE_OF.get(rec.served or "", "–"),
            _fmt(h.get("total_return_pct")),
            _fmt(h.get("max_drawdown_pct")),
            _fmt(h.get("buy_and_hold_return_pct")),
        )
    make_console().print(table)


def _evidence(ev: dict[str, Any] | None) -> str:
    """The held-out tail's days and closed trades, and whether that was too little for a verdict."""
    if ev is None:
        return "–"
    return f"{ev['days']:.0f} d, {ev['closed_trades']} trades" + ("" if ev["enough"] else " (too little)")


def _llm(ablation: dict[str, Any] | None) -> str:
    """The LLM's margin over the unshaped twin, or – when the version has no twin."""
    m = None if ablation is None else ablation.get("margin")
    return "–" if m is None else f"{m:+.3g}"


def _content(ablation: dict[str, Any] | None) -> str:
    """The LLM's margin over its best negative control and which (``+0.08 over shuffled``), or –."""
    if ablation is None or ablation.get("content_margin") is None:
        return "–"
    return f"{ablation['content_margin']:+.3g} over {ablation['best_control']}"


def export_version(settings: Settings, symbol: str, version: int | None, out: str) -> dict[str, Any]:
    """Write a version's .npz and .json sidecar to ``out`` (a file, or an existing directory to write
    ``fast_model_{SYMBOL}.npz`` in); the sha256 is checked before and after."""
    path = output_path(out, flag="--out", directory_name=versions.model_path(".", symbol).name)
    v = versions.load_version(settings.database_url, symbol, version, prefer_promoted=True)
    if hashlib.sha256(v.npz).hexdigest() != v.sha256:
        raise QtrainError(
            f"{symbol} version {v.version}: stored table does not match its sha256; not exported"
        )
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {**v.metadata, "file_sha256": v.sha256, "promoted": v.promoted}
    try:
        versions.write_model_file(path, v.npz, meta)
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot write ({exc.strerror})") from None
    written = hashlib.sha256(path.read_bytes()).hexdigest()
    if written != v.sha256:
        raise QtrainError(f"{path}: written file's sha256 {written[:12]} differs from the stored one")
    FastQLearning.load(path)  # loads with allow_pickle=False: the file is usable as written
    return {
        "symbol": symbol,
        "version": v.version,
        "promoted": v.promoted,
        "path": str(path),
        "sha256": written,
    }


@models.command(name="export")
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option(
    "--version", "version", type=int, default=None, help="Default: the promoted one, else the latest."
)
@click.option(
    "--out",
    required=True,
    help="The .npz file to write (a .json sidecar goes beside it), or an existing directory to write"
    " fast_model_{SYMBOL}.npz in. Its directory must exist.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def export_cmd(symbol: str, version: int | None, out: str, as_json: bool) -> None:
    """Write a Q-table version from PostgreSQL to a file, checking its sha256."""
    res = export_version(Settings.from_env(), normalize_symbol(symbol), version, out)
    if as_json:
        click.echo(json.dumps(res))
    else:
        state = (
            "promoted" if res["promoted"] else "latest, not promoted" if version is None else "not promoted"
        )
        click.echo(
            f"{res['symbol']} v{res['version']} ({state}) -> {res['path']} (sha256 {res['sha256']} verified)"
        )


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _echo_switch(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(res))
        return
    prev = f" (was v{res['previous']})" if res["previous"] is not None else ""
    click.echo(f"{res['symbol']}: v{res['version']} promoted by {res['by']}{prev}; {res['model_file']}")


@models.command(name="promote")
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option("--version", "version", type=int, required=True, help="Version to promote.")
@click.option("--by", default=None, help="Who decided (default: the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def promote_cmd(symbol: str, version: int, by: str | None, as_json: bool) -> None:
    """Promote a version by hand (overrides the gate); recorded with who and when."""
    res = promotion.set_promoted(Settings.from_env(), normalize_symbol(symbol), version, by=_who(by))
    _echo_switch(res, as_json)


@models.command(name="rollback")
@click.option("--symbol", required=True, help="e.g. BTC-USDT.")
@click.option("--to", "to", type=int, default=None, help="Version to go back to (default: the previous one).")
@click.option("--by", default=None, help="Who decided (default: the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rollback_cmd(symbol: str, to: int | None, by: str | None, as_json: bool) -> None:
    """Promote the previously promoted version again (or --to N); recorded with who and when."""
    res = promotion.set_promoted(
        Settings.from_env(), normalize_symbol(symbol), to, by=_who(by), rollback=True
    )
    _echo_switch(res, as_json)


COMMANDS = [models]
