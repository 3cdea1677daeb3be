"""The analyst's answer: its JSON schema, and a lenient parser that repairs and counts.

Models return nulls, strings for numbers, code fences, out-of-range values and unknown features.
``parse_answer`` repairs what can be repaired without guessing, drops what cannot, and counts
every repair in ``Analysis.repairs`` so that a batch can report how clean the model's output was.
The text is data, never code: it goes through ``json.loads`` only.

Defaults for missing or invalid top-level fields are the *safe* ones, i.e. an answer that makes
the analysis count for nothing: ``regime="range"``, ``action=HOLD``, ``confidence=0.0``,
``rules=()``, ``summary=""``; each counts as ``defaulted`` (plus ``missing_field`` /
``null_field`` / ``unknown_enum``). A rule without a usable confidence takes the answer's
confidence. A confidence of ``"70%"`` or a number in (1, 100] is read as a percentage (0.7);
other values outside 0..1 are clamped. A rule with any unusable condition (unknown feature or
operator, non-numeric value) is dropped whole: dropping one condition of an AND would loosen it.
An answer with none of the fields at all, a truncated one, or one that is not JSON is an
``AnswerError``.

Repair counters (keys of ``Analysis.repairs``): code_fence, prose_stripped, key_case,
extra_key_ignored, missing_field, null_field, defaulted, string_number, percent_confidence,
clamped, enum_case, unknown_enum, action_index, op_alias, wrapped_in_list, unknown_feature_dropped,
unknown_op_dropped, bad_value_dropped, too_many_conditions, rule_dropped, rules_capped,
text_truncated, not_a_string; and schema_ignored (``note_schema_ignored``: an answer that was sent
with the schema as its constraint needed a repair the constraint rules out, so the server ignored it).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from model import ACTIONS, HOLD
from model.analyst.rules import (
    MAX_CONDITIONS,
    MAX_RATIONALE_CHARS,
    OPS,
    Condition,
    Rule,
    rule_from_json,
    rule_to_json,
)
from model.features import FEATURES

REGIMES: tuple[str, ...] = ("bull", "bear", "range", "volatile")
DEFAULT_REGIME = "range"
#: Rules kept of one answer at most (an answer from a server that ignored the schema may have more).
MAX_RULES = 8
MAX_SUMMARY_CHARS = 2000
#: What the schema asks for, so that an answer costs few tokens (decoding is a window's GPU time):
#: at most ``ASKED_RULES`` rules, a rationale of a few words, a one-sentence summary. The reducer
#: and the run-time agent read a rule's conditions, action and confidence; rationale and summary
#: are only stored and shown, so they are kept short rather than dropped.
ASKED_RULES = 2
ASKED_RATIONALE_CHARS = 24
ASKED_SUMMARY_CHARS = 60
_MAX_OBJECT_TRIES = 20

OP_ALIASES: dict[str, str] = {
    "=<": "<=",
    "=>": ">=",
    "lt": "<",
    "le": "<=",
    "lte": "<=",
    "gt": ">",
    "ge": ">=",
    "gte": ">=",
    "≤": "<=",
    "≥": ">=",
}

_CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "feature": {"type": "string", "enum": list(FEATURES)},
        "op": {"type": "string", "enum": list(OPS)},
        "value": {"type": "number"},
    },
    "required": ["feature", "op", "value"],
    "additionalProperties": False,
}

#: JSON schema of the answer: Ollama's ``format``, the OpenAI API's ``response_format`` schema.
#: Only keywords llama.cpp's grammar honours (it skips others silently, rejects repetition bounds
#: >= 2000 and handles minimum/maximum on integers only): confidences are clamped by the parser.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "regime": {"type": "string", "enum": list(REGIMES)},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "confidence": {"type": "number"},
        "rules": {
            "type": "array",
            "maxItems": ASKED_RULES,
            "items": {
                "type": "object",
                "properties": {
                    "conditions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_CONDITIONS,
                        "items": _CONDITION_SCHEMA,
                    },
                    "action": {"type": "string", "enum": list(ACTIONS)},
                    "confidence": {"type": "number"},
                    "rationale": {"type": "string", "maxLength": ASKED_RATIONALE_CHARS},
                },
                "required": ["conditions", "action", "confidence", "rationale"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string", "maxLength": ASKED_SUMMARY_CHARS},
    },
    "required": ["regime", "action", "confidence", "rules", "summary"],
    "additionalProperties": False,
}

_FIELDS = ("regime", "action", "confidence", "rules", "summary")
#: Keys an answer may carry besides ``_FIELDS`` without counting as a repair: the free text of the
#: reason-first variant (``REASONED_SCHEMA``), read by nobody, so not stored in the analysis.
_OPTIONAL_FIELDS = ("reasoning",)
#: The reason-first variant's free text, at most this many characters (``qtrain llm check --reason-first``).
ASKED_REASONING_CHARS = 120

#: ``ANSWER_SCHEMA`` with a short free-text ``reasoning`` first (a grammar writes properties in
#: order, so the model writes what it sees before it picks regime and action): issue 27's
#: experiment, measured by ``qtrain llm check --reason-first`` (README, "Reason, then answer").
REASONED_SCHEMA: dict[str, Any] = {
    **ANSWER_SCHEMA,
    "properties": {
        "reasoning": {"type": "string", "maxLength": ASKED_REASONING_CHARS},
        **ANSWER_SCHEMA["properties"],
    },
    "required": ["reasoning", *ANSWER_SCHEMA["required"]],
}
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


class AnswerError(ValueError):
    """Raised when the model's text cannot be read as an answer (not JSON, truncated, no fields)."""


@dataclass(frozen=True)
class Analysis:
    """One window's analysis: regime, proposed action, confidence, rules, summary, repair counts."""

    regime: str
    action: int
    confidence: float
    rules: tuple[Rule, ...]
    summary: str
    repairs: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict for storage (``from_json`` reads it back)."""
        return {
            "regime": self.regime,
            "action": ACTIONS[self.action],
            "confidence": self.confidence,
            "rules": [rule_to_json(r) for r in self.rules],
            "summary": self.summary,
            "repairs": dict(sorted(self.repairs.items())),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Analysis:
        """Strictly read back what ``to_json`` wrote (ValueError on any defect)."""
        if obj.get("regime") not in REGIMES or obj.get("action") not in ACTIONS:
            raise ValueError("analysis regime or action is not valid")
        conf = obj.get("confidence")
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
            raise ValueError(f"analysis confidence must be a number in 0..1, got {conf!r}")
        return cls(
            regime=obj["regime"],
            action=ACTIONS.index(obj["action"]),
            confidence=float(conf),
            rules=tuple(rule_from_json(r) for r in obj.get("rules", [])),
            summary=str(obj.get("summary", "")),
            repairs={str(k): int(v) for k, v in dict(obj.get("repairs", {})).items()},
        )

    @property
    def n_repairs(self) -> int:
        """Total number of repairs made while parsing."""
        return sum(self.repairs.values())


def _number_from_string(text: str) -> tuple[float | None, bool]:
    """(value, had_percent_sign) of a numeric string, value None when it is not a finite number."""
    s = text.strip()
    pct = s.endswith("%")
    if pct:
        s = s[:-1].strip()
    if not s or len(s) > 64:
        return None, pct
    try:
        v = float(s)
    except (ValueError, OverflowError):
        return None, pct
    return (v if math.isfinite(v) else None), pct


def safe_float(x: Any) -> float | None:
    """``x`` as a finite float, or None: numbers and numeric strings (" 1e-3 ", "0.7", "70%" -> 70.0).

    A trailing ``%`` is dropped, not applied: features are already in percent (``ret_24 > 2%``
    means 2). Confidence percentages are handled by the parser. Bools, NaN, inf, garbage -> None.
    """
    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Real):
        try:
            v = float(x)
        except (OverflowError, ValueError):
            return None
        return v if math.isfinite(v) else None
    if isinstance(x, str):
        return _number_from_string(x)[0]
    return None


def _extract_object(text: str, repairs: Counter[str]) -> dict[str, Any]:
    """The answer object in ``text``: fences stripped, surrounding prose ignored."""
    if not isinstance(text, str):
        raise AnswerError(f"answer must be a string, got {type(text).__name__}")
    s = text.strip()
    if "```" in s:
        m = _FENCE.search(s)
        if m is not None:
            s = m.group(1).strip()
            repairs["code_fence"] += 1
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        return obj
    # Prose around the object: try each top-level {...} span in turn (never one nested inside
    # another, so a truncated answer cannot pass off one of its rules as the answer).
    start = s.find("{")
    tries = 0
    while start != -1 and tries < _MAX_OBJECT_TRIES:
        tries += 1
        end = _balanced_end(s, start)
        if end is None:
            raise AnswerError(f"answer is truncated JSON ({len(text)} chars, an object never closes)")
        try:
            obj = json.loads(s[start:end])
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            repairs["prose_stripped"] += 1
            return obj
        start = s.find("{", end)
    if "{" in s:
        raise AnswerError(f"answer is invalid JSON ({len(text)} chars)")
    raise AnswerError(f"answer is not JSON ({len(text)} chars)")


def _balanced_end(s: str, start: int) -> int | None:
    """Index just past the brace closing the one at ``start`` (strings respected), None if none."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(s)):
        ch = s[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _enum(value: Any, allowed: tuple[str, ...], repairs: Counter[str]) -> str | None:
    """``value`` matched case-insensitively against ``allowed`` (None when it does not match)."""
    if not isinstance(value, str):
        return None
    if value in allowed:
        return value
    by_fold = {a.casefold(): a for a in allowed}
    hit = by_fold.get(value.strip().casefold())
    if hit is not None:
        repairs["enum_case"] += 1
    return hit


def _action(value: Any, repairs: Counter[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(ACTIONS):
        repairs["action_index"] += 1
        return value
    name = _enum(value, ACTIONS, repairs)
    return None if name is None else ACTIONS.index(name)


def _number(value: Any, repairs: Counter[str]) -> float | None:
    if isinstance(value, str):
        v = safe_float(value)
        if v is not None:
            repairs["string_number"] += 1
        return v
    return safe_float(value)


def _confidence(value: Any, repairs: Counter[str]) -> float | None:
    """A 0..1 confidence: "70%" and 70 mean 0.7; other out-of-range values are clamped."""
    pct = isinstance(value, str) and value.strip().endswith("%")
    v = _number(value, repairs)
    if v is None:
        return None
    if pct or 1.0 < v <= 100.0:
        v /= 100.0
        repairs["percent_confidence"] += 1
    if not 0.0 <= v <= 1.0:
        v = min(max(v, 0.0), 1.0)
        repairs["clamped"] += 1
    return v


def _text(value: Any, limit: int, repairs: Counter[str]) -> str:
    if value is None:
        return ""
    text: str
    if isinstance(value, str):
        text = value
    else:
        repairs["not_a_string"] += 1
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    if len(text) > limit:
        repairs["text_truncated"] += 1
        text = text[:limit]
    return text


def _as_list(value: Any, repairs: Counter[str]) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        repairs["wrapped_in_list"] += 1
        return [value]
    return None


def _lower_keys(obj: Mapping[Any, Any], repairs: Counter[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = str(k).strip().lower()
        if key != k:
            repairs["key_case"] += 1
        out.setdefault(key, v)
    return out


def _condition(raw: Any, repairs: Counter[str]) -> Condition | None:
    if not isinstance(raw, Mapping):
        return None
    c = _lower_keys(raw, repairs)
    feature = c.get("feature")
    if isinstance(feature, str) and feature not in FEATURES:
        folded = feature.strip().lower()
        if folded in FEATURES:
            repairs["enum_case"] += 1
            feature = folded
    if feature not in FEATURES:
        repairs["unknown_feature_dropped"] += 1
        return None
    op = c.get("op")
    if isinstance(op, str) and op not in OPS:
        alias = OP_ALIASES.get(op.strip().lower(), op.strip())
        if alias in OPS:
            repairs["op_alias"] += 1
        op = alias
    if op not in OPS:
        repairs["unknown_op_dropped"] += 1
        return None
    raw_value = c.get("value")
    if raw_value is None:
        repairs["null_field"] += 1
    value = _number(raw_value, repairs)
    if value is None:
        repairs["bad_value_dropped"] += 1
        return None
    return Condition(str(feature), str(op), value)


def _rule(raw: Any, default_conf: float, repairs: Counter[str]) -> Rule | None:
    """One repaired rule, or None (counted) when it cannot be kept without changing its meaning."""
    if not isinstance(raw, Mapping):
        return None
    r = _lower_keys(raw, repairs)
    conds_raw = _as_list(r.get("conditions"), repairs)
    if not conds_raw:
        return None
    if len(conds_raw) > MAX_CONDITIONS:
        repairs["too_many_conditions"] += 1
        return None
    conds = [_condition(c, repairs) for c in conds_raw]
    # Dropping one condition of an AND would loosen the rule: a rule with any bad condition goes.
    if any(c is None for c in conds):
        return None
    action = _action(r.get("action"), repairs)
    if action is None:
        repairs["unknown_enum"] += 1
        return None
    conf = _confidence(r.get("confidence"), repairs)
    if conf is None:
        repairs["null_field" if r.get("confidence", 0) is None else "defaulted"] += 1
        conf = default_conf
    rationale = _text(r.get("rationale"), MAX_RATIONALE_CHARS, repairs)
    return Rule(tuple(c for c in conds if c is not None), action, conf, rationale)


def _top_field(obj: dict[str, Any], name: str, repairs: Counter[str]) -> Any:
    if name not in obj:
        repairs["missing_field"] += 1
        return None
    if obj[name] is None:
        repairs["null_field"] += 1
    return obj[name]


def parse_answer(text: str) -> Analysis:
    """Parse, repair and validate a model's answer; ``AnswerError`` (a ValueError) if unreadable.

    See the module docstring for the repairs, the safe defaults and the counter names.
    """
    repairs: Counter[str] = Counter()
    obj = _lower_keys(_extract_object(text, repairs), repairs)
    if not any(k in obj for k in _FIELDS):
        raise AnswerError(f"answer has none of the fields {', '.join(_FIELDS)}")
    repairs["extra_key_ignored"] += sum(1 for k in obj if k not in _FIELDS and k not in _OPTIONAL_FIELDS)

    raw = _top_field(obj, "regime", repairs)
    regime = _enum(raw, REGIMES, repairs)
    if regime is None:
        if raw is not None:
            repairs["unknown_enum"] += 1
        repairs["defaulted"] += 1
        regime = DEFAULT_REGIME

    raw = _top_field(obj, "action", repairs)
    action = _action(raw, repairs)
    if action is None:
        if raw is not None:
            repairs["unknown_enum"] += 1
        repairs["defaulted"] += 1
        action = HOLD

    confidence = _confidence(_top_field(obj, "confidence", repairs), repairs)
    if confidence is None:
        repairs["defaulted"] += 1
        confidence = 0.0

    rules: list[Rule] = []
    raw = _top_field(obj, "rules", repairs)
    raw_rules = _as_list(raw, repairs)
    if raw_rules is None and raw is not None:
        repairs["defaulted"] += 1
    for rr in raw_rules or []:
        rule = _rule(rr, confidence, repairs)
        if rule is None:
            repairs["rule_dropped"] += 1
        elif len(rules) >= MAX_RULES:
            repairs["rules_capped"] += 1
        else:
            rules.append(rule)

    summary = _text(_top_field(obj, "summary", repairs), MAX_SUMMARY_CHARS, repairs)
    return Analysis(
        regime=regime,
        action=action,
        confidence=confidence,
        rules=tuple(rules),
        summary=summary,
        repairs={k: v for k, v in sorted(repairs.items()) if v},
    )


#: Repairs an answer generated under ``ANSWER_SCHEMA`` as a grammar cannot need: seen in an answer
#: that was sent with the schema, they mean the server ignored the constraint (free text, 200).
OFF_SCHEMA_REPAIRS = frozenset(
    {
        "code_fence",
        "prose_stripped",
        "key_case",
        "extra_key_ignored",
        "missing_field",
        "null_field",
        "string_number",
        "enum_case",
        "unknown_enum",
        "action_index",
        "wrapped_in_list",
        "unknown_feature_dropped",
        "unknown_op_dropped",
        "bad_value_dropped",
        "too_many_conditions",
        "rules_capped",
        "not_a_string",
    }
)


def note_schema_ignored(analysis: Analysis) -> Analysis:
    """``analysis`` with ``schema_ignored`` counted once when its repairs show the schema was not
    followed (call it for answers that were constrained by ``ANSWER_SCHEMA``)."""
    if not OFF_SCHEMA_REPAIRS.intersection(analysis.repairs):
        return analysis
    repairs = dict(analysis.repairs, schema_ignored=analysis.repairs.get("schema_ignored", 0) + 1)
    return replace(analysis, repairs=dict(sorted(repairs.items())))
