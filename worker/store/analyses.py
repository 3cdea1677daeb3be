"""Storage of LLM analyses and their trading rules: the cache, written once per cache key.

An analysis is keyed by ``cache_key(content_hash, model, prompt_version)``: the same window
content analysed by the same model with the same prompt is stored once, ever, and a task that
runs twice (acks late) finds the row and writes nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model import ACTIONS
from model.analyst.answer import Analysis
from model.analyst.rules import Rule, rule_from_json, rule_to_json
from model.learning.training import AnalysedWindow
from worker.store import batches, db
from worker.store.db import Cursor


@dataclass(frozen=True)
class AnalysisRecord:
    """What the worker stores besides the parsed analysis: provenance and cost of the call."""

    cache_key: str
    content_hash: str
    symbol: str
    timeframe: str
    start_ts: int
    end_ts: int
    model: str
    prompt_version: int
    analyst: str
    raw_text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_duration_ms: float | None = None
    eval_duration_ms: float | None = None
    host: str | None = None


def find_cached(url: str, cache_key: str) -> int | None:
    """Id of the analysis stored under ``cache_key``, or None."""
    with db.transaction(url) as cur:
        cur.execute("SELECT id FROM btc.ollama_analyses WHERE cache_key = %s", (cache_key,))
        row = cur.fetchone()
    return None if row is None else int(row[0])


def save_and_finish(
    url: str,
    rec: AnalysisRecord,
    analysis: Analysis,
    *,
    batch_id: int,
    symbol: str,
    idx: int,
    durable: bool = True,
    attempt: int | None = None,
) -> tuple[int, bool]:
    """Store analysis + rules and mark the window done, in one transaction; idempotent.

    Returns (analysis id, created). When another task stored the same key first, nothing is
    written but the window still points at the stored analysis (status ``cached``). ``durable``:
    wait for the WAL flush (LLM answers cost GPU time; a heuristic analysis is cheap to redo).
    ``attempt``: the claim's fencing token; a copy that no longer holds the claim raises
    ``batches.Superseded`` and nothing of this transaction is written.
    """
    with db.transaction(url, durable=durable) as cur:
        cur.execute(
            "INSERT INTO btc.ollama_analyses (cache_key, content_hash, symbol, timeframe, start_ts,"
            " end_ts, model, prompt_version, analyst, regime, action, confidence, summary, raw_text,"
            " repairs, prompt_tokens, completion_tokens, total_duration_ms, eval_duration_ms, host)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (cache_key) DO NOTHING RETURNING id",
            (
                rec.cache_key,
                rec.content_hash,
                rec.symbol,
                rec.timeframe,
                batches.ts_to_dt(rec.start_ts),
                batches.ts_to_dt(rec.end_ts),
                rec.model,
                rec.prompt_version,
                rec.analyst,
                analysis.regime,
                analysis.action,
                analysis.confidence,
                analysis.summary,
                rec.raw_text,
                json.dumps(analysis.repairs),
                rec.prompt_tokens,
                rec.completion_tokens,
                rec.total_duration_ms,
                rec.eval_duration_ms,
                rec.host,
            ),
        )
        row = cur.fetchone()
        created = row is not None
        if created:
            analysis_id = int(row[0])
            if analysis.rules:  # one statement for all the rules (a round trip each cost ~0.1 ms CPU)
                values = [
                    (
                        analysis_id,
                        i,
                        json.dumps(rule_to_json(rule)["conditions"]),
                        rule.action,
                        rule.confidence,
                        rule.rationale,
                    )
                    for i, rule in enumerate(analysis.rules)
                ]
                cur.execute(
                    "INSERT INTO btc.ollama_trading_rules (analysis_id, idx, conditions, action,"
                    " confidence, rationale) VALUES "
                    + ",".join(["(%s,%s,%s,%s,%s,%s)"] * len(values))
                    + " ON CONFLICT (analysis_id, idx) DO NOTHING",
                    [v for row_values in values for v in row_values],
                )
        else:
            cur.execute("SELECT id FROM btc.ollama_analyses WHERE cache_key = %s", (rec.cache_key,))
            analysis_id = int(cur.fetchone()[0])
        batches.finish_window(
            cur,
            batch_id,
            symbol,
            idx,
            "done" if created else "cached",
            analysis_id=analysis_id,
            attempt=attempt,
        )
    return analysis_id, created


def mark_cached(
    url: str, analysis_id: int, *, batch_id: int, symbol: str, idx: int, attempt: int | None = None
) -> None:
    """Point a window at an analysis that was already stored (a cache hit); cheap to redo.
    ``attempt``: fenced as in ``save_and_finish``."""
    with db.transaction(url, durable=False) as cur:
        batches.finish_window(cur, batch_id, symbol, idx, "cached", analysis_id=analysis_id, attempt=attempt)


def rules_of(cur: Cursor, analysis_ids: list[int]) -> dict[int, tuple[Rule, ...]]:
    """The stored rules of each analysis id, in rule order (ids without rules map to ``()``)."""
    found: dict[int, list[Rule]] = {i: [] for i in analysis_ids}
    if analysis_ids:
        cur.execute(
            "SELECT analysis_id, conditions, action, confidence, rationale FROM btc.ollama_trading_rules"
            " WHERE analysis_id = ANY(%s) ORDER BY analysis_id, idx",
            (list(analysis_ids),),
        )
        for aid, conds, action, conf, rationale in cur.fetchall():
            body = {
                "conditions": conds if not isinstance(conds, str) else json.loads(conds),
                "action": ACTIONS[int(action)],
                "confidence": conf,
                "rationale": rationale or "",
            }
            found[int(aid)].append(rule_from_json(body))
    return {k: tuple(v) for k, v in found.items()}


def batch_analyses(url: str, batch_id: int, symbol: str) -> list[AnalysedWindow]:
    """The analyses of a symbol's finished windows in a batch, in window order, with their rules."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT a.id, extract(epoch FROM w.start_ts)::bigint, extract(epoch FROM w.end_ts)::bigint,"
            " a.action, a.confidence FROM btc.windows w JOIN btc.ollama_analyses a ON a.id = w.analysis_id"
            " WHERE w.batch_id = %s AND w.symbol = %s AND w.status IN ('done', 'cached') ORDER BY w.idx",
            (batch_id, symbol),
        )
        return _analysed(cur, cur.fetchall())


def cached_analyses(
    url: str,
    symbol: str,
    timeframe: str,
    *,
    until: int,
    since: int | None = None,
    model: str | None = None,
    prompt_version: int | None = None,
) -> list[AnalysedWindow]:
    """Stored analyses of ``symbol`` whose window lies in ``[since, until)`` (one per window: the
    newest), in window order, with their rules; only those of ``model`` and of ``prompt_version``
    (a prompt style's: named and anonymous analyses never mix) when given. No LLM call."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT DISTINCT ON (start_ts, end_ts) id, extract(epoch FROM start_ts)::bigint,"
            " extract(epoch FROM end_ts)::bigint, action, confidence FROM btc.ollama_analyses"
            " WHERE symbol = %s AND timeframe = %s AND end_ts < to_timestamp(%s)"
            " AND (%s::bigint IS NULL OR start_ts >= to_timestamp(%s))"
            " AND (%s::text IS NULL OR model = %s) AND (%s::int IS NULL OR prompt_version = %s)"
            " ORDER BY start_ts, end_ts, id DESC",
            (symbol, timeframe, until, since, since, model, model, prompt_version, prompt_version),
        )
        return _analysed(cur, cur.fetchall())


def _analysed(cur: Cursor, rows: list[Any]) -> list[AnalysedWindow]:
    """Rows ``(analysis id, start_ts, end_ts, action, confidence)`` as ``AnalysedWindow``s with rules."""
    rules = rules_of(cur, sorted({int(r[0]) for r in rows}))
    return [
        AnalysedWindow(
            int(r[1]),
            int(r[2]),
            int(r[3]) if r[3] is not None else 0,
            float(r[4]) if r[4] is not None else 0.0,
            rules[int(r[0])],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ShownAnalysis:
    """One analysed window of a batch as a person reads it (the demo prints a few)."""

    symbol: str
    start_ts: int
    regime: str | None
    action: int | None
    confidence: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_duration_ms: float | None
    summary: str | None
    n_rules: int


def shown_analyses(url: str, batch_id: int, limit: int) -> list[ShownAnalysis]:
    """The first ``limit`` analysed windows of a batch (by symbol and index) with their rule counts."""
    with db.transaction(url) as cur:
        cur.execute(
            "SELECT w.symbol, extract(epoch FROM w.start_ts)::bigint AS start_ts, a.regime, a.action,"
            " a.confidence, a.prompt_tokens, a.completion_tokens, a.total_duration_ms, a.summary,"
            " (SELECT count(*) FROM btc.ollama_trading_rules r WHERE r.analysis_id = a.id) AS n_rules"
            " FROM btc.windows w JOIN btc.ollama_analyses a ON a.id = w.analysis_id"
            " WHERE w.batch_id = %s ORDER BY w.symbol, w.idx LIMIT %s",
            (batch_id, limit),
        )
        return [ShownAnalysis(**db.named(cur, r)) for r in cur.fetchall()]


def analysed_keys(cur: Cursor, keys: list[str]) -> set[str]:
    """Which of ``keys`` (cache keys) have a stored analysis, through the caller's cursor."""
    cur.execute("SELECT cache_key FROM btc.ollama_analyses WHERE cache_key = ANY(%s)", (list(keys),))
    return {r[0] for r in cur.fetchall()}
