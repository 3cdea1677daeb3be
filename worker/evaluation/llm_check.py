"""``qtrain llm check``: ask the configured model about N windows of stored candles and measure its
answers (``model.analyst.llm_check``): validity, cost, sensitivity to the window, memory of the market.

Per window, four calls through the same client the workers use: the analysis under the configured
prompt style; the same window mirrored (every return negated) under that style; the analysis under
the other style (named vs anonymous: does naming the asset and the dates make its action agree
more with what happened next?); and, from the anonymous prompt, "which asset, which year?". The
windows are spread evenly over each symbol's stored range, skip gaps, and leave the 24 candles
after the window (the realised move) in the stored data.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model import ACTIONS
from model.analyst.answer import ANSWER_SCHEMA, REASONED_SCHEMA, AnswerError, parse_answer
from model.analyst.llm_check import (
    NO_ANSWER,
    chance_agreement,
    direction_hit,
    guess_rate,
    median,
    mirror_candles,
    mirror_flip,
    mode_share,
    regime_agreement,
)
from model.analyst.llm_check import verdict as make_verdict
from model.analyst.prompt import PROMPT_STYLES, build_messages
from model.candles import Candles, timeframe_seconds
from model.features import WARMUP, compute_features
from worker.clients.llm import ChatClient
from worker.errors import BadInput, QtrainError
from worker.settings import DEFAULT_TIMEFRAME, DEFAULT_WINDOW, Settings
from worker.store.candles import list_candles, load_candles

#: Candles after a window whose realised return the answer's action is compared with.
HORIZON = 24
DEFAULT_CHECK_WINDOWS = 8
#: The assets the memory question offers (plus the checked symbols' own) and its years.
MEMORY_ASSETS = ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "LTC")
MEMORY_YEARS = range(2017, 2025)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CheckRequest:
    """What ``qtrain llm check`` was asked for."""

    symbols: tuple[str, ...] = ()
    windows: int = DEFAULT_CHECK_WINDOWS
    timeframe: str = DEFAULT_TIMEFRAME
    window: int = DEFAULT_WINDOW
    #: Ask for a short free-text ``reasoning`` before the structured fields (README, "Reason, then answer").
    reason_first: bool = False


@dataclass
class _Answers:
    """What the model said about each window, in window order."""

    actions: list[int] = field(default_factory=list)
    regimes: list[str] = field(default_factory=list)
    mirrored: list[int] = field(default_factory=list)
    other: list[int] = field(default_factory=list)
    assets: list[str | None] = field(default_factory=list)
    years: list[str | None] = field(default_factory=list)
    prompt_tokens: list[float | None] = field(default_factory=list)
    answer_tokens: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Picked:
    """One window to ask about: the symbol, its candles with warm-up before and ``HORIZON`` after."""

    symbol: str
    ctx: Candles
    window: int

    @property
    def inside(self) -> Candles:
        """The window's own candles."""
        return self.ctx.slice(WARMUP, WARMUP + self.window)


def _ungapped_starts(ts: np.ndarray, step: int, span: int) -> np.ndarray:
    """Start indices ``i`` such that ``ts[i:i + span]`` has no gap (vectorised)."""
    if len(ts) < span:
        return np.zeros(0, dtype=np.int64)
    breaks = np.concatenate([[0], np.cumsum(np.diff(ts) != step)])
    starts = np.arange(len(ts) - span + 1)
    return starts[breaks[starts + span - 1] == breaks[starts]]


def pick_windows(settings: Settings, req: CheckRequest) -> list[Picked]:
    """``req.windows`` windows, split over the symbols, each symbol's spread over its stored range."""
    if req.windows < 1:
        raise BadInput(f"--windows must be >= 1, got {req.windows}")
    step = timeframe_seconds(req.timeframe)
    symbols = req.symbols or tuple(
        sorted({r["symbol"] for r in list_candles(settings.database_url) if r["timeframe"] == req.timeframe})
    )
    if not symbols:
        raise BadInput(
            f"no {req.timeframe} candles stored: run `qtrain candles import` or `qtrain candles fetch` first"
        )
    span = WARMUP + req.window + HORIZON
    picked: list[Picked] = []
    for i, symbol in enumerate(symbols):
        k = req.windows // len(symbols) + (i < req.windows % len(symbols))
        if k == 0:
            continue
        candles = load_candles(settings.database_url, symbol, req.timeframe)
        starts = _ungapped_starts(np.asarray(candles.ts, dtype=np.int64), step, span)
        if starts.size == 0:
            raise BadInput(
                f"{symbol}: no {span} consecutive {req.timeframe} candles stored (warm-up, window and"
                f" {HORIZON} after): import or fetch more with `qtrain candles`"
            )
        for s in np.unique(starts[np.linspace(0, starts.size - 1, k).round().astype(np.int64)]).tolist():
            picked.append(Picked(symbol, candles.slice(s, s + span), req.window))
    return picked


def _analyse(client: ChatClient, messages: list[dict[str, str]], reason_first: bool) -> tuple[Any, Any, str]:
    """(analysis or None, chat result or None, outcome: parsed|repaired|failed:<reason>)."""
    try:
        chat = client.chat(messages, format=REASONED_SCHEMA if reason_first else ANSWER_SCHEMA)
    except QtrainError as exc:
        return None, None, f"failed:{type(exc).__name__}"
    try:
        analysis = parse_answer(chat.text)
    except (AnswerError, ValueError):
        return None, chat, "failed:unreadable answer"
    return analysis, chat, "repaired" if analysis.n_repairs else "parsed"


def _messages(
    ctx: Candles, window: int, symbol: str, style: str, reason_first: bool = False
) -> list[dict[str, str]]:
    feats = compute_features(ctx)
    inside = slice(WARMUP, WARMUP + window)
    fw = {k: v[inside] for k, v in feats.items()}
    return build_messages(
        ctx.slice(WARMUP, WARMUP + window),
        fw,
        symbol=symbol,
        timeframe=ctx.timeframe,
        style=style,
        reason_first=reason_first,
    )


def memory_messages(user: str, assets: Sequence[str], years: Sequence[int]) -> list[dict[str, str]]:
    """The memory question about one anonymous window: which asset, which year (one JSON object)."""
    system = (
        "You see an anonymised summary of one crypto market window: the asset is not named, the "
        "window is not dated and prices are an index. Guess which asset it is, one of "
        f"{', '.join(assets)}, and which year, one of {years[0]}..{years[-1]}. Answer with ONE JSON "
        'object, no prose: {"asset": ..., "year": ...}.'
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def memory_schema(assets: Sequence[str], years: Sequence[int]) -> dict[str, Any]:
    """JSON schema of the memory answer (the asset an enum, the year a bounded integer)."""
    return {
        "type": "object",
        "properties": {
            "asset": {"type": "string", "enum": list(assets)},
            "year": {"type": "integer", "minimum": years[0], "maximum": years[-1]},
        },
        "required": ["asset", "year"],
        "additionalProperties": False,
    }


Guess = tuple[str | None, str | None]


def _guess(client: ChatClient, messages: list[dict[str, str]], schema: dict[str, Any]) -> Guess:
    try:
        obj = json.loads(client.chat(messages, format=schema).text)
    except (QtrainError, ValueError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    asset, year = obj.get("asset"), obj.get("year")
    return (str(asset) if asset else None), (str(year) if year is not None else None)


def _ask(
    client: ChatClient,
    p: Picked,
    style: str,
    out: _Answers,
    assets: list[str],
    years: list[int],
    *,
    reason_first: bool,
) -> None:
    """The four calls about window ``p``, appended to ``out``."""
    other = next(s for s in PROMPT_STYLES if s != style)
    t0 = time.monotonic()
    rf = reason_first
    analysis, chat, outcome = _analyse(client, _messages(p.ctx, p.window, p.symbol, style, rf), rf)
    out.seconds.append(time.monotonic() - t0)
    kind, _, reason = outcome.partition(":")
    out.outcomes[kind] += 1
    if reason:
        out.reasons[reason] += 1
    if analysis is not None:
        out.reasons.update({f"repair:{k}": v for k, v in analysis.repairs.items()})
    out.actions.append(NO_ANSWER if analysis is None else analysis.action)
    out.regimes.append("" if analysis is None else analysis.regime)
    out.prompt_tokens.append(None if chat is None else chat.prompt_tokens)
    out.answer_tokens.append(None if chat is None else chat.completion_tokens)
    mirrored = mirror_candles(p.ctx, float(p.ctx.close[WARMUP]))
    m, _, _ = _analyse(client, _messages(mirrored, p.window, p.symbol, style, rf), rf)
    out.mirrored.append(NO_ANSWER if m is None else m.action)
    o, _, _ = _analyse(client, _messages(p.ctx, p.window, p.symbol, other, rf), rf)
    out.other.append(NO_ANSWER if o is None else o.action)
    user = _messages(p.ctx, p.window, p.symbol, "anonymous")[1]["content"]
    asset, year = _guess(client, memory_messages(user, assets, years), memory_schema(assets, years))
    out.assets.append(asset)
    out.years.append(year)


def _guesses(guesses: list[str | None], truths: list[str], options: int) -> dict[str, Any]:
    """How often the model named the truth, against chance: what the same guesses would score if
    they ignored the window (``chance_agreement``), else one in ``options``."""
    chance = chance_agreement(guesses, truths)
    rate = guess_rate(guesses, truths).to_json()
    top = Counter(g for g in guesses if g).most_common(1)
    return {
        **rate,
        "chance": round(1 / options if chance is None else chance, 3),
        "options": options,
        "most_guessed": top[0][0] if top else None,
    }


def run_check(
    settings: Settings,
    req: CheckRequest,
    client: ChatClient,
    *,
    progress: Progress | None = None,
    picked: list[Picked] | None = None,
) -> dict[str, Any]:
    """Ask ``client`` about the picked windows (``pick_windows``'s, unless the caller picked them
    already) and measure the answers; the JSON of ``llm check``."""
    picked = pick_windows(settings, req) if picked is None else picked
    bases = [p.symbol.split("-")[0].upper() for p in picked]
    assets = sorted(set(MEMORY_ASSETS) | set(bases))
    first_years = [datetime.fromtimestamp(int(p.inside.ts[0]), tz=UTC).year for p in picked]
    years = list(range(min(MEMORY_YEARS.start, *first_years), max(MEMORY_YEARS.stop - 1, *first_years) + 1))
    style = settings.prompt_style
    out = _Answers()
    for i, p in enumerate(picked):
        _ask(client, p, style, out, assets, years, reason_first=req.reason_first)
        if progress is not None:
            progress(i + 1, len(picked))
    close = [np.asarray(p.ctx.close, dtype=np.float64) for p in picked]
    end = WARMUP + req.window - 1
    window_ret = [float(np.log(c[end] / c[WARMUP])) for c in close]
    future_ret = [float(np.log(c[end + HORIZON] / c[end])) for c in close]
    named, anonymous = (out.actions, out.other) if style == "named" else (out.other, out.actions)
    hit_named, hit_anon = direction_hit(named, future_ret), direction_hit(anonymous, future_ret)
    share = mode_share(out.actions)
    answered = [a for a in out.actions if a != NO_ANSWER]
    report: dict[str, Any] = {
        "model": getattr(client, "model", settings.llm_model),
        "api": settings.llm_api,
        "prompt": style,
        "reason_first": req.reason_first,
        "windows": len(picked),
        "symbols": sorted({p.symbol for p in picked}),
        "validity": {
            "answers": len(picked),
            "parsed": out.outcomes["parsed"],
            "repaired": out.outcomes["repaired"],
            "failed": out.outcomes["failed"],
            "reasons": dict(out.reasons.most_common()),
        },
        "tokens": {
            "prompt_median": median(out.prompt_tokens),
            "answer_median": median(out.answer_tokens),
            "seconds_median": median(out.seconds),
        },
        "sensitivity": {
            "mode_share": share.to_json(),
            "mode_action": ACTIONS[Counter(answered).most_common(1)[0][0]] if answered else None,
            "regime_agreement": regime_agreement(out.regimes, window_ret).to_json(),
            "mirror_flip": mirror_flip(out.actions, out.mirrored).to_json(),
        },
        "memory": {
            "asset": _guesses(out.assets, bases, len(assets)),
            "year": _guesses(out.years, [str(y) for y in first_years], len(years)),
            "next24_named": hit_named.to_json(),
            "next24_anonymous": hit_anon.to_json(),
            "names_gap": None
            if hit_named.value is None or hit_anon.value is None
            else round(hit_named.value - hit_anon.value, 3),
        },
    }
    report["verdict"] = make_verdict(report)
    return report
