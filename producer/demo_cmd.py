"""``qtrain demo``: the whole path on one machine in one command.

Database, candles (synthetic for two symbols, or ``--csv FILE --symbol S``), local workers, a batch
trained with Ollama when it answers (else the heuristic analyst, saying so), and the summary.
Running it again is cheap: every window is then a cache hit.

The demo never touches a trader's data (decision, issue 29):

* it runs in its OWN database, ``DATABASE_URL``'s name plus ``_demo`` (``qtrain`` ->
  ``qtrain_demo``, on the same server), created when missing; ``--database-url URL`` runs it in
  another one, given explicitly. Its model files go to ``QTRAIN_MODELS_DIR/demo/``.
* its synthetic candles are stored under symbols no market has, ``SYNTH1-USDT`` and
  ``SYNTH2-USDT`` (seeded random walks from 30,000 and 2,000), so that every table, report and
  summary made from them says "SYNTH" in its title, in whatever database they end up; it prints
  "synthetic" wherever it shows them. A real symbol's candles are written only from ``--csv``.
* it starts its own workers, with its database: workers already consuming the broker's queues serve
  another database and would take its tasks, so the demo stops with one line (exit 2) saying how to
  stop them or use another broker, unless ``--database-url`` names the database they serve.

``--llm embedded`` (``scripts/demo --llm embedded`` starts the embedded CPU model, SmolLM2-135M in
``llama_cpp.server``, and exports QTRAIN_LLM_API=openai, OPENAI_BASE_URL, QTRAIN_LLM_MODEL): the
batch goes through that real model, over ``EMBEDDED_WINDOWS`` windows per symbol only (a window
takes ~20-40 s on 2 CPU cores, against milliseconds for the heuristic), spread over the candles
after a warm-up, one worker slot per engine process; a few of its analyses are printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from producer import train_cmd
from worker.cluster.local import running_workers, start_workers
from worker.errors import QtrainError
from worker.ingest.synthetic import insert_synthetic
from worker.pipeline import dispatch
from worker.redact import redact, redact_text
from worker.settings import DEFAULT_STRIDE, DEFAULT_WINDOW, Settings
from worker.store import db, migrate
from worker.store.candles import candle_spans
from worker.symbols import SYNTHETIC_PREFIX

DEMO_SYMBOLS = {f"{SYNTHETIC_PREFIX}1-USDT": (1, 30_000.0), f"{SYNTHETIC_PREFIX}2-USDT": (2, 2_000.0)}
"""The synthetic symbols -> (seed, start price): names no exchange lists, so that no table, report
or summary of their invented prices can pass for a real market's."""
DEMO_SUFFIX = "_demo"
"""Added to DATABASE_URL's database name for the demo's own database (``qtrain`` -> ``qtrain_demo``)."""
MAX_DATABASE_NAME = 63
"""PostgreSQL's longest identifier."""
#: Windows per symbol with ``--llm embedded`` (6 in all for the two symbols: 2-4 minutes on 2 cores).
EMBEDDED_WINDOWS = 3
#: Candles left before the first window with ``--llm embedded``: the indicators' warm-up (a window
#: without it shows the model undefined features, and the 135M model then tends to loop to its cap).
EMBEDDED_SKIP = 60
#: Analyses printed after an ``--llm embedded`` batch.
SHOWN_ANALYSES = 4


def choose_analyst(settings: Settings, wanted: str) -> tuple[str, str]:
    """``auto``: the LLM (Ollama, or the OpenAI-compatible server of ``QTRAIN_LLM_API=openai``) when
    every host answers and has the model, else heuristic; (analyst, why)."""
    if wanted != "auto":
        return wanted, f"--analyst {wanted}"
    server = "the OpenAI-compatible server" if settings.llm_api == "openai" else "Ollama"
    try:
        dispatch.check_llm(settings, settings.llm_model)
    except QtrainError as exc:
        return (
            "heuristic",
            f"{server} not usable ({redact_text(str(exc))}); using the built-in heuristic analyst",
        )
    return "ollama", f"{server} answers at {redact(', '.join(settings.llm_hosts))} with {settings.llm_model}"


def demo_database_url(url: str) -> str:
    """The demo's own database on the server of ``url``: its name plus ``_demo`` (unchanged when it
    already ends so); BadInput when the URL names no database or the name gets too long."""
    from worker.errors import BadInput

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise BadInput(f"DATABASE_URL {db.redact(url)} names no database: add /qtrain")
    if not name.endswith(DEMO_SUFFIX):
        name += DEMO_SUFFIX
    if len(name) > MAX_DATABASE_NAME:
        raise BadInput(
            f"the demo's database name {name!r} is longer than {MAX_DATABASE_NAME}: give --database-url"
        )
    return urlunsplit(parts._replace(path=f"/{name}"))


@click.command()
@click.option(
    "--database-url",
    default=None,
    help="Run the demo in this database (default: its own, DATABASE_URL's name + _demo, created if missing).",
)
@click.option("--workers", "n_workers", default=2, show_default=True, help="Worker processes to start.")
@click.option("--concurrency", default=2, show_default=True, help="Pool processes per worker.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Import this CSV.")
@click.option("--symbol", default=None, help="Symbol of --csv, e.g. BTC-USDT (default: from the file name).")
@click.option("--candles", "n_candles", default=1500, show_default=True, help="Synthetic candles per symbol.")
@click.option(
    "--epochs", default=3, show_default=True, help="Recipe qlearning only; the default, pooled, ignores it."
)
@click.option(
    "--analyst", type=click.Choice(["auto", "llm", "ollama", "heuristic"]), default="auto", show_default=True
)
@click.option("--timeout", default=900.0, show_default=True, help="Give up waiting after this many seconds.")
@click.option(
    "--llm",
    type=click.Choice(["auto", "embedded"]),
    default="auto",
    show_default=True,
    help="embedded: the real CPU model that scripts/demo --llm embedded starts (fewer windows).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
def demo(**kw: Any) -> None:
    """Run the whole pipeline on this machine in its own database: db init, synthetic candles,
    workers, training, summary (see `qtrain demo` in the README)."""
    import dataclasses

    user = Settings.from_env()
    explicit = kw["database_url"] is not None
    url = kw["database_url"] if explicit else demo_database_url(user.database_url)
    models_dir = str(Path(user.models_dir) / "demo")
    # the edge of this command: its workers and the task module read the environment
    os.environ.update(DATABASE_URL=url, QTRAIN_MODELS_DIR=models_dir)
    settings = dataclasses.replace(user, database_url=url, models_dir=models_dir)
    say = (lambda *_: None) if kw["as_json"] else click.echo
    migrate.migrate(settings.database_url)
    own = "" if explicit else " (the demo's own: your DATABASE_URL's data is never read or written)"
    say(f"database ready: {db.redact(settings.database_url)}{own}")
    if kw["csv_path"]:
        from worker.ingest.files import import_file

        report = import_file(settings, kw["csv_path"], kw["symbol"], "1h")  # symbol: else from the name
        symbols = [report.symbol]
        say(f"imported {kw['csv_path']}: {report.inserted} new candles")
    else:
        symbols = list(DEMO_SYMBOLS)
        insert_synthetic(settings.database_url, kw["n_candles"], DEMO_SYMBOLS)
        say(
            f"synthetic candles (seeded random walks, not market data): {kw['n_candles']} hourly candles"
            f" for {', '.join(symbols)}"
        )
    dispatch.check_broker(settings)
    embedded = kw["llm"] == "embedded"
    since, stride = None, DEFAULT_STRIDE
    if embedded:
        analyst, why = embedded_analyst(settings)
        since, stride = embedded_windows(settings, symbols)
        kw["concurrency"] = 1  # one request per engine process at a time (llama_cpp.server serialises)
    else:
        analyst, why = choose_analyst(settings, kw["analyst"])
    say(f"analyst: {analyst} ({why})")
    started = None
    running = running_workers(settings.broker_url)
    if running == 0:
        say(f"starting {kw['n_workers']} worker process(es) x {kw['concurrency']} slots")
        started = start_workers(kw["n_workers"], concurrency=kw["concurrency"], prefix="demo")
    elif explicit:
        say("using the Celery workers already running (they must serve --database-url)")
    else:
        from worker.errors import BadInput

        raise BadInput(
            f"{running} Celery worker(s) already consume this broker's queues and serve another database:"
            " they would take the demo's tasks. Stop them, or give the demo its own broker"
            " (CELERY_BROKER_URL=redis://127.0.0.1:6379/2 CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/3)"
        )
    try:
        req = dispatch.TrainRequest(
            symbols=tuple(symbols), epochs=kw["epochs"], analyst=analyst, seed=42, since=since, stride=stride
        )
        created = dispatch.create(settings, req)
        from worker.runtime import publish

        publish.enqueue_batch(settings, created.batch_id, req.symbols)
        say(f"batch {created.batch_id}: {created.windows} windows enqueued")
        final = train_cmd.wait(settings, created.batch_id, timeout=kw["timeout"], quiet=kw["as_json"])
    finally:
        if started is not None:
            started.stop()
    synthetic = not kw["csv_path"]
    if kw["as_json"]:
        click.echo(
            json.dumps(
                {
                    **final.to_json(),
                    "demo": {
                        "database": db.redact(settings.database_url),
                        "synthetic": synthetic,
                        "models_dir": models_dir,
                    },
                }
            )
        )
        return
    train_cmd.print_summary(final)
    say(dispatch.pool_line(req.symbols, created.recipe, created.pool))
    if synthetic:
        say(f"(synthetic data: {', '.join(symbols)} are seeded random walks, no market's prices)")
    verdicts = train_cmd.print_verdicts(settings, final)
    if any(v.get("decided_by") == ["evidence"] for v in verdicts.values()):
        say(
            f"the gate wants more evidence than {kw['n_candles']} candles give (its tail is the last 20%):"
            " `qtrain demo --candles 4000` holds out 33 days; with your own market data, import a year or"
            " more (README, Quick start) and train on it"
        )
    if embedded:
        print_analyses(settings, final.batch_id)
    say(
        f"Q-tables in {settings.models_dir}/ (fast_model_<SYMBOL>.npz = the promoted one, else the latest,"
        " its .json says which)"
    )
    env = f"DATABASE_URL={db.redact(settings.database_url)} QTRAIN_MODELS_DIR={models_dir}"
    say(f"next, in the demo's database: {env} qtrain backtest --symbol {symbols[0]} --report report.html")
    say(f"                              {env} qtrain models list")
    if not embedded:
        say(
            f"with a real model on this CPU (SmolLM2-135M, built and fetched the first time,"
            f" {EMBEDDED_WINDOWS} windows per symbol): scripts/demo --llm embedded"
        )


def embedded_analyst(settings: Settings) -> tuple[str, str]:
    """The LLM analyst on the embedded model, checked (``/v1/models`` lists it); (analyst, why)."""
    from worker.errors import BadInput

    if settings.llm_api != "openai":
        raise BadInput(
            "--llm embedded needs the embedded model running and its settings exported:"
            ' run scripts/demo --llm embedded (or eval "$(python -m worker.embedded env --only llm)")'
        )
    dispatch.check_llm(settings, settings.llm_model)
    hosts = redact(", ".join(settings.llm_hosts))
    return "ollama", f"the embedded model {settings.llm_model} at {hosts} (OpenAI-compatible)"


def embedded_windows(settings: Settings, symbols: list[str]) -> tuple[int, int]:
    """(since, stride) giving ``EMBEDDED_WINDOWS`` windows per symbol after ``EMBEDDED_SKIP`` candles."""
    from worker.errors import BadInput

    rows = candle_spans(settings.database_url, symbols, "1h")
    after = min((n for _, _, n in rows), default=0) - EMBEDDED_SKIP
    window = DEFAULT_WINDOW
    if after < window:
        raise BadInput(f"--llm embedded needs at least {EMBEDDED_SKIP + window} hourly candles per symbol")
    first = max(ts for _, ts, _ in rows) + EMBEDDED_SKIP * 3600
    return first, max(1, (after - window) // (EMBEDDED_WINDOWS - 1))


def print_analyses(settings: Settings, batch_id: int, limit: int = SHOWN_ANALYSES) -> None:
    """A few of the batch's analyses as the model wrote them: regime, action, rules, tokens, summary."""
    from model import ACTIONS
    from model.candles import minute_utc
    from worker.store.analyses import shown_analyses

    rows = shown_analyses(settings.database_url, batch_id, limit)
    click.echo(f"{len(rows)} of the model's analyses (qtrain status {batch_id} for all):")
    for a in rows:
        act = ACTIONS[a.action] if a.action is not None else "?"
        secs = f"{a.total_duration_ms / 1000:.0f} s" if a.total_duration_ms is not None else "cached"
        click.echo(
            f"  {a.symbol} {minute_utc(a.start_ts)}: {a.regime} {act} confidence {a.confidence or 0:.2f},"
            f" {a.n_rules} rule(s); {a.prompt_tokens or 0} prompt + {a.completion_tokens or 0} answer tokens,"
            f" {secs}; {(a.summary or '')[:100]!r}"
        )


COMMANDS = [demo]
