"""The reducer: merge a symbol's analyses into a new Q-table version, once per batch.

Runs under the symbol's lock (``versions.lock_symbol``). Inputs are rebuilt from PostgreSQL
(candles of the batch's range and the analyses its windows point to, in window order), never from
task results, so the table depends only on the batch, the stored data and the seed: not on how
many workers ran or in which order tasks finished. Training uses the first ``1 - holdout`` of the
range; the tail is kept for the promotion backtest. How the table is trained (the recipe and its
reward) is ``model.learning.training``'s; the batch records its recipe (``params.recipe``, default
``model.learning.training.DEFAULT_RECIPE``). Warm start: when the symbol's latest version uses the same
state space, an iterative recipe (``qlearning``) continues from it (the trader's "load the
current Q-table"); ``sweep`` solves the batch's data to convergence and needs no warm start.

Pooled batches: with a pooled recipe (the default) and several symbols, each symbol's table is
trained on ALL the batch's symbols at once (``model.learning.training.train_pooled``), so a symbol's version
waits until every window of the batch is final (``pool_peers``; the runtime then enqueues every
symbol's reducer) and every symbol's training candles are cut at the earliest training end among
them: no candle of any symbol's holdout tail reaches any table. Each symbol still gets its own
version. The batch's ``params.pool`` (``worker.pipeline.dispatch.pool_param``) adds stored symbols
outside the batch (``stored_peers``; a one-symbol batch's default: the other symbols stored over its
training range): they contribute their candles of the batch's training range, cut at the same end,
unshaped (they have no windows, so nothing waits for them and they get no version); ``"none"``
trains each symbol alone. The version's ``pooled`` metadata names what was pooled and the cut.

What the analyses add: a batch with analysed windows also trains its unshaped twin (the same batch
without them) and its two negative controls (its analyses shuffled onto other windows of the
training range, and its most common answer everywhere: ``model.evaluation.controls``, applied per symbol
before a pooled recipe pools), and backtests all on the held-out tail; ``QTRAIN_PROMOTION_TWIN``
and ``QTRAIN_PROMOTION_CONTROLS`` say which table the version holds (``worker.pipeline.ablation``),
the metadata records them all.

Too many failed windows: when more than ``QTRAIN_MAX_FAILED_SHARE`` (default half) of a symbol's
windows failed (an LLM answering errors fails them all), no version is made from what is left:
``TooManyFailed`` names the share and the top reasons, and the batch is marked failed with it.

The reducer only makes the version; the task (``worker.runtime.tasks.reduce_symbol``) then runs the
promotion gate and marks the batch done, in that order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from model.candles import Candles, timeframe_seconds
from model.evaluation import controls
from model.evaluation.scoreboard import iso
from model.learning.pooled import PooledRecipe
from model.learning.qlearning import FastQLearning
from model.learning.states import StateSpace
from model.learning.training import AnalysedWindow, get_recipe, recipe_metadata, train_pooled, train_qtable
from worker.errors import BadInput, PermanentError
from worker.pipeline import ablation
from worker.pipeline.promotion import PromotionConfig
from worker.settings import DEFAULT_HOLDOUT, Settings
from worker.store import analyses, batches, db, versions
from worker.store.candles import load_candles


class TooManyFailed(PermanentError):
    """Raised when more of a symbol's windows failed than ``QTRAIN_MAX_FAILED_SHARE`` allows: no version."""


def check_failures(settings: Settings, cur: Any, batch_id: int, symbols: tuple[str, ...]) -> None:
    """TooManyFailed when a symbol of ``symbols`` has more failed windows than the allowed share
    (the message: the share, the setting and the top reasons with their counts)."""
    for symbol in symbols:
        failed, total = batches.failed_count_in(cur, batch_id, symbol)
        if total and failed / total > settings.max_failed_share:
            reasons = "; ".join(f"{n}x {why}" for why, n in batches.failure_reasons_in(cur, batch_id, symbol))
            raise TooManyFailed(
                f"{symbol}: {failed} of {total} windows failed, more than QTRAIN_MAX_FAILED_SHARE"
                f" {settings.max_failed_share:g} allows: no version made from the rest. Top reasons:"
                f" {reasons}"
            )


@dataclass(frozen=True)
class TrainInputs:
    """What the reducer trains on: the batch range minus its holdout tail, and the analysed windows."""

    train: Candles
    analysed: list[AnalysedWindow]
    range_since: int
    train_until: int
    range_until: int


@dataclass(frozen=True)
class Reduced:
    """The reducer's outcome: the batch's version for the symbol (None while windows are unfinished),
    whether this run created it, and whether its promotion gate has run already."""

    symbol: str
    version: int | None
    created: bool
    gated: bool = False
    sha256: str | None = None
    #: Another reducer of this batch and symbol is running (a duplicate message): it finishes the
    #: job (or, if its worker dies, the reaper enqueues the reducer again); a duplicate never waits.
    busy: bool = False


def train_inputs(settings: Settings, batch_id: int, spec: batches.BatchSpec, symbol: str) -> TrainInputs:
    """The batch's training candles (its range minus the holdout tail) and analysed windows."""
    candles = load_candles(settings.database_url, symbol, spec.timeframe, since=spec.since, until=spec.until)
    if len(candles) < 3:
        raise BadInput(f"{symbol}: fewer than 3 candles in the batch's range; import or fetch candles")
    holdout = float(spec.params.get("holdout", DEFAULT_HOLDOUT))
    n_train = max(2, int(round(len(candles) * (1.0 - holdout))))
    train = candles.slice(0, n_train)
    step = timeframe_seconds(spec.timeframe)
    train_until = int(train.ts[-1]) + step
    return TrainInputs(
        train=train,
        analysed=before(analyses.batch_analyses(settings.database_url, batch_id, symbol), train_until),
        range_since=int(candles.ts[0]),
        train_until=train_until,
        range_until=int(candles.ts[-1]) + step,
    )


def before(analysed: list[AnalysedWindow], until: int) -> list[AnalysedWindow]:
    """The analyses of windows that end before ``until`` (the training end): a window that runs
    into the held-out tail was analysed from candles of that tail, so its answer would carry the
    tail into the training part and flatter the gate's verdict on it (the scoreboard's rule too)."""
    return [a for a in analysed if a.end_ts < until]


@dataclass(frozen=True)
class Pool:
    """A pooled batch's training inputs: every symbol's, its training candles cut at ``until`` (the
    earliest training end among them)."""

    inputs: dict[str, TrainInputs]
    until: int

    def to_json(self) -> dict[str, Any]:
        """The version's ``pooled`` metadata: what was pooled, up to when."""
        return {"symbols": sorted(self.inputs), "train_until": self.until}


def is_pooled_batch(spec: batches.BatchSpec) -> bool:
    """Whether the batch trains with a pooled recipe."""
    recipe, overrides = batch_recipe(spec)
    return isinstance(get_recipe(recipe, **overrides), PooledRecipe)


def pool_peers(spec: batches.BatchSpec) -> tuple[str, ...]:
    """The batch's symbols a version of this batch waits for and is trained across: all of them
    with a pooled recipe, several symbols and a pool other than "none", else none (each symbol on
    its own windows; stored peers, ``stored_peers``, have no windows to wait for)."""
    if len(spec.symbols) < 2 or spec.params.get("pool") == "none" or not is_pooled_batch(spec):
        return ()
    return tuple(sorted(spec.symbols))


def stored_peers(spec: batches.BatchSpec) -> tuple[str, ...]:
    """The stored symbols outside the batch its pooled recipe also pools with (``params.pool``; a
    batch written before it pools its own symbols only)."""
    pool = spec.params.get("pool")
    if not isinstance(pool, list) or not is_pooled_batch(spec):
        return ()
    return tuple(sorted(str(s) for s in pool if s not in spec.symbols))


def build_pool(
    settings: Settings,
    batch_id: int,
    spec: batches.BatchSpec,
    peers: tuple[str, ...],
    stored: tuple[str, ...] = (),
) -> Pool:
    """Every peer's training inputs, cut at the earliest training end, and the ``stored`` symbols'
    candles of the batch's training range (from the peers' first candle to that end; a stored
    symbol with fewer than 2 there, or a candle without volume, is left out): see the module doc."""
    inputs = {s: train_inputs(settings, batch_id, spec, s) for s in peers}
    until = min(i.train_until for i in inputs.values())
    since = min(i.range_since for i in inputs.values())
    cut = {}
    for s, i in inputs.items():
        n = int(np.searchsorted(i.train.ts, until, side="left"))
        if n < 2:
            raise BadInput(
                f"{s}: fewer than 2 training candles before {iso(until)} (the pooled batch's common training"
                " end): give the batch's symbols overlapping ranges"
            )
        cut[s] = replace(i, train=i.train.slice(0, n), train_until=until, analysed=before(i.analysed, until))
    for s in stored:
        c = load_candles(settings.database_url, s, spec.timeframe, since=since, until=until)
        if len(c) >= 2 and not np.isnan(c.volume).any():
            cut[s] = TrainInputs(
                train=c, analysed=[], range_since=int(c.ts[0]), train_until=until, range_until=until
            )
    return Pool(cut, until)


def _warm_start(cur: Any, symbol: str, space: StateSpace) -> tuple[int, FastQLearning | None]:
    """The latest version number, and its table when it can seed this one (same state space)."""
    version, learner, meta = versions.latest_version(cur, symbol)
    if learner is None or meta.get("state_space") != space.to_json() or learner.q.shape[0] != space.n_states:
        return version, None
    return version, learner


def batch_recipe(spec: batches.BatchSpec) -> tuple[str, dict[str, Any]]:
    """The recipe a batch trains with and its parameter overrides (``params.recipe`` and
    ``params.recipe_params``; a batch written before recipes existed trained ``qlearning``)."""
    return str(spec.params.get("recipe", "qlearning")), dict(spec.params.get("recipe_params", {}))


def _analysed(spec: batches.BatchSpec, inputs: TrainInputs, control: str | None) -> list[AnalysedWindow]:
    """The analyses a table trains on: the batch's own, or their negative ``control`` over the
    training range (``model.evaluation.controls``, seeded by the batch's seed)."""
    if control is None:
        return list(inputs.analysed)
    return controls.control(
        control, inputs.analysed, since=inputs.range_since, until=inputs.train_until, seed=spec.seed
    )


def _train(
    spec: batches.BatchSpec,
    inputs: TrainInputs,
    initial: FastQLearning | None,
    space: StateSpace,
    *,
    shaped: bool = True,
    pool: Pool | None = None,
    symbol: str = "",
    control: str | None = None,
) -> Any:
    """The batch's table; ``shaped=False``: its unshaped twin (no analysis: shaping off, all else
    equal); ``control``: trained on that negative control of the analyses (each symbol's own, with
    a pool); with a ``pool``: ``symbol``'s table trained across the pool."""
    recipe, overrides = batch_recipe(spec)
    if pool is not None:
        trains = {s: i.train for s, i in pool.inputs.items()}
        analysed = {s: _analysed(spec, i, control) for s, i in pool.inputs.items()} if shaped else {}
        return train_pooled(trains, analysed, space=space, recipe=recipe, **overrides)[symbol]
    return train_qtable(
        inputs.train,
        _analysed(spec, inputs, control) if shaped else (),
        space=space,
        recipe=recipe,
        epochs=spec.epochs,
        seed=spec.seed,
        initial=initial,
        **overrides,
    )


def _with_twin(
    settings: Settings,
    spec: batches.BatchSpec,
    symbol: str,
    inputs: TrainInputs,
    initial: FastQLearning | None,
    space: StateSpace,
    pool: Pool | None = None,
) -> tuple[Any, Any, Any, ablation.Ablation | None]:
    """The batch's table, stats and data, and its ablation: when analyses shaped it, the unshaped
    twin and the negative controls trained and all backtested on the tail; the table kept is the
    one ``ablation.choose`` keeps."""
    learner, stats, data = _train(spec, inputs, initial, space, pool=pool, symbol=symbol)
    if data.n_windows == 0:
        return learner, stats, data, None
    twin, twin_stats, _ = _train(spec, inputs, initial, space, shaped=False, pool=pool, symbol=symbol)
    ctl = {}
    for c in controls.CONTROLS:
        ctl[c] = _train(spec, inputs, initial, space, pool=pool, symbol=symbol, control=c)[0]
    cfg = PromotionConfig.from_settings(settings)
    tail = (inputs.train_until, inputs.range_until)
    found = ablation.measure(
        settings.database_url, symbol, spec.timeframe, tail, space, learner, twin, cfg, controls=ctl
    )
    if found is not None and found.served == ablation.UNSHAPED:
        return twin, twin_stats, data, found
    return learner, stats, data, found


def make_version(settings: Settings, batch_id: int, symbol: str) -> Reduced:
    """Create this batch's Q-table version for ``symbol`` unless it exists (idempotent per batch)."""
    url = settings.database_url
    loaded = batches.load_batch(url, batch_id)
    if loaded is None:
        raise BadInput(f"batch {batch_id} does not exist")
    spec, _ = loaded
    with db.transaction(url) as cur:
        if not versions.try_lock_reducer(cur, batch_id, symbol):
            return Reduced(symbol, None, created=False, busy=True)
        versions.lock_symbol(cur, symbol)  # another batch's reducer or a promotion: wait (bounded)
        existing = versions.batch_version(cur, symbol, batch_id)
        if existing is not None:  # a second run, or a concurrent one that won the lock
            return Reduced(symbol, existing[0], created=False, gated=existing[1])
        peers = pool_peers(spec)
        if not batches.reducer_due_in(cur, batch_id, peers or (symbol,)):
            return Reduced(symbol, None, created=False)
        check_failures(settings, cur, batch_id, peers or (symbol,))
        pooled = is_pooled_batch(spec) and "pool" in spec.params  # (older batches: pooled only with peers)
        if peers or pooled:
            pool: Pool | None = build_pool(settings, batch_id, spec, peers or (symbol,), stored_peers(spec))
        else:
            pool = None
        inputs = pool.inputs[symbol] if pool is not None else train_inputs(settings, batch_id, spec, symbol)
        space = StateSpace.default()
        prev_version, initial = _warm_start(cur, symbol, space)
        learner, stats, data, ablated = _with_twin(settings, spec, symbol, inputs, initial, space, pool)
        version = prev_version + 1
        warm = initial is not None and bool(getattr(stats, "warm_start_used", True))
        metadata = _metadata(
            spec,
            batch_id,
            symbol,
            version,
            inputs,
            space,
            stats,
            data.n_windows,
            warm=prev_version if warm else None,
        )
        if pool is not None:
            metadata["pooled"] = pool.to_json()
        if ablated is not None and ablated.served == ablation.UNSHAPED:
            metadata["shaping"] = "off"  # the unshaped twin won on the tail (absent: the LLM-shaped table)
        blob = learner.to_bytes(metadata)  # no wall-clock values inside: same batch -> same bytes
        record = {**metadata, "ablation": ablated.to_json() if ablated is not None else None}
        digest = versions.insert_version(
            cur, symbol, version, batch_id, blob, {**record, "train_seconds": stats.seconds}
        )
    versions.write_version_file(settings, symbol, version, blob, record)
    return Reduced(symbol, version, created=True, sha256=digest)


def _metadata(
    spec: batches.BatchSpec,
    batch_id: int,
    symbol: str,
    version: int,
    inputs: TrainInputs,
    space: StateSpace,
    stats: Any,
    n_windows: int,
    *,
    warm: int | None,
) -> dict[str, Any]:
    """The version's metadata (saved inside the .npz and in ``agent_state``): the recipe (name and
    every parameter), the seed and epochs, the spans trained and held out."""
    recipe, overrides = batch_recipe(spec)
    return {
        "symbol": symbol,
        "timeframe": spec.timeframe,
        "version": version,
        "batch_id": batch_id,
        "warm_start_version": warm,
        "state_space": space.to_json(),
        "recipe": recipe_metadata(recipe, **overrides),
        "hyper_parameters": {"epochs": spec.epochs, "seed": spec.seed},
        "train_since": inputs.range_since,
        "train_until": inputs.train_until,
        "holdout_until": inputs.range_until,
        "n_train_candles": len(inputs.train),
        "n_analysed_windows": n_windows,
        "analyst": spec.analyst,
        "model": spec.model,
        "prompt": batches.prompt_style(spec.prompt_version, spec.params.get("prompt")),
        "train_stats": {k: v for k, v in _jsonable(stats).items() if k != "seconds"},  # no wall clock
    }


def _jsonable(stats: Any) -> Any:
    if hasattr(stats, "__dataclass_fields__"):
        stats = asdict(stats)
    return json.loads(json.dumps(stats, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
