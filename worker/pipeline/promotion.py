"""The promotion gate: a new Q-table version is trusted only when it beats what runs now.

``evaluate_and_promote`` backtests a new version on its held-out tail ``[train_until,
holdout_until)`` (candles its training never saw), records the runs in ``btc.backtests`` (kind
``holdout``), and marks the version ``promoted`` only when, by the configured criterion, it beats
ALL of: buy-and-hold, the median of ``DEFAULT_RANDOM_SEEDS`` seeded random policies (luck: one
random run is luck too, its median is the bar a table must clear to claim skill), and the currently
promoted version backtested on the same tail (the first version of a symbol has none). The result
records each margin (how much better, in the metric's units, positive = better), so a person sees
by how much, not just yes or no. Criterion, from ``Settings`` (``PromotionConfig.from_settings``):

* ``QTRAIN_PROMOTION_METRIC`` (default ``sharpe``): any metric of ``model.metrics``; higher is
  better, except ``LOWER_IS_BETTER`` ones (drawdown, volatility, fees).
* ``QTRAIN_PROMOTION_MARGIN`` (default 0): the new value must be better by MORE than this margin
  (in the metric's units). NaN never wins.

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

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.baselines import DEFAULT_RANDOM_SEEDS, random_policy_metrics
from model.features import compute_features
from model.metrics import METRIC_NAMES, json_safe
from model.policies import buy_and_hold, qtable_policy
from worker.errors import BadInput, TemporaryError
from worker.evaluation import backtest as evaluate
from worker.settings import Settings
from worker.store import db, versions

log = logging.getLogger("qtrain.promotion")

DEFAULT_METRIC = "sharpe"
DEFAULT_MARGIN = 0.0
LOWER_IS_BETTER = frozenset(
    {"max_drawdown_pct", "max_drawdown_duration_candles", "max_drawdown_duration_days", "volatility_ann_pct",
     "fees_paid"}
)  # fmt: skip
GATE = "gate"
FEE = 0.001
"""Fee per side of the holdout backtests (the engine's default)."""


@dataclass(frozen=True)
class PromotionConfig:
    """The promotion criterion: which metric, and by how much a version must win."""

    metric: str = DEFAULT_METRIC
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise BadInput(
                f"QTRAIN_PROMOTION_METRIC {self.metric!r} is not a metric: use one of"
                f" {', '.join(METRIC_NAMES)}"
            )
        if not math.isfinite(self.margin) or self.margin < 0:
            raise BadInput(f"QTRAIN_PROMOTION_MARGIN must be a number >= 0, got {self.margin}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PromotionConfig:
        """Read ``QTRAIN_PROMOTION_METRIC`` and ``QTRAIN_PROMOTION_MARGIN`` of ``env`` (unset: defaults)."""
        return cls.parse(
            env.get("QTRAIN_PROMOTION_METRIC", DEFAULT_METRIC), env.get("QTRAIN_PROMOTION_MARGIN")
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionConfig:
        """The criterion of a process's settings (its environment, read once by ``Settings``)."""
        return cls.parse(settings.promotion_metric, settings.promotion_margin)

    @classmethod
    def parse(cls, metric: str, margin: str | None) -> PromotionConfig:
        """Validate the texts of the two settings; BadInput (one line) naming the bad one."""
        raw = str(DEFAULT_MARGIN) if margin is None else margin
        try:
            value = float(raw)
        except ValueError:
            raise BadInput(f"QTRAIN_PROMOTION_MARGIN must be a number, got {raw!r}") from None
        return cls(metric=metric.strip(), margin=value)

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


def _switch(
    cur: Any, symbol: str, version: int, *, by: str, kind: str, details: dict[str, Any]
) -> int | None:
    """Make ``version`` the one promoted version (caller holds the lock); the previous one or None."""
    cur.execute("SELECT version FROM btc.agent_state WHERE symbol = %s AND promoted", (symbol,))
    row = cur.fetchone()
    previous = None if row is None else int(row[0])
    cur.execute("UPDATE btc.agent_state SET promoted = false WHERE symbol = %s AND promoted", (symbol,))
    cur.execute(
        "UPDATE btc.agent_state SET promoted = true, promoted_at = now(), promoted_by = %s"
        " WHERE symbol = %s AND version = %s",
        (by, symbol, version),
    )
    cur.execute(
        "INSERT INTO btc.promotions (symbol, version, previous_version, by, kind, details)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (symbol, version, previous, by, kind, json.dumps(details)),
    )
    return previous


def _tail_metrics(v: versions.StoredVersion, ctx: Any, start: int) -> dict[str, float]:
    m = v.space.encode(compute_features(ctx))[start:]
    test = ctx.slice(start, len(ctx))
    runs = evaluate.run_policies(test, {"q": qtable_policy(v.learner.q, m)}, fee=FEE, slippage_bps=0.0)
    return runs["q"].metrics


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


def _decide(cfg: PromotionConfig, runs: dict[str, dict[str, float]], incumbent: int | None) -> dict[str, Any]:
    """The gate's verdict: the values, the margin over each bar (positive = better), and why."""
    value = runs["qtable"][cfg.metric]
    bars = {name: runs[name][cfg.metric] for name, _ in _BARS}
    labels = dict(_BARS)
    if "incumbent_qtable" in runs:
        bars["incumbent"] = runs["incumbent_qtable"][cfg.metric]
        labels["incumbent"] = f"promoted version {incumbent}"
    out: dict[str, Any] = json_safe({"value": value, **{k: v for k, v in bars.items() if k != "incumbent"}})
    out["incumbent_value"] = json_safe({"v": bars["incumbent"]})["v"] if "incumbent" in bars else None
    out["margins"] = {name: cfg.margin_of(value, bar) for name, bar in bars.items()}
    losses = [labels[name] for name, bar in bars.items() if not cfg.beats(value, bar)]
    out["promoted"] = not losses
    if losses:
        out["reason"] = f"{cfg.metric} does not beat {' nor '.join(losses)} on the held-out tail"
    else:
        out["reason"] = "beats " + ", ".join(labels[name] for name in bars)
    return out


def evaluate_and_promote(
    settings: Settings, symbol: str, version: int, *, config: PromotionConfig | None = None
) -> dict[str, Any]:
    """Backtest ``version`` on its held-out tail, record it, promote it if it wins, mark it gated;
    a tiny summary with the margins."""
    cfg = config or PromotionConfig.from_settings(settings)
    url = settings.database_url
    new = versions.load_version(url, symbol, version)
    tail = new.holdout()
    out: dict[str, Any] = {"version": version, "metric": cfg.metric, "promoted": False}
    if tail is None:
        out["reason"] = "no held-out tail (holdout 0): promote by hand with `qtrain models promote`"
        with db.transaction(url) as cur:
            versions.mark_gated(cur, symbol, version)
        versions.sync_model_file(settings, symbol)
        return out
    ctx, start = evaluate.load_range(url, symbol, new.timeframe, *tail)
    since = int(ctx.ts[start])
    with db.transaction(url) as cur:
        versions.lock_symbol(cur, symbol)
        incumbent = versions.promoted_version(cur, symbol)
        runs = _tail_runs(new, incumbent, ctx, start)
        params: dict[str, Any] = {"fee": FEE, "slippage_bps": 0.0, "metric": cfg.metric, "margin": cfg.margin,
                                  "random_seeds": DEFAULT_RANDOM_SEEDS}  # fmt: skip
        if "incumbent_qtable" in runs and incumbent is not None:
            params["incumbent_version"] = incumbent.version
        for policy, metrics in runs.items():
            evaluate.insert_backtest(cur, symbol, version, since, tail[1], policy, "holdout", params, metrics)
        out["incumbent"] = incumbent.version if incumbent is not None else None
        if incumbent is not None and incumbent.version == version:
            out.update(promoted=False, reason="already promoted")
        else:
            out.update(_decide(cfg, runs, out["incumbent"]))
        if out["promoted"]:
            details = {
                k: out.get(k) for k in ("metric", "value", "buy_and_hold", "random_median", "incumbent")
            }
            _switch(cur, symbol, version, by=GATE, kind=GATE, details={**details, "margins": out["margins"]})
        versions.mark_gated(cur, symbol, version)
    versions.sync_model_file(settings, symbol)
    return out


def gate(settings: Settings, symbol: str, version: int) -> dict[str, Any]:
    """Run the promotion gate on a committed version; a failure is recorded (the version stays,
    gated, not promoted), never raised, unless even recording it fails (TemporaryError: retry)."""
    try:
        return evaluate_and_promote(settings, symbol, version)
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
        cur.execute(
            "INSERT INTO btc.promotions (symbol, version, previous_version, by, kind, details)"
            " VALUES (%s, %s, NULL, %s, 'gate_failed', %s)",
            (symbol, version, GATE, json.dumps({"error": error[:500]})),
        )
        versions.mark_gated(cur, symbol, version)


def rollback_target(cur: Any, symbol: str) -> int | None:
    """The version promoted before the current one: the promotion log replayed as a stack
    (a promotion pushes, a rollback pops back to its target)."""
    cur.execute(
        "SELECT version, kind FROM btc.promotions WHERE symbol = %s"
        " AND kind IN ('gate', 'manual', 'rollback') ORDER BY id",
        (symbol,),
    )
    stack: list[int] = []
    for version, kind in cur.fetchall():
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
        cur.execute(
            "SELECT promoted FROM btc.agent_state WHERE symbol = %s AND version = %s", (symbol, version)
        )
        row = cur.fetchone()
        if row is None:
            raise BadInput(versions.no_version(symbol, version))
        kind = "rollback" if rollback else "manual"
        previous = _switch(cur, symbol, version, by=by, kind=kind, details={})
    path = versions.sync_model_file(settings, symbol)
    return {"symbol": symbol, "version": version, "previous": previous, "kind": kind, "by": by,
            "model_file": str(path) if path else None}  # fmt: skip
