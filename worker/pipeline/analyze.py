"""Analyse one window: cache lookup, prompt, analyst call, sanitised answer, one-transaction write.

Called by the thin Celery task in ``worker.runtime.tasks``; raises ``TemporaryError`` (retry) or
``PermanentError`` (record the window failed) and returns the window's final status otherwise.
"""

from __future__ import annotations

import json

from model.analyst.answer import Analysis, AnswerError, note_schema_ignored, parse_answer
from model.analyst.heuristic import heuristic_analysis
from model.analyst.prompt import build_messages, cache_key, window_content_hash
from model.candles import Candles, timeframe_seconds
from model.features import WARMUP, compute_features
from worker.clients.llm import ChatClient, ChatResult
from worker.errors import InvalidModelOutput, PermanentError
from worker.redact import redact
from worker.store import analyses
from worker.store.batches import Window
from worker.store.candles import SpanCache, load_candles

HEURISTIC = "heuristic"


#: This process's recently read candle spans (a batch's windows overlap: one query per span).
CANDLES = SpanCache()


def window_context(database_url: str, w: Window, *, cached: bool = False) -> Candles:
    """The window's candles plus ``WARMUP`` candles of history (what the prompt may depend on);
    ``cached``: from this process's span cache (``analyze`` checks them against the window's hash)."""
    step = timeframe_seconds(w.timeframe)
    since, until = w.start_ts - WARMUP * step, w.end_ts + step
    if cached:
        return CANDLES.get(database_url, w.symbol, w.timeframe, since=since, until=until)
    return load_candles(database_url, w.symbol, w.timeframe, since=since, until=until)


def analyze(database_url: str, w: Window, client: ChatClient | None) -> str:
    """Analyse window ``w`` (or find it cached) and store the result; returns done|cached.

    Raises ``batches.Superseded`` (nothing written) when ``w``'s claim was taken over meanwhile."""
    model_name = HEURISTIC if w.analyst == HEURISTIC else w.model
    key = cache_key(w.content_hash, model_name, w.prompt_version, w.prompt_style)
    cached = analyses.find_cached(database_url, key)
    if cached is not None:
        analyses.mark_cached(
            database_url, cached, batch_id=w.batch_id, symbol=w.symbol, idx=w.idx, attempt=w.attempts
        )
        return "cached"
    ctx = window_context(database_url, w, cached=True)
    digest = window_content_hash(ctx, symbol=w.symbol, timeframe=w.timeframe)
    if digest != w.content_hash:  # the cached span may predate a change: ask PostgreSQL itself
        CANDLES.forget(database_url, w.symbol, w.timeframe)
        ctx = window_context(database_url, w)
        digest = window_content_hash(ctx, symbol=w.symbol, timeframe=w.timeframe)
    if digest != w.content_hash:
        raise PermanentError("the window's candles changed since the batch was created; start a new batch")
    feats = compute_features(ctx)
    inside = ctx.ts >= w.start_ts
    win = ctx.slice(int(inside.argmax()), len(ctx))
    fwin = {k: v[inside] for k, v in feats.items()}
    chat: ChatResult | None = None
    if w.analyst == HEURISTIC:
        analysis: Analysis = heuristic_analysis(fwin)
        raw = json.dumps(analysis.to_json(), sort_keys=True)
    else:
        if client is None:
            raise PermanentError("no LLM client configured for an LLM batch")
        messages = build_messages(win, fwin, symbol=w.symbol, timeframe=w.timeframe, style=w.prompt_style)
        chat = client.chat(messages)
        raw = chat.text
        try:
            analysis = parse_answer(raw)
        except (AnswerError, ValueError) as exc:
            raise InvalidModelOutput(f"unusable model answer ({exc}); raw: {raw[:200]!r}") from exc
        if chat.constrained:  # a constrained answer off the schema: the server ignored the constraint
            analysis = note_schema_ignored(analysis)
    rec = analyses.AnalysisRecord(
        cache_key=key,
        content_hash=w.content_hash,
        symbol=w.symbol,
        timeframe=w.timeframe,
        start_ts=w.start_ts,
        end_ts=w.end_ts,
        model=model_name,
        prompt_version=w.prompt_version,
        analyst=w.analyst,
        raw_text=raw,
        prompt_tokens=chat.prompt_tokens if chat else None,
        completion_tokens=chat.completion_tokens if chat else None,
        total_duration_ms=chat.total_duration_ms if chat else None,
        eval_duration_ms=chat.eval_duration_ms if chat else None,
        host=redact(chat.host) if chat else None,  # stored and shown: never a URL's password
    )
    _, created = analyses.save_and_finish(
        database_url,
        rec,
        analysis,
        batch_id=w.batch_id,
        symbol=w.symbol,
        idx=w.idx,
        durable=chat is not None,
        attempt=w.attempts,  # fenced: only the claim's attempt writes
    )
    return "done" if created else "cached"
