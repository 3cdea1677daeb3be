"""The promotion gate: a new Q-table version is trusted only when it beats what runs now.

``evaluate_and_promote`` backtests a new version on its held-out tail ``[train_until,
holdout_until)`` (candles its training never saw), records the runs in ``btc.backtests`` (kind
``holdout``), and marks the version ``promoted`` only when, by the configured criterion, it beats
BOTH buy-and-hold and the currently promoted version backtested on the same tail (the first
version of a symbol only has to beat buy-and-hold). Criterion, read once from the environment by
``PromotionConfig.from_env``:

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

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.features import compute_features
from model.metrics import METRIC_NAMES, json_safe
from model.policies import buy_and_hold, qtable_policy
from worker import db, evaluate
from worker.errors import BadInput, QtrainError
from worker.reduce import model_path, write_model_file
from worker.settings import Settings

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
    def from_env(cls, env: Mapping[str, str] | None = None) -> PromotionConfig:
        """Read ``QTRAIN_PROMOTION_METRIC`` and ``QTRAIN_PROMOTION_MARGIN`` (unset: the defaults)."""
        e = os.environ if env is None else env
        raw = e.get("QTRAIN_PROMOTION_MARGIN", str(DEFAULT_MARGIN))
        try:
            margin = float(raw)
        except ValueError:
            raise BadInput(f"QTRAIN_PROMOTION_MARGIN must be a number, got {raw!r}") from None
        return cls(metric=e.get("QTRAIN_PROMOTION_METRIC", DEFAULT_METRIC).strip(), margin=margin)

    def beats(self, new: float | None, old: float | None) -> bool:
        """True when ``new`` is better than ``old`` by more than the margin (None/NaN never wins)."""
        if new is None or math.isnan(new):
            return False
        if old is None or math.isnan(old):
            return True
        if self.metric in LOWER_IS_BETTER:
            return new < old - self.margin
        return new > old + self.margin


def _lock(cur: Any, symbol: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qtrain.reduce:{symbol}",))


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


def _tail_metrics(v: evaluate.StoredVersion, ctx: Any, start: int) -> dict[str, float]:
    m = v.space.encode(compute_features(ctx))[start:]
    test = ctx.slice(start, len(ctx))
    runs = evaluate.run_policies(test, {"q": qtable_policy(v.learner.q, m)}, fee=FEE, slippage_bps=0.0)
    return runs["q"].metrics


def evaluate_and_promote(
    settings: Settings, symbol: str, version: int, *, config: PromotionConfig | None = None
) -> dict[str, Any]:
    """Backtest ``version`` on its held-out tail, record it, promote it if it wins; a tiny summary."""
    cfg = config or PromotionConfig.from_env()
    url = settings.database_url
    new = evaluate.load_version(url, symbol, version)
    tail = new.holdout()
    out: dict[str, Any] = {"version": version, "metric": cfg.metric, "promoted": False}
    if tail is None:
        out["reason"] = "no held-out tail (holdout 0): promote by hand with `qtrain models promote`"
        sync_model_file(settings, symbol)
        return out
    ctx, start = evaluate.load_range(url, symbol, new.timeframe, *tail)
    test = ctx.slice(start, len(ctx))
    step_until = tail[1]
    with db.transaction(url) as cur:
        _lock(cur, symbol)
        incumbent = evaluate.promoted_version(cur, symbol)
        runs = {
            "qtable": _tail_metrics(new, ctx, start),
            "buy_and_hold": evaluate.run_policies(
                test, {"b": buy_and_hold(len(test))}, fee=FEE, slippage_bps=0.0
            )["b"].metrics,
        }
        if incumbent is not None and incumbent.version != version:
            runs["incumbent_qtable"] = _tail_metrics(incumbent, ctx, start)
        params = {"fee": FEE, "slippage_bps": 0.0, "metric": cfg.metric, "margin": cfg.margin}
        if "incumbent_qtable" in runs and incumbent is not None:
            params["incumbent_version"] = incumbent.version
        for policy, metrics in runs.items():
            evaluate.insert_backtest(cur, symbol, version, int(test.ts[0]), step_until, policy, "holdout",
                                     params, metrics)  # fmt: skip
        value = runs["qtable"][cfg.metric]
        bh = runs["buy_and_hold"][cfg.metric]
        inc = runs.get("incumbent_qtable", {}).get(cfg.metric)
        out.update(json_safe({"value": value, "buy_and_hold": bh}))
        out["incumbent"] = incumbent.version if incumbent is not None else None
        out["incumbent_value"] = json_safe({"v": inc})["v"] if inc is not None else None
        if incumbent is not None and incumbent.version == version:
            out["reason"] = "already promoted"
        elif not cfg.beats(value, bh):
            out["reason"] = f"{cfg.metric} does not beat buy-and-hold on the held-out tail"
        elif inc is not None and not cfg.beats(value, inc):
            out["reason"] = f"{cfg.metric} does not beat promoted version {out['incumbent']}"
        else:
            _switch(cur, symbol, version, by=GATE, kind=GATE, details={k: out[k] for k in
                    ("metric", "value", "buy_and_hold", "incumbent", "incumbent_value")})  # fmt: skip
            out["promoted"] = True
            out["reason"] = "beats buy-and-hold" + (
                f" and version {out['incumbent']}" if out["incumbent"] is not None else ""
            )
    sync_model_file(settings, symbol)
    return out


def record_failure(settings: Settings, symbol: str, version: int, error: str) -> None:
    """Log a gate that could not run (kind ``gate_failed``), so ``models list`` can say so."""
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            "INSERT INTO btc.promotions (symbol, version, previous_version, by, kind, details)"
            " VALUES (%s, %s, NULL, %s, 'gate_failed', %s)",
            (symbol, version, GATE, json.dumps({"error": error[:500]})),
        )


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
        _lock(cur, symbol)
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
            raise BadInput(evaluate.no_version(symbol, version))
        kind = "rollback" if rollback else "manual"
        previous = _switch(cur, symbol, version, by=by, kind=kind, details={})
    path = sync_model_file(settings, symbol)
    return {"symbol": symbol, "version": version, "previous": previous, "kind": kind, "by": by,
            "model_file": str(path) if path else None}  # fmt: skip


def sync_model_file(settings: Settings, symbol: str) -> Path | None:
    """Write ``fast_model_{SYMBOL}.npz`` (+ .json) from the promoted version, else the latest one;
    the sha256 is checked before writing. None when the symbol has no version."""
    with db.transaction(settings.database_url) as cur:
        cur.execute(
            "SELECT version, npz, sha256, metadata, promoted FROM btc.agent_state WHERE symbol = %s"
            " ORDER BY promoted DESC, version DESC LIMIT 1",
            (symbol,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    version, blob, digest, meta, promoted = int(row[0]), bytes(row[1]), row[2], row[3], bool(row[4])
    if hashlib.sha256(blob).hexdigest() != digest:
        raise QtrainError(f"{symbol} version {version}: stored table does not match its sha256; not written")
    meta = meta if isinstance(meta, dict) else json.loads(meta)
    path = model_path(settings.models_dir, symbol)
    write_model_file(settings.models_dir, symbol, blob, {**meta, "file_sha256": digest, "promoted": promoted},
                     path=path)  # fmt: skip
    return path
