"""What the gate recorded of each version, as ``qtrain models list`` and the demo show it.

A version's record joins its ``agent_state`` row (``versions.version_rows``), the latest held-out
runs the gate stored (``backtests.latest_holdout_runs``) and the gate's verdict (``agent_state.gate``):
the criterion's value, each bar's value and the margin over it (positive = better), the LLM's
margin over the unshaped twin and over the better of its negative controls (shuffled, constant),
and which table the version holds. ``gate_line`` is the verdict in
one line: every bar the version was held to, the promoted version included, and which decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.evaluation.metrics import ANNUALISED, MIN_DAYS_TO_ANNUALISE, too_short_to_annualise
from worker.pipeline import ablation
from worker.pipeline.promotion import PromotionConfig, twin_record
from worker.store import backtests, versions
from worker.symbols import is_synthetic

HOLDOUT_METRICS = ("total_return_pct", "max_drawdown_pct")


@dataclass(frozen=True)
class VersionRecord:
    """One version of ``qtrain models list``: the row, its held-out numbers, the gate's verdict."""

    row: versions.VersionRow
    holdout: dict[str, Any] | None
    ablation: dict[str, Any] | None

    @property
    def served(self) -> str | None:
        """Which table the version holds: ``llm_shaped``, ``unshaped`` (its twin won), or None (no twin)."""
        return None if self.ablation is None else str(self.ablation["served"])

    def to_json(self) -> dict[str, Any]:
        """The entry of ``qtrain models list --json``."""
        r = self.row
        return {
            "symbol": r.symbol,
            "version": r.version,
            "batch_id": r.batch_id,
            "created_at": r.created_at.isoformat(),
            "promoted": r.promoted,
            "promoted_at": r.promoted_at.isoformat() if r.promoted_at else None,
            "promoted_by": r.promoted_by,
            "sha256": r.sha256,
            "holdout": self.holdout,
            "ablation": self.ablation,
            "gate": r.gate,
        }


def _holdout(
    runs: dict[str, dict[str, Any]], cfg: PromotionConfig, gate: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A version's held-out numbers: the criterion's value, each bar's and the margin over it."""
    q = runs.get("qtable")
    if q is None:
        return None
    value = q.get(cfg.metric)
    bars = {
        "buy_and_hold": runs.get("buy_and_hold", {}).get(cfg.metric),
        "random_median": runs.get("random_median", {}).get(cfg.metric),
    }
    if "incumbent_qtable" in runs:
        bars["incumbent"] = runs["incumbent_qtable"].get(cfg.metric)
    return {
        "metric": cfg.metric,
        "value": value,
        **{k: q.get(k) for k in HOLDOUT_METRICS},
        "buy_and_hold_value": bars["buy_and_hold"],
        "random_median_value": bars["random_median"],
        "incumbent_value": bars.get("incumbent"),
        "incumbent_version": (gate or {}).get("incumbent"),
        "margins": {k: cfg.margin_of(value, v) for k, v in bars.items()},
        "buy_and_hold_return_pct": q.get("buy_and_hold_return_pct"),
    }


def version_records(url: str, symbol: str | None, cfg: PromotionConfig) -> list[VersionRecord]:
    """Every version (of ``symbol``, or all) with its latest holdout numbers, margins and verdict."""
    rows = versions.version_rows(url, symbol)
    runs = backtests.latest_holdout_runs(url, symbol)
    return [
        VersionRecord(
            row,
            _holdout(runs.get((row.symbol, row.version), {}), cfg, row.gate),
            twin_record(cfg, row.metadata.get("ablation")),
        )
        for row in rows
    ]


def _num(x: Any, *, sign: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.2f}" if sign else f"{x:.2f}")


def gate_line(rec: VersionRecord) -> str:
    """The gate's verdict on one version in one line: the value, every bar with its value and margin
    (the promoted version and the unshaped twin included when they were bars), the verdict and the
    bar(s) that decided it, the LLM's margin (and its content's over the controls, naming them), and
    the return against buy-and-hold."""
    h, gate = rec.holdout, rec.row.gate or {}
    head = f"{rec.row.symbol} v{rec.row.version}"
    if h is None:
        return f"{head}: {gate.get('reason') or gate.get('error') or 'not gated yet'}"
    metric = h["metric"]
    ev = gate.get("evidence") or {}
    days = ev.get("days")
    hide = metric in ANNUALISED and days is not None and too_short_to_annualise(days)
    bars = gate.get("bars")
    if bars is None:  # gated before verdicts were recorded: the bars of its holdout runs
        old = (("buy_and_hold", "buy-and-hold"), ("random_median", "random median"))
        bars = [
            {"bar": k, "label": label, "value": h.get(f"{k}_value"), "margin": h["margins"].get(k)}
            for k, label in old
        ]
    parts = []
    for b in bars:
        label = {"the random-policy median": "random median"}.get(b["label"], b["label"])
        tie = ", a tie" if b.get("margin") == 0 else ""
        parts.append(f"vs {label} {_num(b['value'])} ({_num(b.get('margin'), sign=True)}{tie})")
    labels = {
        b["bar"]: {"the random-policy median": "random median"}.get(b["label"], b["label"]) for b in bars
    }
    decided = [labels.get(k, k) for k in gate.get("decided_by", [])]
    if rec.row.promoted and gate.get("promoted"):
        verdict = "promoted" + (f" (closest: {decided[0]})" if decided else "")
    elif rec.row.promoted:  # a person's `qtrain models promote` or rollback, over the gate's no
        verdict = f"promoted by {rec.row.promoted_by} (the gate said no" + (
            f": decided by {' and '.join(decided)})" if decided else ")"
        )
    elif gate.get("promoted"):
        verdict = "promoted then, since replaced"
    elif gate.get("reason") == "already promoted":
        verdict = "not promoted (already the promoted version)"
    elif gate.get("decided_by") in (["evidence"], ["never_trades"]):
        verdict = f"not promoted: {gate['reason']}"
    else:
        verdict = "not promoted" + (f" (decided by {' and '.join(decided)})" if decided else "")
    if ev:
        trades = ev["closed_trades"]
        synthetic = "synthetic data, " if is_synthetic(rec.row.symbol) else ""
        head += f" ({synthetic}{days:.1f} days, {trades} closed trade{'s' if trades != 1 else ''})"
    figures = f"{metric} {_num(h['value'])} {', '.join(parts)}"
    twin = ablation.sentence(rec.ablation)
    if hide and rec.ablation is not None:
        twin = f"what the LLM adds not shown ({metric} of a tail under {MIN_DAYS_TO_ANNUALISE:g} days)"
        twin += ablation.holds(rec.ablation)
    if hide:  # an annualised figure of a short tail extrapolates luck: not shown
        figures = f"{metric} not shown (annualised figures need >= {MIN_DAYS_TO_ANNUALISE:g} days)"
    return (
        f"{head} on its held-out tail: {figures} -> {verdict};"
        f" {twin}; return {_num(h['total_return_pct'])}% vs buy-and-hold"
        f" {_num(h['buy_and_hold_return_pct'])}%"
    )
