"""The promotion gate: a new Q-table version is trusted only when it beats what runs now.

``evaluate_and_promote`` backtests a new version on its held-out tail ``[train_until,
holdout_until)`` (candles its training never saw), records the runs in ``btc.backtests`` (kind
``holdout``), and marks the version ``promoted`` only when, by the configured criterion, it beats
ALL of: buy-and-hold, the median of ``DEFAULT_RANDOM_SEEDS`` seeded random policies (luck: one
random run is luck too, its median is the bar a table must clear to claim skill), and the currently
promoted version backtested on the same tail (the first version of a symbol has none). The result
records each margin (how much better, in the metric's units, positive = better), so a person sees
by how much, not just yes or no. Criterion, from ``Settings`` (``PromotionConfig.from_settings``):

* ``QTRAIN_PROMOTION_METRIC`` (default ``sharpe``): any metric of ``model.evaluation.metrics``; higher is
  better, except ``LOWER_IS_BETTER`` ones (drawdown, volatility, fees).
* ``QTRAIN_PROMOTION_MARGIN`` (default 0): the new value must be better by MORE than this margin
  (in the metric's units). NaN never wins; a tie is not a win.
* ``QTRAIN_PROMOTION_MIN_DAYS`` (default 30) and ``QTRAIN_PROMOTION_MIN_TRADES`` (default 3): the
  evidence a verdict needs. A held-out tail shorter than that many days, or on which the table
  closes fewer trades, says ``insufficient evidence`` and promotes nothing: the version is stored
  and exported as "latest, not promoted" (``models/fast_model_{SYMBOL}.npz`` while nothing is
  promoted), and the gate's line says what would be needed. 30 days is also where annualised
  figures start to mean something (``model.evaluation.metrics.MIN_DAYS_TO_ANNUALISE``); 3 round trips is the
  fewest that separate a trading rule from one lucky entry, and the ``pooled`` recipe, which trades
  a few times a quarter, gets them on the tail of a batch of a year or more (the tail is
  ``--holdout`` 20% of the range: a year gives 73 days; ``bench/gate_evidence.py``: one-year
  BTC/ETH batches closed a median of 7.5 trades there, 3 or more in 9 of 12). Either may be 0.
* A table that never trades on the tail (0 closed trades, never in the market) never displaces a
  promoted version, whatever the settings: "doing nothing" is not a better model.
* ``QTRAIN_PROMOTION_TWIN`` (default ``better``): what the gate does with the version's unshaped
  twin (the same batch trained without its analyses, ``worker.pipeline.ablation``): ``better``
  (the reducer keeps the better of the two tables as the version, and the gate says which),
  ``bar`` (the LLM-shaped table is kept and its twin is one more bar it must beat) or ``allow``
  (the LLM-shaped table is kept and may be promoted even when its twin beats it).
* ``QTRAIN_PROMOTION_CONTROLS`` (default ``show``): what the gate does with the version's negative
  controls (the same batch trained on its analyses moved to the wrong windows, ``shuffled``, and
  on its most common answer everywhere, ``constant``; ``model.evaluation.controls``). ``show``: their margins
  are recorded and shown, the version is served as the rules above say. ``require``: the version
  holds the LLM-shaped table only when it beats BOTH controls on the tail (by more than the
  margin, like every bar); otherwise it holds its unshaped twin, whatever ``QTRAIN_PROMOTION_TWIN``
  says, and the gate holds that table to its usual bars (an analysis whose content does not beat
  its own shuffled or constant answers is not served).

The verdict (``agent_state.gate``, migration 0010) names every bar the version was held to, the
promoted version included, with its value and margin, which bar(s) decided, and the LLM's margin
over the twin and over the best control ("content adds ... over shuffled");
``worker.pipeline.records.gate_line`` is its one-line form.

Exactly one version per symbol is promoted: every switch runs in one transaction under the
reducer's per-symbol advisory lock, and a partial unique index (migration 0003) enforces it. Each
switch is logged in ``btc.promotions`` (who, when, the previous version); a person's
``qtrain models promote|rollback`` goes through ``set_promoted`` and is logged the same way.

Model files (decision): ``models/fast_model_{SYMBOL}.npz`` is what the trader runs, so it always
holds the PROMOTED version, rewritten on every promotion, promote and rollback. Every new version
is written to ``models/versions/fast_model_{SYMBOL}_v{N}.npz`` by the reducer. While a symbol has
no promoted version at all, ``fast_model_{SYMBOL}.npz`` holds its latest version and the JSON
sidecar says ``"promoted": false`` (a trader needs a table; nothing vetted exists yet).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.candles import Candles
from model.evaluation.baselines import DEFAULT_RANDOM_SEEDS, random_policy_metrics
from model.evaluation.metrics import METRIC_NAMES, json_safe
from model.evaluation.policies import buy_and_hold, qtable_policy
from model.features import compute_features
from model.learning.states import StateSpace
from worker.errors import BadInput, TemporaryError
from worker.evaluation import backtest as evaluate
from worker.settings import Settings
from worker.store import db, promotions, versions

log = logging.getLogger("qtrain.promotion")

DEFAULT_METRIC = "sharpe"
DEFAULT_MARGIN = 0.0
DEFAULT_MIN_DAYS = 30.0
"""Days of held-out tail a verdict needs (QTRAIN_PROMOTION_MIN_DAYS; module docstring)."""
DEFAULT_MIN_TRADES = 3
"""Closed trades on the held-out tail a verdict needs (QTRAIN_PROMOTION_MIN_TRADES)."""
MAX_MIN_DAYS = 3650.0
MAX_MIN_TRADES = 100_000
INSUFFICIENT = "insufficient evidence"
LOWER_IS_BETTER = frozenset(
    {
        "max_drawdown_pct",
        "max_drawdown_duration_candles",
        "max_drawdown_duration_days",
        "volatility_ann_pct",
        "fees_paid",
    }
)
GATE = "gate"
TWIN_RULES = ("better", "bar", "allow")
"""Values of ``QTRAIN_PROMOTION_TWIN`` (module docstring); the first is the default."""
CONTROL_RULES = ("show", "require")
"""Values of ``QTRAIN_PROMOTION_CONTROLS`` (module docstring); the first is the default."""
CONTROL_NAMES = ("shuffled", "constant")
"""The negative controls' keys in a version's ablation metrics (``model.evaluation.controls.CONTROLS``)."""
FEE = 0.001
"""Fee per side of the holdout backtests (the engine's default)."""


@dataclass(frozen=True)
class PromotionConfig:
    """The promotion criterion: which metric, and by how much a version must win."""

    metric: str = DEFAULT_METRIC
    margin: float = DEFAULT_MARGIN
    twin: str = TWIN_RULES[0]
    controls: str = CONTROL_RULES[0]
    min_days: float = DEFAULT_MIN_DAYS
    min_trades: int = DEFAULT_MIN_TRADES

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise BadInput(
                f"QTRAIN_PROMOTION_METRIC {self.metric!r} is not a metric: use one of"
                f" {', '.join(METRIC_NAMES)}"
            )
        if not math.isfinite(self.margin) or self.margin < 0:
            raise BadInput(f"QTRAIN_PROMOTION_MARGIN must be a number >= 0, got {self.margin}")
        if self.twin not in TWIN_RULES:
            raise BadInput(
                f"QTRAIN_PROMOTION_TWIN {self.twin!r} is not one of {', '.join(TWIN_RULES)}: fix it, or unset"
                f" it (default {TWIN_RULES[0]})"
            )
        if self.controls not in CONTROL_RULES:
            raise BadInput(
                f"QTRAIN_PROMOTION_CONTROLS {self.controls!r} is not one of {', '.join(CONTROL_RULES)}:"
                f" fix it, or unset it (default {CONTROL_RULES[0]})"
            )
        if not (math.isfinite(self.min_days) and 0 <= self.min_days <= MAX_MIN_DAYS):
            raise BadInput(
                f"QTRAIN_PROMOTION_MIN_DAYS must be a number of days from 0 to {MAX_MIN_DAYS:g}, got"
                f" {self.min_days:g}: fix it, or unset it (default {DEFAULT_MIN_DAYS:g})"
            )
        if not 0 <= self.min_trades <= MAX_MIN_TRADES:
            raise BadInput(
                f"QTRAIN_PROMOTION_MIN_TRADES must be a whole number from 0 to {MAX_MIN_TRADES}, got"
                f" {self.min_trades}: fix it, or unset it (default {DEFAULT_MIN_TRADES})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PromotionConfig:
        """Read ``QTRAIN_PROMOTION_METRIC``, ``_MARGIN``, ``_TWIN``, ``_CONTROLS``, ``_MIN_DAYS`` and
        ``_MIN_TRADES`` of ``env`` (unset: defaults)."""
        return cls.parse(
            env.get("QTRAIN_PROMOTION_METRIC", DEFAULT_METRIC),
            env.get("QTRAIN_PROMOTION_MARGIN"),
            env.get("QTRAIN_PROMOTION_TWIN"),
            env.get("QTRAIN_PROMOTION_CONTROLS"),
            min_days=env.get("QTRAIN_PROMOTION_MIN_DAYS"),
            min_trades=env.get("QTRAIN_PROMOTION_MIN_TRADES"),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionConfig:
        """The criterion of a process's settings (its environment, read once by ``Settings``)."""
        return cls.parse(
            settings.promotion_metric,
            settings.promotion_margin,
            settings.promotion_twin,
            settings.promotion_controls,
            min_days=settings.promotion_min_days,
            min_trades=settings.promotion_min_trades,
        )

    @classmethod
    def parse(
        cls,
        metric: str,
        margin: str | None,
        twin: str | None = None,
        controls: str | None = None,
        *,
        min_days: str | None = None,
        min_trades: str | None = None,
    ) -> PromotionConfig:
        """Validate the texts of the settings; BadInput (one line) naming the bad one."""
        raw = str(DEFAULT_MARGIN) if margin is None else margin
        try:
            value = float(raw)
        except ValueError:
            raise BadInput(f"QTRAIN_PROMOTION_MARGIN must be a number, got {raw!r}") from None
        rule = (twin or "").strip().lower() or TWIN_RULES[0]
        need = (controls or "").strip().lower() or CONTROL_RULES[0]
        days = _number("QTRAIN_PROMOTION_MIN_DAYS", min_days, DEFAULT_MIN_DAYS, MAX_MIN_DAYS)
        trades = _number(
            "QTRAIN_PROMOTION_MIN_TRADES", min_trades, DEFAULT_MIN_TRADES, MAX_MIN_TRADES, whole=True
        )
        return cls(
            metric=metric.strip(),
            margin=value,
            twin=rule,
            controls=need,
            min_days=days,
            min_trades=int(trades),
        )

    def margin_of(self, new: float | None, old: float | None) -> float | None:
        """How much better ``new`` is than ``old`` in the metric's units (positive: better; None: unknown)."""
        if new is None or old is None or math.isnan(new) or math.isnan(old):
            return None
        return old - new if self.metric in LOWER_IS_BETTER else new - old

    def beats(self, new: float | None, old: float | None) -> bool:
        """True when ``new`` is better than ``old`` by more than the margin (None/NaN never wins)."""
        if new is None or math.isnan(new):
            return False
        if old is None or math.isnan(old):
            return True
        if self.metric in LOWER_IS_BETTER:
            return new < old - self.margin
        return new > old + self.margin


def _number(name: str, raw: str | None, default: float, high: float, *, whole: bool = False) -> float:
    """The text of an evidence setting as a number in [0, high] (unset or empty: ``default``)."""
    text = (raw or "").strip()
    if not text:
        return float(default)
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value <= high):
        kind = "a whole number" if whole else "a number of days"
        raise BadInput(
            f"{name}={text!r} is not {kind} from 0 to {high:g}: fix it, or unset it (default {default:g})"
        )
    return value


def _switch(
    cur: Any, symbol: str, version: int, *, by: str, kind: str, details: dict[str, Any]
) -> int | None:
    """Make ``version`` the one promoted version (caller holds the lock); the previous one or None."""
    previous = versions.promoted_number(cur, symbol)
    versions.mark_promoted(cur, symbol, version, by=by)
    promotions.log_promotion(cur, symbol, version, previous, by=by, kind=kind, details=details)
    return previous


def tail_metrics(q: Any, space: StateSpace, ctx: Candles, start: int) -> dict[str, float]:
    """Metrics of Q-table ``q`` (on ``space``) backtested on ``ctx[start:]``, features warmed up on
    the candles before ``start``: the gate's engine, fee and slippage."""
    m = space.encode(compute_features(ctx))[start:]
    test = ctx.slice(start, len(ctx))
    runs = evaluate.run_policies(test, {"q": qtable_policy(q, m)}, fee=FEE, slippage_bps=0.0)
    return runs["q"].metrics


def _tail_metrics(v: versions.StoredVersion, ctx: Any, start: int) -> dict[str, float]:
    return tail_metrics(v.learner.q, v.space, ctx, start)


def _tail_runs(
    new: versions.StoredVersion, incumbent: versions.StoredVersion | None, ctx: Any, start: int
) -> dict[str, dict[str, float]]:
    """Metrics of the new table, buy-and-hold, the random-policy median and the incumbent on the tail."""
    test = ctx.slice(start, len(ctx))
    runs = {
        "qtable": _tail_metrics(new, ctx, start),
        "buy_and_hold": evaluate.run_policies(
            test, {"b": buy_and_hold(len(test))}, fee=FEE, slippage_bps=0.0
        )["b"].metrics,
        "random_median": random_policy_metrics(test, seeds=DEFAULT_RANDOM_SEEDS, fee=FEE),
    }
    if incumbent is not None and incumbent.version != new.version:
        runs["incumbent_qtable"] = _tail_metrics(incumbent, ctx, start)
    return runs


_BARS = (("buy_and_hold", "buy-and-hold"), ("random_median", "the random-policy median"))


def _decide(
    cfg: PromotionConfig,
    runs: dict[str, dict[str, float]],
    incumbent: int | None,
    *,
    twin: float | None = None,
    days: float | None = None,
) -> dict[str, Any]:
    """The gate's verdict: the values, every bar it was held to (its value, the margin over it,
    positive = better, and whether it was beaten), which bar(s) decided, and why. ``twin``: the
    unshaped twin's value when it is a bar (``QTRAIN_PROMOTION_TWIN=bar``). ``days``: the tail's
    span; with the table's ``n_trades`` it is the evidence (``evidence``): too little of it, or a
    table that never trades against a promoted version, is never promoted (None: not checked)."""
    value = runs["qtable"][cfg.metric]
    bars = {name: runs[name][cfg.metric] for name, _ in _BARS}
    labels = dict(_BARS)
    if "incumbent_qtable" in runs:
        bars["incumbent"] = runs["incumbent_qtable"][cfg.metric]
        labels["incumbent"] = f"promoted version {incumbent}"
    if twin is not None:
        bars["unshaped_twin"] = twin
        labels["unshaped_twin"] = "its unshaped twin"
    out: dict[str, Any] = json_safe({"value": value, **{k: bars[k] for k, _ in _BARS}})
    out["incumbent_value"] = json_safe({"v": bars["incumbent"]})["v"] if "incumbent" in bars else None
    out["margins"] = {name: cfg.margin_of(value, bar) for name, bar in bars.items()}
    out["bars"] = [
        {
            "bar": name,
            "label": labels[name],
            "value": json_safe({"v": bar})["v"],
            "margin": out["margins"][name],
            "beaten": cfg.beats(value, bar),
        }
        for name, bar in bars.items()
    ]
    lost = [b for b in out["bars"] if not b["beaten"]]
    out["promoted"] = not lost
    if lost:
        out["decided_by"] = [b["bar"] for b in lost]
        why = [f"{b['label']} ({_why_not(cfg, b['margin'])})" for b in lost]
        out["reason"] = f"{cfg.metric} does not beat {' nor '.join(why)} on the held-out tail"
    else:
        closest = min(out["bars"], key=lambda b: b["margin"] if b["margin"] is not None else math.inf)
        out["decided_by"] = [closest["bar"]]  # cleared every bar; the closest call is named
        out["reason"] = "beats " + ", ".join(labels[name] for name in bars)
    found = evidence(cfg, runs["qtable"], days)
    if found is not None:
        out["evidence"] = found
        if not found["enough"]:
            out.update(promoted=False, decided_by=["evidence"], reason=found["reason"])
        elif found["never_trades"] and "incumbent" in bars:
            out.update(
                promoted=False,
                decided_by=["never_trades"],
                reason="it never trades on the held-out tail: doing nothing does not displace"
                f" {labels['incumbent']}",
            )
    return out


def evidence(cfg: PromotionConfig, table: Mapping[str, float], days: float | None) -> dict[str, Any] | None:
    """What the held-out tail shows of a table: its span in days, its closed trades, whether it ever
    held a position, and whether that is enough for a verdict (``cfg.min_days``, ``cfg.min_trades``),
    with the reason when not; None when ``days`` or the trade count is unknown."""
    trades = table.get("n_trades")
    if days is None or trades is None or math.isnan(trades):
        return None
    n, exposure = int(trades), table.get("exposure_pct", 0.0)
    never = n == 0 and not (exposure is not None and exposure > 0)
    short = []
    if days < cfg.min_days:
        short.append(f">= {cfg.min_days:g} days")
    if n < cfg.min_trades:
        short.append(f">= {cfg.min_trades} closed trades")
    out: dict[str, Any] = {
        "days": round(days, 2),
        "closed_trades": n,
        "never_trades": never,
        "min_days": cfg.min_days,
        "min_trades": cfg.min_trades,
        "enough": not short,
    }
    if short:
        out["reason"] = (
            f"{INSUFFICIENT}: {days:.1f} days and {n} closed trade{'s' if n != 1 else ''} on the held-out"
            f" tail, a verdict needs {' and '.join(short)} (QTRAIN_PROMOTION_MIN_DAYS,"
            " QTRAIN_PROMOTION_MIN_TRADES)"
        )
    return out


def _evidence_hint(cfg: PromotionConfig, new: versions.StoredVersion, symbol: str, ev: dict[str, Any]) -> str:
    """What would give the gate enough evidence: a longer range (the tail is a share of it), a lower
    setting, or a person's promotion."""
    meta = new.metadata
    span = int(meta["holdout_until"]) - int(meta.get("train_since") or meta["train_until"])
    share = (int(meta["holdout_until"]) - int(meta["train_until"])) / span if span > 0 else 0.0
    need = (
        f" (the tail is its last {share:.0%}: >= {cfg.min_days / share:.0f} days of candles)"
        if share > 0
        else ""
    )
    return (
        f"train on a longer range{need if ev['days'] < cfg.min_days else ''} for more days and trades, or"
        f" promote it by hand: `qtrain models promote --symbol {symbol} --version {new.version}`"
    )


def _why_not(cfg: PromotionConfig, margin: float | None) -> str:
    """Why a margin is not a win: unknown, a tie, within the required margin, or a loss."""
    if margin is None:
        return "no value to compare"
    if margin == 0:
        return "a tie: it must be better"
    if margin > 0:
        return f"{margin:+.3g}, within the required margin {cfg.margin:g}"
    return f"{margin:+.3g}"


def evaluate_and_promote(
    settings: Settings,
    symbol: str,
    version: int,
    *,
    config: PromotionConfig | None = None,
    once: bool = False,
) -> dict[str, Any]:
    """Backtest ``version`` on its held-out tail, record it, promote it if it wins, mark it gated;
    a tiny summary with the margins. ``once``: when the version's gate has already run (a duplicate
    reducer task got there first, under the lock), return its recorded verdict and change nothing."""
    cfg = config or PromotionConfig.from_settings(settings)
    url = settings.database_url
    new = versions.load_version(url, symbol, version)
    tail = new.holdout()
    out: dict[str, Any] = {"version": version, "metric": cfg.metric, "promoted": False}
    if tail is None:
        out["reason"] = "no held-out tail (holdout 0): promote by hand with `qtrain models promote`"
        with db.transaction(url) as cur:
            versions.record_gate(cur, symbol, version, out)
            versions.mark_gated(cur, symbol, version)
        versions.sync_model_file(settings, symbol)
        return out
    ctx, start = evaluate.load_range(url, symbol, new.timeframe, *tail)
    since = int(ctx.ts[start])
    ablation = twin_record(cfg, new.metadata.get("ablation"))
    with db.transaction(url) as cur:
        versions.lock_symbol(cur, symbol)
        earlier = versions.gate_verdict(cur, symbol, version) if once else None
        if earlier is not None:  # else its "already promoted" would overwrite the verdict that promoted it
            return earlier
        incumbent = versions.promoted_version(cur, symbol)
        runs = _tail_runs(new, incumbent, ctx, start)
        if ablation is not None:  # the reducer's backtests of both tables on this tail
            for name, m in new.metadata["ablation"]["metrics"].items():  # stored JSON-safe: None is NaN
                runs[f"qtable_{name}"] = {k: math.nan if v is None else v for k, v in m.items()}
        params: dict[str, Any] = {
            "fee": FEE,
            "slippage_bps": 0.0,
            "metric": cfg.metric,
            "margin": cfg.margin,
            "random_seeds": DEFAULT_RANDOM_SEEDS,
        }
        if "incumbent_qtable" in runs and incumbent is not None:
            params["incumbent_version"] = incumbent.version
        for policy, metrics in runs.items():
            evaluate.insert_backtest(cur, symbol, version, since, tail[1], policy, "holdout", params, metrics)
        out["incumbent"] = incumbent.version if incumbent is not None else None
        out["ablation"] = ablation
        twin = None
        if ablation is not None and cfg.twin == "bar" and ablation["served"] == "llm_shaped":
            twin = ablation["unshaped"]
        if incumbent is not None and incumbent.version == version:
            out.update(promoted=False, reason="already promoted")
        else:
            out.update(_decide(cfg, runs, out["incumbent"], twin=twin, days=(tail[1] - since) / 86_400))
            if out.get("decided_by") == ["evidence"]:
                out["reason"] += "; " + _evidence_hint(cfg, new, symbol, out["evidence"])
        if out["promoted"]:
            details = {
                k: out.get(k) for k in ("metric", "value", "buy_and_hold", "random_median", "incumbent")
            }
            _switch(cur, symbol, version, by=GATE, kind=GATE, details={**details, "margins": out["margins"]})
        versions.record_gate(cur, symbol, version, out)
        versions.mark_gated(cur, symbol, version)
    versions.sync_model_file(settings, symbol)
    return out


def twin_record(cfg: PromotionConfig, ablation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The LLM's margin over the unshaped twin by ``cfg``'s metric, from the version's ablation
    metadata (the reducer's backtests of both tables on the tail); None when it has none."""
    if not ablation or "metrics" not in ablation:
        return None
    shaped = ablation["metrics"]["llm_shaped"].get(cfg.metric)
    unshaped = ablation["metrics"]["unshaped"].get(cfg.metric)
    out = {
        "metric": cfg.metric,
        "llm_shaped": shaped,
        "unshaped": unshaped,
        "margin": cfg.margin_of(shaped, unshaped),
        "served": ablation["served"],
        "rule": ablation["rule"],
    }
    found = {c: ablation["metrics"][c].get(cfg.metric) for c in CONTROL_NAMES if c in ablation["metrics"]}
    if found:  # versions made before the controls have none
        best, margin = content_margin(cfg, shaped, found)
        out.update(
            controls=found,
            best_control=best,
            content_margin=margin,
            controls_rule=ablation.get("controls_rule", CONTROL_RULES[0]),
            controls_beaten=ablation.get("controls_beaten"),
        )
    return out


def content_margin(
    cfg: PromotionConfig, shaped: float | None, controls: Mapping[str, float | None]
) -> tuple[str | None, float | None]:
    """The best of the negative ``controls`` (name -> value) by ``cfg``'s metric (a tie: the first
    named) and the LLM-shaped table's margin over it (positive: the analyses' content adds);
    ``(None, None)`` when no control has a value."""
    known = {c: v for c, v in controls.items() if v is not None and not math.isnan(v)}
    if not known:
        return None, None
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    best = max(known, key=lambda c: sign * known[c])
    return best, cfg.margin_of(shaped, known[best])


def gate(settings: Settings, symbol: str, version: int) -> dict[str, Any]:
    """Run the promotion gate on a committed version; a failure is recorded (the version stays,
    gated, not promoted), never raised, unless even recording it fails (TemporaryError: retry)."""
    try:
        return evaluate_and_promote(settings, symbol, version, once=True)
    except Exception as exc:  # the version is committed: report the gate's failure, keep the version
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("promotion gate failed for %s version %s", symbol, version)
        try:
            record_failure(settings, symbol, version, error)
            versions.sync_model_file(settings, symbol)
        except Exception as again:
            raise TemporaryError(
                f"gate of {symbol} v{version} failed ({error}) and could not be recorded"
            ) from again
        return {"version": version, "promoted": False, "error": error}


def record_failure(settings: Settings, symbol: str, version: int, error: str) -> None:
    """Log a gate that could not run (kind ``gate_failed``), so ``models list`` can say so."""
    with db.transaction(settings.database_url) as cur:
        promotions.log_promotion(
            cur, symbol, version, None, by=GATE, kind="gate_failed", details={"error": error[:500]}
        )
        versions.record_gate(cur, symbol, version, {"promoted": False, "error": error[:500]})
        versions.mark_gated(cur, symbol, version)


def rollback_target(cur: Any, symbol: str) -> int | None:
    """The version promoted before the current one: the promotion log replayed as a stack
    (a promotion pushes, a rollback pops back to its target)."""
    stack: list[int] = []
    for version, kind in promotions.switch_history(cur, symbol):
        if kind == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(int(version))
        elif not stack or stack[-1] != version:
            stack.append(int(version))
    return stack[-2] if len(stack) >= 2 else None


def set_promoted(
    settings: Settings, symbol: str, version: int | None, *, by: str, rollback: bool = False
) -> dict[str, Any]:
    """A person's override: promote ``version`` (or, with ``rollback`` and no version, the previously
    promoted one), log who and when, rewrite the model file; a summary."""
    with db.transaction(settings.database_url) as cur:
        versions.lock_symbol(cur, symbol)
        if version is None:
            if not rollback:
                raise BadInput("give --version N")
            version = rollback_target(cur, symbol)
            if version is None:
                raise BadInput(
                    f"{symbol} has no previously promoted version to roll back to: give --to N"
                    f" (`qtrain models list --symbol {symbol}`)"
                )
        if not versions.has_version(cur, symbol, version):
            raise BadInput(versions.no_version(symbol, version))
        kind = "rollback" if rollback else "manual"
        previous = _switch(cur, symbol, version, by=by, kind=kind, details={})
    path = versions.sync_model_file(settings, symbol)
    return {
        "symbol": symbol,
        "version": version,
        "previous": previous,
        "kind": kind,
        "by": by,
        "model_file": str(path) if path else None,
    }
