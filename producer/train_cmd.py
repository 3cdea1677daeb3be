"""``qtrain train``, ``qtrain status``, ``qtrain resume``: batches from the user's side."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from producer.lazy import LazyChoice, LazyDefaultOption
from producer.options import parse_range, parse_symbols
from producer.pool_option import POOL_HELP, parse_pool
from worker.errors import BadInput, QtrainError
from worker.settings import (
    ANALYZE_QUEUE,
    DEFAULT_EPOCHS,
    DEFAULT_HOLDOUT,
    DEFAULT_STRIDE,
    DEFAULT_TIMEFRAME,
    DEFAULT_WINDOW,
    REDUCE_QUEUE,
    Settings,
)
from worker.store import batches

if TYPE_CHECKING:
    from rich.progress import Progress

    from worker.cluster.liveness import Watch

# worker.pipeline.dispatch (numpy, the model), rich and Celery are imported inside the commands that use
# them: `qtrain status --json` needs none of them and starts in a fraction of the time.

POLL_S = 0.5


class BatchFailed(QtrainError):
    """Raised when a batch being waited for ends in state ``failed``."""


@click.command()
@click.option("--symbols", required=True, help="Comma list, e.g. BTC-USDT,ETH-USDT.")
@click.option(
    "--epochs",
    default=DEFAULT_EPOCHS,
    show_default=True,
    type=int,
    help="Q-learning passes in the reducer: recipe qlearning only (pooled and sweep solve to convergence).",
)
@click.option("--timeframe", default=DEFAULT_TIMEFRAME, show_default=True)
@click.option(
    "--window", default=DEFAULT_WINDOW, show_default=True, type=int, help="Candles per analysed window."
)
@click.option(
    "--stride", default=DEFAULT_STRIDE, show_default=True, type=int, help="Candles between window starts."
)
@click.option("--since", default=None, help="First candle (YYYY-MM-DD or ISO 8601, UTC).")
@click.option("--until", default=None, help="End of range, exclusive.")
@click.option("--model", default=None, help="The LLM's model (default: QTRAIN_LLM_MODEL, else OLLAMA_MODEL).")
@click.option(
    "--analyst",
    type=LazyChoice("worker.pipeline.dispatch.ANALYSTS"),
    default="llm",
    show_default=True,
    help="llm: the server QTRAIN_LLM_API names (ollama: the same, its stored name); heuristic: no LLM.",
)
@click.option("--seed", default=None, type=int, help="Seed of the Q-learning (default: random, recorded).")
@click.option(
    "--recipe",
    type=LazyChoice("model.learning.training.RECIPES"),
    cls=LazyDefaultOption,
    lazy_default="model.learning.training.DEFAULT_RECIPE",
    show_default=True,
    help="How the reducer trains the Q-table (compare them with `qtrain evaluate`).",
)
@click.option("--pool", default=None, metavar="SYMBOLS|none", help=POOL_HELP)
@click.option(
    "--holdout", default=DEFAULT_HOLDOUT, show_default=True, type=float, help="Tail share kept for backtests."
)
@click.option("--wait", is_flag=True, help="Show progress until the batch is done, then a summary.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train(ctx: click.Context, **kw: Any) -> None:
    """Create a training batch, enqueue one analysis per window, print the batch id."""
    from worker.pipeline import dispatch
    from worker.pipeline.promotion import PromotionConfig
    from worker.runtime import publish

    settings = Settings.from_env()
    PromotionConfig.from_settings(settings)  # a bad QTRAIN_PROMOTION_* is one line now, not a failed gate
    since, until = parse_range(kw["since"], kw["until"])
    req = dispatch.TrainRequest(
        symbols=parse_symbols(kw["symbols"]),
        timeframe=kw["timeframe"],
        window=kw["window"],
        stride=kw["stride"],
        since=since,
        until=until,
        epochs=kw["epochs"],
        model=kw["model"],
        analyst=kw["analyst"],
        seed=kw["seed"],
        holdout=kw["holdout"],
        recipe=kw["recipe"],
        pool=parse_pool(kw["pool"]),
    )
    created = dispatch.create(settings, req)
    batch_id = created.batch_id
    given = ctx.get_parameter_source("epochs") == click.core.ParameterSource.COMMANDLINE
    if given and req.recipe != "qlearning" and not kw["as_json"]:  # after the checks: an error stays one line
        click.echo(f"note: --epochs is ignored by recipe {req.recipe} (only qlearning iterates)", err=True)
    if kw["wait"]:
        enqueue_with_progress(settings, batch_id, req.symbols, created.windows, quiet=kw["as_json"])
    else:
        publish.enqueue_batch(settings, batch_id, req.symbols)
    if not kw["as_json"]:
        skipped = ", ".join(f"{s}: {n}" for s, n in created.skipped.items())
        click.echo(f"batch {batch_id}: {created.windows} windows enqueued (skipped for gaps: {skipped})")
        click.echo(dispatch.pool_line(req.symbols, created.recipe, created.pool))
    if kw["wait"]:
        final = wait(settings, batch_id, timeout=kw["timeout"], quiet=kw["as_json"])
        if kw["as_json"]:
            found = verdicts(settings, final)
            click.echo(
                json.dumps({**final.to_json(), "verdicts": {s: line for s, (_, line) in found.items()}})
            )
        else:
            print_summary(final)
            print_verdicts(settings, final)
    elif kw["as_json"]:
        click.echo(json.dumps(created.to_json()))
    else:
        click.echo(batch_id)


def verdicts(settings: Settings, final: batches.BatchStatus) -> dict[str, tuple[dict[str, Any], str]]:
    """Per symbol of a finished batch: the gate's verdict on its version (``agent_state.gate``) and
    its one line (``records.gate_line``: promoted or not, and why)."""
    from worker.pipeline import records
    from worker.pipeline.promotion import PromotionConfig

    cfg = PromotionConfig.from_settings(settings)
    out = {}
    for symbol, s in final.symbols.items():
        rows = [
            r
            for r in records.version_records(settings.database_url, symbol, cfg)
            if r.row.version == s.q_version
        ]
        if rows:
            out[symbol] = (rows[0].row.gate or {}, records.gate_line(rows[0]))
    return out


def print_verdicts(settings: Settings, final: batches.BatchStatus) -> dict[str, dict[str, Any]]:
    """Print the gate's line for each symbol of a finished batch; the verdicts by symbol."""
    found = verdicts(settings, final)
    for _, line in found.values():
        click.echo(line)
    return {symbol: gate for symbol, (gate, _) in found.items()}


def _progress(quiet: bool) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from producer.console import make_console

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    # off a terminal (a log), make_console is wide: each line whole, never cut at 80 columns ("61…")
    return Progress(*columns, console=make_console(stderr=True, quiet=quiet), transient=False)


def enqueue_with_progress(
    settings: Settings, batch_id: int, symbols: tuple[str, ...], total: int, *, quiet: bool = False
) -> int:
    """Enqueue a new batch's windows with a progress bar (on stderr) of the messages sent."""
    from worker.runtime import publish

    t0 = time.monotonic()
    with _progress(quiet) as progress:
        task = progress.add_task("enqueue", total=max(1, total), detail="")

        def advance(sent: int, of: int) -> None:
            rate = sent / max(1e-9, time.monotonic() - t0)
            progress.update(task, completed=sent, total=max(1, of), detail=f"{rate:,.0f} msg/s")

        sent = publish.enqueue_batch(settings, batch_id, symbols, progress=advance)
        progress.update(task, completed=max(1, sent))
    return sent


def wait(
    settings: Settings, batch_id: int, *, timeout: float | None = None, quiet: bool = False
) -> batches.BatchStatus:
    """Poll the batch's state in PostgreSQL, with a progress bar per symbol, until it is done (its
    versions written and gated: the model files are then up to date)."""
    from worker.cluster.liveness import Watch

    deadline = None if timeout is None else time.monotonic() + timeout
    watch = Watch(settings.broker_url)
    with _progress(quiet) as progress:
        tasks: dict[str, Any] = {}
        while True:
            st = batches.batch_status(settings.database_url, batch_id)
            if st is None:
                raise BadInput(f"batch {batch_id} does not exist")
            if st.state not in ("done", "failed"):
                idle_line = watch.observe(st.finished, st.total)
                if idle_line:
                    progress.console.print(idle_line, markup=False, highlight=False, soft_wrap=True)
                    if quiet:
                        click.echo(idle_line, err=True)
            pace = _pace(watch, st.finished, st.total)
            for sym, s in st.symbols.items():
                detail = (
                    f"done {s.done} cached {s.cached} failed {s.failed}"
                    f" | {pace}"
                    f" | reduce {'v' + str(s.q_version) if s.reduced else '…'}"
                )
                if sym not in tasks:
                    tasks[sym] = progress.add_task(sym, total=max(1, s.total), detail=detail)
                progress.update(tasks[sym], completed=s.finished if s.total else 1, detail=detail)
            if st.state == "done":
                return st
            if st.state == "failed":
                if not quiet:
                    progress.stop()
                    print_summary(st)
                raise BatchFailed(f"batch {batch_id} failed: {st.error}")
            if deadline is not None and time.monotonic() > deadline:
                raise BadInput(
                    f"batch {batch_id} not done after {timeout:.0f} s; it goes on: `qtrain status {batch_id}`"
                )
            time.sleep(POLL_S)


def _pace(watch: Watch, finished: int, total: int) -> str:
    """This run's rate and ETA, or that there is none yet (no ETA without progress)."""
    rate = watch.rate(finished)
    if rate is None:
        return "no ETA before the first window"
    return f"{rate:.1f} win/s ETA {_eta(watch.eta_s(finished, total))}"


def _eta(eta: float | None) -> str:
    if eta is None:
        return "?"
    return f"{eta:.0f}s" if eta < 120 else f"{eta / 60:.1f}m"


def print_summary(st: batches.BatchStatus) -> None:
    """The human summary of a batch: a row per symbol and the LLM cost."""
    from rich.table import Table

    from producer.console import make_console

    title = f"batch {st.batch_id} ({st.state}, analyst {st.analyst}, model {st.model}"
    table = Table(title=title + (f", prompt {st.prompt})" if st.analyst != "heuristic" else ")"))
    for col in ("symbol", "total", "done", "cached", "failed", "skipped", "pending", "reclaimed", "Q-table"):
        table.add_column(col, justify="right" if col != "symbol" else "left")
    for sym, s in st.symbols.items():
        q = f"v{s.q_version}" if s.reduced else "not yet"
        table.add_row(
            sym,
            *(str(v) for v in (s.total, s.done, s.cached, s.failed, s.skipped)),
            str(s.pending + s.running),
            str(s.reclaimed),
            q,
        )
    console = make_console()
    console.print(table)
    console.print(f"tokens {st.tokens:,}  LLM seconds {st.llm_seconds:.1f}  windows/s {st.windows_per_s:.2f}")
    for sym, s in st.symbols.items():
        if s.failure_reasons:
            top = "; ".join(f"{r['count']}x {r['reason']}" for r in s.failure_reasons)
            console.print(f"{sym}: {s.failed} failed window(s), most frequent reasons: {top}", soft_wrap=True)
    if st.state == "failed" and st.error:
        console.print(f"batch {st.batch_id} failed: {st.error}", soft_wrap=True)
    m = st.medians
    if m is not None and m.windows:
        console.print(
            f"per window (median of {m.windows}): prompt {m.prompt_tokens or 0:,.0f} tokens, answer"
            f" {m.answer_tokens or 0:,.0f} tokens, {m.seconds or 0:.1f} s"
        )


@click.command()
@click.argument("batch_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(batch_id: int | None, as_json: bool) -> None:
    """Per symbol: windows total / done / cached / failed / skipped, reducer state, ETA (default: latest)."""
    settings = Settings.from_env()
    # no separate schema check: a missing table says it (worker.store.db.SchemaMissing), one round trip less
    if batch_id is None:
        batch_id = batches.latest_batch_id(settings.database_url)
        if batch_id is None:
            raise BadInput("no batch yet: start one with `qtrain train --symbols ...`")
    st = batches.batch_status(settings.database_url, batch_id)
    if st is None:
        raise BadInput(f"batch {batch_id} does not exist")
    idle_line = None
    if st.state not in ("done", "failed"):  # unfinished: does a worker consume its queue? (<= ~2 s)
        from worker.cluster.liveness import consumers, no_worker_line

        queue = ANALYZE_QUEUE if st.finished < st.total else REDUCE_QUEUE
        count = consumers(settings.broker_url, queue)
        idle_line = no_worker_line(settings.broker_url, queue) if count == 0 else None
    if as_json:
        out = st.to_json()
        if idle_line:
            out.update(eta_s=None, idle=idle_line)
        click.echo(json.dumps(out))
    else:
        print_summary(st)
        if idle_line:
            click.echo(idle_line, err=True)
        elif st.eta_s and st.finished:
            click.echo(f"ETA {_eta(st.eta_s)}")


@click.command()
@click.argument("batch_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def resume(batch_id: int, as_json: bool) -> None:
    """Re-enqueue what is not finished (after a broker loss, say); safe any number of times."""
    from worker.runtime import publish

    out = publish.resume(Settings.from_env(), batch_id)
    if as_json:
        click.echo(json.dumps(out.to_json()))
    else:
        click.echo(
            f"batch {batch_id}: re-enqueued {out.requeued_windows} window(s); reducers pending:"
            f" {', '.join(out.reducers_pending) or 'none'}"
        )


COMMANDS = [train, status, resume]
