"""Named, documented defaults and the one place the environment is read (at the edge).

Every knob has a conventional environment variable (README, Configuration). ``Settings.from_env()`` is
called by the CLI and by the Celery app at start-up; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.errors import BadInput
from worker.redact import redact

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/qtrain"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
#: The LLM's model when no variable names one (``LLM_MODEL_VARS``), for either API.
DEFAULT_LLM_MODEL = "qwen2.5-coder:7b"
#: Where the model's name comes from, in this order, the first set and non-blank one winning:
#: ``QTRAIN_LLM_MODEL`` (either API), ``OLLAMA_MODEL`` (the conventional name), else
#: ``DEFAULT_LLM_MODEL``. Read once, into ``Settings.llm_model``; the client sends that name (a
#: batch's ``--model`` or ``QTRAIN_RETRAIN_MODEL``, when given, replaces it for that batch only).
LLM_MODEL_VARS = ("QTRAIN_LLM_MODEL", "OLLAMA_MODEL")
#: Which HTTP API the LLM speaks: Ollama's native ``/api/chat`` or the OpenAI-compatible
#: ``/v1/chat/completions`` (llama.cpp's llama-server, llama-cpp-python, vLLM, SGLang, LM Studio).
LLM_APIS = ("ollama", "openai")
DEFAULT_LLM_API = "ollama"
DEFAULT_OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"
#: Tokens the model may write per window (``num_predict`` / ``max_tokens``): a full answer (4 rules,
#: short texts) takes 200-450; an answer cut at this cap fails the window rather than being half read.
DEFAULT_LLM_MAX_TOKENS = 1024
#: Context sent as Ollama's ``num_ctx`` (and checked for either API): the prompt (about 1,000
#: tokens) plus the answer cap with headroom. Ollama's own default (2048, later 4096 or set by
#: VRAM) would otherwise cut a long prompt silently.
DEFAULT_LLM_NUM_CTX = 4096
#: The analyst that calls the LLM (any server, whichever QTRAIN_LLM_API names), by its stored name:
#: batches, analyses and version metadata have said ``ollama`` since the first batch, so it stays.
LLM_ANALYST = "ollama"
#: What ``--analyst`` and QTRAIN_RETRAIN_ANALYST take for it: ``llm``, and ``ollama`` as before.
LLM_ANALYST_NAMES = ("llm", LLM_ANALYST)
#: The analysts a batch may name (``llm`` first), and the deterministic one (``model.analyst.heuristic``).
ANALYST_NAMES = (*LLM_ANALYST_NAMES, "heuristic")


def stored_analyst(name: str) -> str:
    """The analyst's stored name for ``name`` as given (``llm`` -> ``ollama``), so old and new
    batches read alike; any other name unchanged (the caller checks it against ``ANALYST_NAMES``)."""
    return LLM_ANALYST if name in LLM_ANALYST_NAMES else name


#: The analyst's prompt style (QTRAIN_PROMPT, ``model.analyst.prompt``): ``anonymous`` shows no symbol, date
#: or absolute price (a model's memory of the market cannot leak the future); ``named`` only to compare.
PROMPT_STYLES = ("anonymous", "named")
DEFAULT_PROMPT_STYLE = "anonymous"
DEFAULT_MODELS_DIR = "./models"
#: Batch defaults, shared by ``qtrain train``, the beat's retrain and the walk-forward: candles
#: per analysed window, candles between window starts, the tail share of a batch's range kept
#: out of training for the promotion backtest, and Q-learning passes for recipes that use epochs.
DEFAULT_TIMEFRAME = "1h"
DEFAULT_WINDOW = 48
DEFAULT_STRIDE = 24
DEFAULT_HOLDOUT = 0.2
DEFAULT_EPOCHS = 5
#: Seconds one LLM call may take before it counts as a timeout (OLLAMA_TIMEOUT, either API; a 7B
#: model on a homelab GPU answers a window in 5-60 s; 300 s leaves room for a cold model load).
DEFAULT_LLM_TIMEOUT_S = 300.0
#: Attempts per window (first try included) before it is recorded as failed.
DEFAULT_MAX_ATTEMPTS = 4
#: First delay (s) before a window's next attempt; doubles per attempt, with jitter, capped at 300 s.
DEFAULT_RETRY_BASE_S = 5.0
#: Longest delay (s) before a retry (``worker.runtime.tasks.retry_delay`` caps the backoff there).
MAX_RETRY_DELAY_S = 300.0
#: The queue of the analyse tasks (I/O bound: many slots per worker).
ANALYZE_QUEUE = "analyze"
#: The queue of reducers, retrain ticks and paper ticks (CPU bound: few slots).
REDUCE_QUEUE = "reduce"
#: Seconds between two runs of the reaper inside each worker (``worker.runtime.reaper``).
DEFAULT_REAP_INTERVAL_S = 60.0
#: Niceness a worker adds to itself at start, so interactive commands stay quick while it grinds.
DEFAULT_WORKER_NICE = 10
#: A pool child whose resident memory passes this many MiB is replaced after its task (0: never).
DEFAULT_WORKER_MAX_MEMORY_MB = 512
#: Share of a symbol's windows that may fail before its batch fails instead of making a version:
#: past it the analyses left are a biased sample (an LLM that answers errors fails every window,
#: and a version trained on none of them would pass for an LLM-trained one). QTRAIN_MAX_FAILED_SHARE.
DEFAULT_MAX_FAILED_SHARE = 0.5
#: Seconds a claimed window's lease lasts (QTRAIN_LEASE_S). A live task's lease is renewed by its
#: worker's heartbeat every third of it (``worker.runtime.heartbeat``), so a long LLM call keeps
#: its window; a dead worker's windows come back after at most this plus the reaper's interval.
DEFAULT_LEASE_S = 60.0
#: PostgreSQL connections per worker process at most (QTRAIN_DB_POOL), whatever its concurrency.
DEFAULT_DB_POOL = 8


def analyze_soft_limit_s(llm_timeout_s: float) -> float:
    """Soft time limit of one analyse task: one LLM call with its in-client retries, plus margin."""
    return llm_timeout_s * 3 + 60


def analyze_hard_limit_s(llm_timeout_s: float) -> float:
    """Hard time limit of one analyse task (the pool kills the child after it)."""
    return analyze_soft_limit_s(llm_timeout_s) + 60


RETRAIN_PREFIXES = ("QTRAIN_RETRAIN_", "QTRAIN_EXCHANGE_API_URL")
"""Variables of the beat's scheduled retraining (``worker.pipeline.schedule``)."""
AGENT_PREFIXES = (
    "QTRAIN_WEIGHTS",
    "QTRAIN_BUY_THRESHOLD",
    "QTRAIN_SELL_THRESHOLD",
    "QTRAIN_MIN_CONFIDENCE",
    "QTRAIN_BOOK_DEPTH",
    "QTRAIN_TRADES_LIMIT",
    "QTRAIN_LLM_MAX_RULES",
    "QTRAIN_PAPER_",
    "QTRAIN_MARKET_",
    "QTRAIN_EXCHANGE_API_URL",
)
"""Variables of the run-time agent (``qtrain signal``, paper trading; parsed by ``worker.trading.agent``)."""


def env_number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    low: float,
    high: float | None = None,
    whole: bool = False,
) -> float:
    """``env[name]`` as a number within [low, high] (unset or empty: ``default``); a one-line
    ``BadInput`` naming the variable and what it takes otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    kind = "a whole number" if whole else "a number"
    bound = f">= {low:g}" if high is None else f"from {low:g} to {high:g}"
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= low and (high is None or value <= high)):
        raise BadInput(f"{name}={raw!r} is not {kind} {bound}: fix it, or unset it (default {default:g})")
    return value


#: URL schemes each setting takes (``check_url``): PostgreSQL's two spellings, the brokers Celery is
#: configured and tested for here (Redis, RabbitMQ), the Redis result backend, and plain HTTP(S) for
#: the LLM servers.
DATABASE_SCHEMES = ("postgresql", "postgres")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
RESULT_BACKEND_SCHEMES = ("redis", "rediss")
HTTP_SCHEMES = ("http", "https")
#: Upper bound of ``--epochs`` (Q-learning passes over a batch's windows): a pass over a year of
#: hourly windows takes well under a second, so 1,000 is already hours of CPU per symbol.
MAX_EPOCHS = 1000
#: Upper bounds of ``--window`` (candles per analysed window: the prompt summarises them, and
#: 10,000 hours is over a year) and ``--stride`` (candles between window starts), and the largest
#: ``--seed`` (stored as a PostgreSQL bigint).
MAX_WINDOW = 10_000
MAX_STRIDE = 1_000_000
MAX_SEED = 2**63 - 1


def check_url(
    name: str,
    url: str,
    schemes: tuple[str, ...],
    *,
    example: str,
    host: bool = True,
    given: str | None = None,
) -> str:
    """``url`` when it parses as a URL with one of ``schemes`` (and, if ``host``, a host name) and a
    valid port; else a one-line ``BadInput`` naming the variable, the accepted schemes and an
    example. Never echoes a password (the value, or ``given`` if set, is shown redacted)."""
    shown = redact(url if given is None else given)
    fix = f"give e.g. {name}={example}, or unset it"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in 0-65535
        hostname = parts.hostname or ""
    except ValueError as exc:
        raise BadInput(f"{name}={shown!r} is not a valid URL ({redact(str(exc))}): {fix}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes or "://" not in url:
        what = f"scheme {scheme + '://'!r}" if scheme and "://" in url else "no scheme"
        raise BadInput(
            f"{name}={shown!r} has {what}; it takes {', '.join(s + '://' for s in schemes)}: {fix}"
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadInput(f"{name}={shown!r} holds spaces or control characters: {fix}")
    if (hostname and not _HOST.fullmatch(hostname)) or (host and not hostname) or port == 0:
        raise BadInput(f"{name}={shown!r} names no valid host and port: {fix}")
    return url


#: A host name (letters, digits, ``._~%-``) or an IPv6 literal (its brackets already stripped).
_HOST = re.compile(r"[A-Za-z0-9._~%-]+|[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?")


def check_fee(fee: float, *, flag: str = "--fee") -> float:
    """A fee per side as given on the command line; one-line ``BadInput`` outside [0, MAX_FEE)."""
    from model.evaluation.backtest import MAX_FEE

    if not 0.0 <= fee < MAX_FEE:
        raise BadInput(f"{flag} must be in [0, {MAX_FEE:g}) (0.001 = 0.1% per side), got {fee}")
    return fee


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one qtrain process (CLI or worker)."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_RESULT_BACKEND
    ollama_hosts: tuple[str, ...] = (DEFAULT_OLLAMA_HOST,)
    #: The LLM's model name, for either API (``LLM_MODEL_VARS``: QTRAIN_LLM_MODEL, else OLLAMA_MODEL).
    llm_model: str = DEFAULT_LLM_MODEL
    #: Seconds one LLM call may take (OLLAMA_TIMEOUT, either API).
    llm_timeout_s: float = DEFAULT_LLM_TIMEOUT_S
    #: ``ollama`` (native /api/chat) or ``openai`` (/v1/chat/completions), QTRAIN_LLM_API.
    llm_api: str = DEFAULT_LLM_API
    #: OpenAI-compatible base URLs, ``/v1`` included (OPENAI_BASE_URL, a comma list like OLLAMA_HOST).
    openai_base_urls: tuple[str, ...] = (DEFAULT_OPENAI_BASE_URL,)
    #: Sent as ``Authorization: Bearer`` when set (OPENAI_API_KEY); never printed, logged or repr'd.
    openai_api_key: str = field(default="", repr=False)
    #: The context the prompt and answer must fit in (QTRAIN_LLM_NUM_CTX; Ollama's ``num_ctx``).
    llm_num_ctx: int = DEFAULT_LLM_NUM_CTX
    #: Tokens the model may write per window (QTRAIN_LLM_MAX_TOKENS; ``num_predict`` / ``max_tokens``).
    llm_max_tokens: int = DEFAULT_LLM_MAX_TOKENS
    #: ``anonymous`` or ``named`` (QTRAIN_PROMPT): the prompt style new batches use.
    prompt_style: str = DEFAULT_PROMPT_STYLE
    models_dir: str = DEFAULT_MODELS_DIR
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    #: Seconds a claimed window may stay ``running`` before the reaper takes it back.
    lease_s: float = DEFAULT_LEASE_S
    #: Seconds between reaper runs inside each worker.
    reap_interval_s: float = DEFAULT_REAP_INTERVAL_S
    #: PostgreSQL connections one worker process opens at most (``worker.store.db``).
    db_pool: int = DEFAULT_DB_POOL
    #: Niceness added to a worker at start (``worker.runtime.housekeeping.lower_priority``).
    worker_nice: int = DEFAULT_WORKER_NICE
    #: Celery's ``worker_max_memory_per_child``, in MiB (0: off).
    worker_max_memory_mb: int = DEFAULT_WORKER_MAX_MEMORY_MB
    #: QTRAIN_MAX_FAILED_SHARE: past this share of failed windows a symbol gets no version, its batch fails.
    max_failed_share: float = DEFAULT_MAX_FAILED_SHARE
    promotion_metric: str = "sharpe"
    promotion_margin: str = "0"
    #: QTRAIN_PROMOTION_TWIN: how the gate treats a version's unshaped twin (``worker.pipeline.ablation``).
    promotion_twin: str = "better"
    #: QTRAIN_PROMOTION_CONTROLS: ``show`` or ``require`` the negative controls (``promotion`` module doc).
    promotion_controls: str = "show"
    #: QTRAIN_PROMOTION_MIN_DAYS / _MIN_TRADES as given: the evidence a verdict needs (parsed and
    #: checked by ``worker.pipeline.promotion.PromotionConfig``; empty: its defaults).
    promotion_min_days: str = ""
    promotion_min_trades: str = ""
    #: The ``QTRAIN_RETRAIN_*`` and ``QTRAIN_EXCHANGE_API_URL`` variables as given (parsed and
    #: checked by ``worker.pipeline.schedule.RetrainConfig.from_env``).
    retrain_env: Mapping[str, str] = field(default_factory=dict)
    #: The run-time agent's variables as given (``AGENT_PREFIXES``; parsed and checked by
    #: ``worker.trading.agent.AgentSettings.from_env``): weights, thresholds, min_confidence, paper tick.
    agent_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def llm_hosts(self) -> tuple[str, ...]:
        """The hosts (Ollama) or base URLs (OpenAI-compatible) the analyse step calls."""
        return self.openai_base_urls if self.llm_api == "openai" else self.ollama_hosts

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        hosts = _urls(e, "OLLAMA_HOST") or (DEFAULT_OLLAMA_HOST,)
        timeout = env_number(e, "OLLAMA_TIMEOUT", DEFAULT_LLM_TIMEOUT_S, low=0.001)
        api = e.get("QTRAIN_LLM_API", "").strip().lower() or DEFAULT_LLM_API
        if api not in LLM_APIS:
            raise BadInput(
                f"QTRAIN_LLM_API={e.get('QTRAIN_LLM_API')!r} is not one of {', '.join(LLM_APIS)}:"
                " fix it, or unset it (default ollama)"
            )
        num_ctx = int(env_number(e, "QTRAIN_LLM_NUM_CTX", DEFAULT_LLM_NUM_CTX, low=256, whole=True))
        max_tokens = int(env_number(e, "QTRAIN_LLM_MAX_TOKENS", DEFAULT_LLM_MAX_TOKENS, low=16, whole=True))
        prompt = e.get("QTRAIN_PROMPT", "").strip().lower() or DEFAULT_PROMPT_STYLE
        if prompt not in PROMPT_STYLES:
            raise BadInput(
                f"QTRAIN_PROMPT={e.get('QTRAIN_PROMPT')!r} is not one of {', '.join(PROMPT_STYLES)}:"
                " fix it, or unset it (default anonymous)"
            )
        return cls(
            database_url=_url(e, "DATABASE_URL", DEFAULT_DATABASE_URL, DATABASE_SCHEMES, host=False),
            broker_url=_url(e, "CELERY_BROKER_URL", DEFAULT_BROKER_URL, BROKER_SCHEMES, host=False),
            result_backend=_url(
                e, "CELERY_RESULT_BACKEND", DEFAULT_RESULT_BACKEND, RESULT_BACKEND_SCHEMES, host=False
            ),
            ollama_hosts=hosts,
            llm_model=llm_model_from_env(e),
            llm_timeout_s=timeout,
            llm_api=api,
            openai_base_urls=_urls(e, "OPENAI_BASE_URL") or (DEFAULT_OPENAI_BASE_URL,),
            openai_api_key=e.get("OPENAI_API_KEY", "").strip(),
            llm_num_ctx=num_ctx,
            llm_max_tokens=max_tokens,
            prompt_style=prompt,
            models_dir=e.get("QTRAIN_MODELS_DIR", DEFAULT_MODELS_DIR),
            max_attempts=int(env_number(e, "QTRAIN_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, low=1, whole=True)),
            retry_base_s=env_number(e, "QTRAIN_RETRY_BASE_S", DEFAULT_RETRY_BASE_S, low=0),
            lease_s=env_number(e, "QTRAIN_LEASE_S", DEFAULT_LEASE_S, low=1),
            db_pool=int(env_number(e, "QTRAIN_DB_POOL", DEFAULT_DB_POOL, low=1, high=1000, whole=True)),
            reap_interval_s=env_number(e, "QTRAIN_REAP_INTERVAL_S", DEFAULT_REAP_INTERVAL_S, low=0.1),
            worker_nice=int(
                env_number(e, "QTRAIN_WORKER_NICE", DEFAULT_WORKER_NICE, low=0, high=19, whole=True)
            ),
            worker_max_memory_mb=int(
                env_number(e, "QTRAIN_WORKER_MAX_MEMORY_MB", DEFAULT_WORKER_MAX_MEMORY_MB, low=0, whole=True)
            ),
            max_failed_share=env_number(
                e, "QTRAIN_MAX_FAILED_SHARE", DEFAULT_MAX_FAILED_SHARE, low=0, high=1
            ),
            promotion_metric=e.get("QTRAIN_PROMOTION_METRIC", "sharpe"),
            promotion_margin=e.get("QTRAIN_PROMOTION_MARGIN", "0"),
            promotion_twin=e.get("QTRAIN_PROMOTION_TWIN", "better"),
            promotion_controls=e.get("QTRAIN_PROMOTION_CONTROLS", "show"),
            promotion_min_days=e.get("QTRAIN_PROMOTION_MIN_DAYS", ""),
            promotion_min_trades=e.get("QTRAIN_PROMOTION_MIN_TRADES", ""),
            retrain_env={k: v for k, v in e.items() if k.startswith(RETRAIN_PREFIXES)},
            agent_env={k: v for k, v in e.items() if k.startswith(AGENT_PREFIXES)},
        )


def llm_model_from_env(env: Mapping[str, str]) -> str:
    """The model's name: the first of ``LLM_MODEL_VARS`` set and non-blank, else ``DEFAULT_LLM_MODEL``."""
    return next((v for v in (env.get(name, "").strip() for name in LLM_MODEL_VARS) if v), DEFAULT_LLM_MODEL)


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...], *, host: bool) -> str:
    """``env[name]`` (unset or blank: ``default``) checked by ``check_url``."""
    value = env.get(name, "").strip() or default
    return check_url(name, value, schemes, example=default, host=host)


def _urls(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """``env[name]`` as a comma list of HTTP base URLs, trailing slashes dropped, ``http://`` added
    where no scheme is given; each one checked by ``check_url`` (a host is required)."""
    example = DEFAULT_OPENAI_BASE_URL if name == "OPENAI_BASE_URL" else DEFAULT_OLLAMA_HOST
    urls = (u.strip() for u in env.get(name, "").split(","))
    return tuple(_http_url(name, u, example) for u in urls if u)


def _http_url(name: str, given: str, example: str) -> str:
    """One base URL of a list: ``http://`` added when it has no scheme (``gpu1:11434``)."""
    if "://" in given:
        url = given
    elif "//" in given:  # a mistyped scheme (``http//gpu1``): not a host named "http"
        url = "?" + given
    else:
        url = f"http://{given}"
    return check_url(name, url, HTTP_SCHEMES, example=example, given=given).rstrip("/")
