"""What the LLM adds: a version's table against the same batch trained without its analyses, and
against its negative controls.

Whenever the reducer trains a version from analyses (an LLM's or the heuristic analyst's: any
analyst), it also trains its **unshaped twin**: the same candles, recipe, parameters, seed and warm
start, with no analysis at all (shaping off: the reward is the realised, fee-net return only).
Both tables are backtested on the version's held-out tail with the promotion gate's engine and fee
(``promotion.tail_metrics``). The margin, LLM-shaped minus unshaped in the gate's metric (positive:
the analyses helped), is recorded in the version's ``agent_state.metadata["ablation"]`` (with both
tables' metrics); the gate copies both runs into ``btc.backtests`` (policies ``qtable_llm_shaped``
and ``qtable_unshaped``, kind ``holdout``) and its verdict; ``qtrain models list`` and the demo show it.

It also trains the batch's two **negative controls** (``model.evaluation.controls``, each applied per symbol
before a pooled recipe pools): ``shuffled`` (the batch's own analyses moved to other windows of the
training range by a seeded derangement) and ``constant`` (the batch's most common answer on every
window, no rules). They keep the analyses' prior and drop their content; the tail backtests of
both are recorded beside the twin's (``metrics``, and ``qtable_shuffled``/``qtable_constant`` in
``btc.backtests``), with the LLM-shaped table's margin over the better of them
(``content_margin``: "content adds +0.08 sharpe over shuffled").

``QTRAIN_PROMOTION_TWIN`` (``PromotionConfig.twin``) decides which table the version holds:

* ``better`` (default): the better of the two on the tail; the twin only when it beats the shaped
  table by more than ``QTRAIN_PROMOTION_MARGIN`` (a tie keeps the LLM's). The gate then holds that
  table to its bars, and says which table it was (``served``).
* ``bar`` and ``allow``: the LLM-shaped table. With ``bar`` the twin is one more bar of the gate
  (a version that loses to its own unshaped twin is not promoted); with ``allow`` the margin is
  shown and nothing else.

``QTRAIN_PROMOTION_CONTROLS`` (``PromotionConfig.controls``): ``show`` (default) changes nothing
above; ``require``: a shaped table that does not beat both controls by more than the margin is not
served, the version holds the unshaped twin (whatever the twin rule).

Deterministic: all four tables depend only on the batch, the stored candles and the seed, and the
choice only on their backtests, so the same batch and seed give the same bytes. A version trained
without any analysed window, or without a held-out tail, has no twin (nothing to compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.evaluation.controls import CONTROLS
from model.evaluation.metrics import json_safe
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from worker.errors import BadInput
from worker.evaluation import backtest as evaluate
from worker.pipeline.promotion import PromotionConfig, content_margin, tail_metrics

SHAPED, UNSHAPED = "llm_shaped", "unshaped"


@dataclass(frozen=True)
class Ablation:
    """The tables' metrics on the held-out tail (LLM-shaped, unshaped twin, negative controls), the
    margins by the gate's metric (over the twin; over the best control), the table kept."""

    metric: str
    llm_shaped: float | None
    unshaped: float | None
    margin: float | None
    served: str
    rule: str
    metrics: dict[str, dict[str, float | None]]
    controls: dict[str, float | None] | None = None
    best_control: str | None = None
    content_margin: float | None = None
    controls_rule: str = "show"
    controls_beaten: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``ablation`` entry of the version's metadata (the control keys only with controls)."""
        out = {
            "metric": self.metric,
            "llm_shaped": self.llm_shaped,
            "unshaped": self.unshaped,
            "margin": self.margin,
            "served": self.served,
            "rule": self.rule,
            "metrics": self.metrics,
        }
        if self.controls is not None:
            out.update(
                controls=self.controls,
                best_control=self.best_control,
                content_margin=self.content_margin,
                controls_rule=self.controls_rule,
                controls_beaten=self.controls_beaten,
            )
        return out


def choose(
    cfg: PromotionConfig,
    shaped: dict[str, Any],
    unshaped: dict[str, Any],
    controls: dict[str, dict[str, Any]] | None = None,
) -> Ablation:
    """The ablation of the tables' tail metrics (JSON-safe; ``controls``: control name -> metrics):
    the margins and which table the version keeps under ``cfg.twin`` and ``cfg.controls`` (module
    docstring)."""
    a, b = shaped.get(cfg.metric), unshaped.get(cfg.metric)
    served = UNSHAPED if cfg.twin == "better" and cfg.beats(b, a) else SHAPED  # a tie keeps the LLM's
    values = {c: m.get(cfg.metric) for c, m in (controls or {}).items()}
    beaten = all(cfg.beats(a, v) for v in values.values()) if values else None
    if cfg.controls == "require" and beaten is False:
        served = UNSHAPED  # its content did not beat its own controls: not served
    best, content = content_margin(cfg, a, values)
    return Ablation(
        metric=cfg.metric,
        llm_shaped=a,
        unshaped=b,
        margin=cfg.margin_of(a, b),
        served=served,
        rule=cfg.twin,
        metrics={SHAPED: shaped, UNSHAPED: unshaped, **(controls or {})},
        controls=values if controls else None,
        best_control=best,
        content_margin=content,
        controls_rule=cfg.controls,
        controls_beaten=beaten,
    )


def measure(
    url: str,
    symbol: str,
    timeframe: str,
    tail: tuple[int, int],
    space: StateSpace,
    shaped: FastQLearning,
    twin: FastQLearning,
    cfg: PromotionConfig,
    controls: dict[str, FastQLearning] | None = None,
) -> Ablation | None:
    """Backtest ``shaped``, its unshaped ``twin`` and its ``controls`` (name -> table) on the tail
    ``[since, until)``; None when the tail holds fewer than 2 candles (the gate will say so)."""
    if tail[1] <= tail[0]:
        return None
    try:
        ctx, start = evaluate.load_range(url, symbol, timeframe, *tail)
    except BadInput:
        return None
    tables = {SHAPED: shaped, UNSHAPED: twin, **(controls or {})}
    runs = {name: json_safe(tail_metrics(t.q, space, ctx, start)) for name, t in tables.items()}
    found = {c: runs[c] for c in CONTROLS if c in runs}
    return choose(cfg, runs[SHAPED], runs[UNSHAPED], found or None)


def holds(record: dict[str, Any] | None) -> str:
    """`` (the version holds the unshaped twin...)`` when it does (and why, under ``require``), else ''."""
    if not record or record.get("served") != UNSHAPED:
        return ""
    lost = record.get("controls_rule") == "require" and record.get("controls_beaten") is False
    return " (the version holds the unshaped twin" + (": no better than its controls)" if lost else ")")


def sentence(record: dict[str, Any] | None) -> str:
    """The margin in words: ``LLM adds +0.12 sharpe on the holdout`` or ``LLM adds nothing here:
    -0.30 sharpe``, and which table the version holds when it is the twin."""
    if not record:
        return "no unshaped twin (trained without analyses, or no held-out tail)"
    m, metric = record.get("margin"), record.get("metric", "sharpe")
    if m is None:
        text = f"LLM's effect unknown: no {metric} for one of the tables on the holdout"
    elif m > 0:
        text = f"LLM adds {m:+.2f} {metric} on the holdout"
    else:
        text = f"LLM adds nothing here: {m:+.2f} {metric} on the holdout"
    text += holds(record)
    if record.get("controls"):
        text += "; " + content_sentence(record)
    return text


def content_sentence(record: dict[str, Any]) -> str:
    """The analyses' content against the negative controls: ``content adds +0.08 sharpe over
    shuffled (controls: shuffled 1.10, constant 0.95)``, or ``content adds nothing over constant:
    -0.20 sharpe (...)``."""
    metric, best, m = record.get("metric", "sharpe"), record.get("best_control"), record.get("content_margin")
    shown = ", ".join(f"{c} {'n/a' if v is None else f'{v:.2f}'}" for c, v in record["controls"].items())
    if best is None or m is None:
        return f"content's effect unknown (controls: {shown})"
    if m > 0:
        return f"content adds {m:+.2f} {metric} over {best} (controls: {shown})"
    return f"content adds nothing over {best}: {m:+.2f} {metric} (controls: {shown})"
