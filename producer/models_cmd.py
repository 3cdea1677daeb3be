"""``qtrain models list|export|promote|rollback``: Q-table versions, their holdout results, overrides."""

from __future__ import annotations

import getpass
import hashlib
import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from model.qlearning import FastQLearning
from producer.console import make_console
from worker.errors import BadInput, QtrainError
from worker.pipeline import promotion
from worker.settings import Settings
from worker.store import db, versions
from worker.symbols import normalize_symbol

HOLDOUT_METRICS = ("total_return_pct", "max_drawdown_pct")


def _holdout_runs(cur: Any, symbol: str | None) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """(symbol, version) -> policy -> metrics of the latest gate run on each version's held-out tail."""
    cur.execute(
        "SELECT symbol, version, policy, metrics FROM btc.backtests WHERE kind = 'holdout'"
        " AND (%s::text IS NULL OR symbol = %s) ORDER BY id",
        (symbol, symbol),
    )
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for sym, ver, policy, metrics in cur.fetchall():
        out.setdefault((sym, int(ver)), {})[policy] = metrics
    return out


def _holdout(runs: dict[str, dict[str, Any]], cfg: promotion.PromotionConfig) -> dict[str, Any] | None:
    """A version's held-out numbers: the criterion's value, each bar's and the margin over it."""
    q = runs.get("qtable")
    if q is None:
        return None
    value = q.get(cfg.metric)
    bars = {"buy_and_hold": runs.get("buy_and_hold", {}).get(cfg.metric),
            "random_median": runs.get("random_median", {}).get(cfg.metric)}  # fmt: skip
    return {
        "metric": cfg.metric, "value": value, **{k: q.get(k) for k in HOLDOUT_METRICS},
        "buy_and_hold_value": bars["buy_and_hold"], "random_median_value": bars["random_median"],
        "margins": {k: cfg.margin_of(value, v) for k, v in bars.items()},
        "buy_and_hold_return_pct": q.get("buy_and_hold_return_pct"),
    }  # fmt: skip


def list_versions(url: str, symbol: str | None, cfg: promotion.PromotionConfig) -> list[dict[str, Any]]:
    """Every version (of ``symbol``, or all) with its latest holdout metrics, margins and promotion state."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT symbol, version, batch_id, created_at, promoted, promoted_at, promoted_by, sha256"
            " FROM btc.agent_state WHERE (%s::text IS NULL OR symbol = %s) ORDER BY symbol, version",
            (symbol, symbol),
        )
        rows = cur.fetchall()
        holdouts = _holdout_runs(cur, symbol)
    out = []
    for sym, ver, batch, created, promoted, p_at, p_by, sha in rows:
        out.append({
            "symbol": sym, "version": int(ver), "batch_id": batch, "created_at": created.isoformat(),
            "promoted": bool(promoted), "promoted_at": p_at.isoformat() if p_at else None,
            "promoted_by": p_by, "sha256": sha, "holdout": _holdout(holdouts.get((sym, int(ver)), {}), cfg),
        })  # fmt: skip
    return out


@click.group(name="models")
def models() -> None:
    """Q-table versions: list, export, promote, roll back."""


def _sym(value: str | None) -> str | None:
    return None if value is None else normalize_symbol(value)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _margin(h: dict[str, Any], bar: str) -> str:
    m = (h.get("margins") or {}).get(bar)
    return "–" if m is None else f"{m:+.3g}"


@models.command(name="list")
@click.option("--symbol", default=None, help="Only this symbol.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(symbol: str | None, as_json: bool) -> None:
    """Versions with their held-out backtest: the criterion, its margin over buy-and-hold and over the
    random-policy median (positive = better), return, drawdown; * = promoted."""
    settings = Settings.from_env()
    cfg = promotion.PromotionConfig.from_settings(settings)
    metric = cfg.metric
    rows = list_versions(settings.database_url, _sym(symbol), cfg)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no Q-table versions yet: `qtrain train --symbols ...` creates them")
        return
    table = Table(title=f"Q-table versions (holdout criterion: {metric})")
    for col in ("symbol", "version", "promoted", "created", "batch", metric, "vs bh", "vs random", "return %",
                "max dd %", "bh return %"):  # fmt: skip
        table.add_column(col, justify="right" if col not in ("symbol", "created") else "left")
    for r in rows:
        h = r["holdout"] or {}
        mark = "*" if r["promoted"] else ""
        if r["promoted"] and r["promoted_by"]:
            mark = f"* ({r['promoted_by']})"
        table.add_row(
            r["symbol"], str(r["version"]), mark, r["created_at"][:16].replace("T", " "), _fmt(r["batch_id"]),
            _fmt(h.get("value")), _margin(h, "buy_and_hold"), _margin(h, "random_median"),
            _fmt(h.get("total_return_pct")),
            _fmt(h.get("max_drawdown_pct")), _fmt(h.get("buy_and_hold_return_pct")),
        )  # fmt: skip
    make_console().print(table)


def export_version(settings: Settings, symbol: str, version: int | None, out: str) -> dict[str, Any]:
    """Write a version's .npz and .json sidecar to ``out``; the sha256 is checked before and after."""
    v = versions.load_version(settings.database_url, symbol, version, prefer_promoted=True)
    if hashlib.sha256(v.npz).hexdigest() != v.sha256:
        raise QtrainError(
            f"{symbol} version {v.version}: stored table does not match its sha256; not exported"
        )
    path = Path(out)
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
@click.option("--out", required=True, help="Path of the .npz to write (a .json sidecar goes beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def export_cmd(symbol: str, version: int | None, out: str, as_json: bool) -> None:
    """Write a Q-table version from PostgreSQL to a file, checking its sha256."""
    res = export_version(Settings.from_env(), normalize_symbol(symbol), version, out)
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"{res['symbol']} v{res['version']} -> {res['path']} (sha256 {res['sha256']} verified)")


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
