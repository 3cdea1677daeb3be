"""What each environment variable means: the data the docs' configuration reference is rendered from.

``worker.settings`` reads the environment; this module says, next to it, what every variable it
(and the rooms it hands variables to) reads is for. The docs site renders :func:`settings_table`
at build time (``docs/hooks/reference.py``) and ``tests/test_docs.py`` checks that every variable
the code names is here, so the reference cannot drift from the code. Meanings are Markdown; links
are relative to the docs site's pages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """One row of the reference: the variables it covers, their default as shown, and what they do."""

    names: tuple[str, ...]
    default: str
    meaning: str


SETTINGS: tuple[EnvVar, ...] = (
    EnvVar(
        ("DATABASE_URL",),
        "`postgresql://postgres@127.0.0.1:5432/qtrain`",
        "PostgreSQL (`postgresql://` or `postgres://`); tables live in schema `btc` (on the `search_path`)",
    ),
    EnvVar(
        ("CELERY_BROKER_URL",),
        "`redis://127.0.0.1:6379/0`",
        "broker: `redis://`, `rediss://`, `amqp://`, `amqps://` or `pyamqp://`",
    ),
    EnvVar(
        ("CELERY_RESULT_BACKEND",),
        "`redis://127.0.0.1:6379/1`",
        "results (tiny status dicts): `redis://` or `rediss://`",
    ),
    EnvVar(("OLLAMA_HOST",), "`http://127.0.0.1:11434`", "one host, or a comma list sharing the load"),
    EnvVar(("OLLAMA_MODEL",), "`qwen2.5-coder:7b`", "model (`ollama pull` it on every host)"),
    EnvVar(("OLLAMA_TIMEOUT",), "`300`", "seconds per LLM call (either API)"),
    EnvVar(
        ("QTRAIN_LLM_API",),
        "`ollama`",
        "`ollama` (Ollama's `/api/chat`) or `openai` (`/v1/chat/completions`: llama.cpp, "
        "llama-cpp-python, vLLM, SGLang, LM Studio; see [Which LLM server](llm-servers.md))",
    ),
    EnvVar(
        ("OPENAI_BASE_URL",),
        "`http://127.0.0.1:8000/v1`",
        "the OpenAI-compatible server, `/v1` included; a comma list shares the load like `OLLAMA_HOST`",
    ),
    EnvVar(("OPENAI_API_KEY",), "unset", "sent as `Authorization: Bearer`; never printed, logged or shown"),
    EnvVar(
        ("QTRAIN_LLM_MODEL",),
        "`OLLAMA_MODEL`",
        "the model, for either API (as the server's `/v1/models` lists it)",
    ),
    EnvVar(
        ("QTRAIN_PROMPT",),
        "`anonymous`",
        "the analyst's prompt: `anonymous` shows no symbol, date or absolute price (prices as an index, "
        "first close = 100; volume as a z-score), so a model's memory of the market cannot leak the future "
        "into analyses of history; `named` (symbol, dates, prices: the v3 prompt) only to measure that "
        "leak. Part of the cache key; `qtrain status` and each version's metadata name it",
    ),
    EnvVar(
        ("QTRAIN_LLM_NUM_CTX", "QTRAIN_LLM_MAX_TOKENS"),
        "`4096` / `1024`",
        "the context a prompt plus its answer must fit (sent to Ollama as `num_ctx`); the tokens the "
        "model may write per window (`num_predict` / `max_tokens`): an answer cut there fails its window",
    ),
    EnvVar(("QTRAIN_MODELS_DIR",), "`./models`", "where `fast_model_{SYMBOL}.npz` (+ `.json`) are written"),
    EnvVar(("QTRAIN_MAX_ATTEMPTS",), "`4`", "attempts per window before it is recorded `failed`"),
    EnvVar(
        ("QTRAIN_RETRY_BASE_S",), "`5`", "first retry delay; doubles per attempt, with jitter, at most 300 s"
    ),
    EnvVar(
        ("QTRAIN_PROMOTION_METRIC", "QTRAIN_PROMOTION_MARGIN"),
        "`sharpe` / `0`",
        "promotion gate criterion (see [Backtesting](backtesting.md))",
    ),
    EnvVar(
        ("QTRAIN_PROMOTION_MIN_DAYS", "QTRAIN_PROMOTION_MIN_TRADES"),
        "`30` / `3`",
        "the evidence a verdict needs: a held-out tail shorter than that, or on which the new table "
        "closes fewer trades, is `insufficient evidence` and promotes nothing (see "
        "[Backtesting](backtesting.md)); `0` turns either off",
    ),
    EnvVar(
        ("QTRAIN_MAX_FAILED_SHARE",),
        "`0.5`",
        "past this share of a symbol's windows failed, no version is made and the batch fails with the "
        "top reasons (`qtrain status` lists them)",
    ),
    EnvVar(
        ("QTRAIN_PROMOTION_TWIN",),
        "`better`",
        "a version trained from analyses vs its unshaped twin (the same batch without them): `better` "
        "keeps the better table on the holdout and says which; `bar`: a version that loses to its twin "
        "is not promoted; `allow`: it may be (margin shown only)",
    ),
    EnvVar(
        ("QTRAIN_PROMOTION_CONTROLS",),
        "`show`",
        "the version's negative controls (its analyses shuffled onto the wrong windows; its most common "
        "answer everywhere): `show` records and shows the LLM's margin over the better one (`content "
        "adds +0.08 sharpe over shuffled`) and serves as above; `require`: the version holds the "
        "LLM-shaped table only if it beats both controls on the holdout, else its unshaped twin",
    ),
    EnvVar(
        ("QTRAIN_LEASE_S", "QTRAIN_REAP_INTERVAL_S"),
        "`60` / `60`",
        "a claimed window's lease, renewed every third of it by its worker's heartbeat while the call "
        "runs (a dead worker's windows come back after about lease + interval); how often each worker's "
        "reaper looks for expired ones (see [Reliability](reliability.md))",
    ),
    EnvVar(
        ("QTRAIN_DB_POOL",),
        "`8`",
        "PostgreSQL connections one worker process opens at most, whatever its concurrency (threads wait "
        "up to 30 s for one; see [Scaling](scaling.md))",
    ),
    EnvVar(
        ("QTRAIN_WORKER_NICE", "QTRAIN_WORKER_MAX_MEMORY_MB"),
        "`10` / `512`",
        "niceness a worker adds to itself at start (`qtrain status` stays quick while analyses saturate "
        "the CPU; `0` keeps it); a pool child above this many MiB is replaced after its task (`0`: never; "
        "see [Scaling](scaling.md))",
    ),
    # Scheduled retraining (the beat; parsed by worker.pipeline.schedule.RetrainConfig). An empty value
    # means the default. Set exactly one of CRON and EVERY_S; neither: no scheduled retraining.
    EnvVar(
        ("QTRAIN_RETRAIN_CRON",),
        "unset",
        "cron, 5 fields (minute hour day-of-month month day-of-week, UTC; 0 = Sunday), e.g. `15 */6 * * *` "
        "(see [Deployment](deployment.md#scheduled-retraining-and-watching))",
    ),
    EnvVar(("QTRAIN_RETRAIN_EVERY_S",), "unset", "instead of cron: every N seconds (demos, tests)"),
    EnvVar(
        ("QTRAIN_RETRAIN_SYMBOLS",),
        "unset",
        "symbols to fetch, train and backtest on each run (required with a schedule)",
    ),
    EnvVar(("QTRAIN_RETRAIN_EXCHANGE",), "`kucoin`", "ccxt exchange the new candles are fetched from"),
    EnvVar(("QTRAIN_RETRAIN_TIMEFRAME",), "`1h`", "candle timeframe"),
    EnvVar(("QTRAIN_RETRAIN_ANALYST",), "`ollama`", "`llm` (or `ollama`, the same) or `heuristic` (no LLM)"),
    EnvVar(
        ("QTRAIN_RETRAIN_MODEL",),
        "the LLM model",
        "the LLM model of scheduled batches (else `QTRAIN_LLM_MODEL`, `OLLAMA_MODEL`)",
    ),
    EnvVar(("QTRAIN_RETRAIN_EPOCHS",), "`5`", "Q-learning passes of the reducer"),
    EnvVar(
        ("QTRAIN_RETRAIN_WINDOW", "QTRAIN_RETRAIN_STRIDE"),
        "`48` / `24`",
        "candles per window and between window starts",
    ),
    EnvVar(
        ("QTRAIN_RETRAIN_BACKFILL_DAYS",), "`30`", "days fetched the first time for a symbol without candles"
    ),
    EnvVar(("QTRAIN_RETRAIN_MAX_WINDOWS",), "`500`", "new windows per symbol per run at most, newest first"),
    EnvVar(
        ("QTRAIN_RETRAIN_FETCH",), "`1`", "`1`: fetch new candles first; `0`: use the stored candles only"
    ),
    # The agent at run time (qtrain signal, paper trading; parsed by worker.trading.agent.AgentSettings).
    # Paper trading only: qtrain never places a real order and needs no exchange API key.
    EnvVar(
        ("QTRAIN_WEIGHTS",),
        "`technical=0.35,orderbook=0.30,flow=0.25,qlearning=0.10,llm=0`",
        "ensemble weights; `llm` = the promoted version's rules fired now (0: shown, not counted; see "
        "[Running the agent](agent.md))",
    ),
    EnvVar(
        ("QTRAIN_BUY_THRESHOLD", "QTRAIN_SELL_THRESHOLD", "QTRAIN_MIN_CONFIDENCE"),
        "`0.2` / `-0.2` / `0.3`",
        "score thresholds of BUY and SELL, and the confidence a decision needs",
    ),
    EnvVar(
        ("QTRAIN_BOOK_DEPTH", "QTRAIN_TRADES_LIMIT", "QTRAIN_LLM_MAX_RULES"),
        "`10` / `200` / `50`",
        "order-book levels per side, recent trades for the flow score, rules of the LLM component",
    ),
    EnvVar(("QTRAIN_MARKET_TIMEOUT_S",), "`10`", "seconds per live order-book / trades request"),
    EnvVar(("QTRAIN_PAPER_EVERY_S",), "`60`", "seconds between the beat's paper ticks; `0` turns them off"),
    EnvVar(
        ("FLOWER_BASIC_AUTH",),
        "unset",
        "`user:password[,user:password]` for `qtrain flower` (and compose's Flower), which refuses to "
        "start without it (see [Flower](FLOWER.md))",
    ),
    EnvVar(
        ("QTRAIN_EMBEDDED",),
        "unset",
        "`1`: `scripts/demo` and `scripts/test` use embedded PostgreSQL and Redis even where services run",
    ),
    EnvVar(
        ("QTRAIN_EMBEDDED_LLM", "QTRAIN_LLM_GGUF"),
        "unset",
        "`1`: `scripts/demo` (and `python -m worker.embedded start`) also start the embedded CPU model; "
        "`PATH`: the GGUF it serves instead of SmolLM2-135M (see "
        "[A real model in the box](getting-started.md#a-real-model-in-the-box))",
    ),
)

#: Read by the code but deliberately not documented for users: a hidden test override.
UNDOCUMENTED = {"QTRAIN_EXCHANGE_API_URL": "points ccxt at the tests' fake exchange"}


def documented_names() -> set[str]:
    """Every variable the reference names (what tests/test_docs.py compares with the code)."""
    return {name for var in SETTINGS for name in var.names}


def settings_table() -> str:
    """The configuration reference as a Markdown table (rendered into the docs at build time)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for var in SETTINGS:
        names = " / ".join(f"`{n}`" for n in var.names)
        rows.append(f"| {names} | {var.default} | {var.meaning.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"
