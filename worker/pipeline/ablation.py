"""What the LLM adds: a version's table against the same batch trained without its analyses.

Whenever the reducer trains a version from analyses (an LLM's or the heuristic analyst's: any
analyst), it also trains its **unshaped twin**: the same candles, recipe, parameters, seed and warm
start, with no analysis at all (shaping off: the reward is the realised, fee-net return only).
Both tables are backtested on the version's held-out tail with the promotion gate's engine and fee
(``promotion.tail_metrics``). The margin, LLM-shaped minus unshaped in the gate's metric (positive:
the analyses helped), is recorded in the version's ``agent_state.metadata["ablation"]`` (with both
tables' metrics); the gate copies both runs into ``btc.backtests`` (policies ``qtable_llm_shaped``
and ``qtable_unshaped``, kind ``holdout``) and its verdict; ``qtrain models list`` and the demo show it.

``QTRAIN_PROMOTION_TWIN`` (``PromotionConfig.twin``) decides which table the version holds:

* ``better`` (default): the better of the two on the tail; the twin only when it beats the shaped
  table by more than ``QTRAIN_PROMOTION_MARGIN`` (a tie keeps the LLM's). The gate then holds that
  table to its bars, and says which table it was (``served``).
* ``bar`` and ``allow``: the LLM-shaped table. With ``bar`` the twin is one more bar of the gate
  (a version that loses to its own unshaped twin is not promoted); with ``allow`` the margin is
  shown and nothing else.

Deterministic: both tables depend only on the batch, the stored candles and the seed, and the
choice only on their backtests, so the same batch and seed give the same bytes. A version trained
without any analysed window, or without a held-out tail, has no twin (nothing to compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.metrics import json_safe
from model.qlearning import FastQLearning
from model.states import StateSpace
from worker.errors import BadInput
from worker.evaluation import backtest as evaluate
from worker.pipeline.promotion import PromotionConfig, tail_metrics

SHAPED, UNSHAPED = "llm_shaped", "unshaped"


@dataclass(frozen=True)
class Ablation:
    """Both tables' metrics on the held-out tail, the margin by the gate's metric, the table kept."""

    metric: str
    llm_shaped: float | None
    unshaped: float | None
    margin: float | None
    served: str
    rule: str
    metrics: dict[str, dict[str, float | None]]

    def to_json(self) -> dict[str, Any]:
        """The ``ablation`` entry of the version's metadata."""
        return {
            "metric": self.metric, "llm_shaped": self.llm_shaped, "unshaped": self.unshaped,
            "margin": self.margin, "served": self.served, "rule": self.rule, "metrics": self.metrics,
        }  # fmt: skip


def choose(cfg: PromotionConfig, shaped: dict[str, Any], unshaped: dict[str, Any]) -> Ablation:
    """The ablation of two tables' tail metrics (JSON-safe): the margin and which table the
    version keeps under ``cfg.twin`` (module docstring)."""
    a, b = shaped.get(cfg.metric), unshaped.get(cfg.metric)
    served = UNSHAPED if cfg.twin == "better" and cfg.beats(b, a) else SHAPED  # a tie keeps the LLM's
    return Ablation(
        metric=cfg.metric, llm_shaped=a, unshaped=b, margin=cfg.margin_of(a, b), served=served, rule=cfg.twin,
        metrics={SHAPED: shaped, UNSHAPED: unshaped},
    )  # fmt: skip


def measure(
    url: str, symbol: str, timeframe: str, tail: tuple[int, int], space: StateSpace,
    shaped: FastQLearning, twin: FastQLearning, cfg: PromotionConfig,
) -> Ablation | None:  # fmt: skip
    """Backtest ``shaped`` and its unshaped ``twin`` on the tail ``[since, until)``; None when the
    tail holds fewer than 2 candles (the gate will say so)."""
    if tail[1] <= tail[0]:
        return None
    try:
        ctx, start = evaluate.load_range(url, symbol, timeframe, *tail)
    except BadInput:
        return None
    runs = {
        name: json_safe(tail_metrics(t.q, space, ctx, start))
        for name, t in ((SHAPED, shaped), (UNSHAPED, twin))
    }
    return choose(cfg, runs[SHAPED], runs[UNSHAPED])


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
    if record.get("served") == UNSHAPED:
        text += " (the version holds the unshaped twin)"
    return text
