"""parse_answer: every defect models produce is repaired (and counted) or rejected."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import BUY, HOLD, SELL
from model.analyst.answer import (
    ANSWER_SCHEMA,
    ASKED_RULES,
    MAX_RULES,
    REGIMES,
    Analysis,
    AnswerError,
    note_schema_ignored,
    parse_answer,
    safe_float,
)
from model.analyst.rules import Condition, Rule, rule_from_json
from model.features import FEATURES


def good(**over: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "regime": "bull",
        "action": "BUY",
        "confidence": 0.7,
        "rules": [
            {
                "conditions": [{"feature": "rsi", "op": "<", "value": 30}],
                "action": "BUY",
                "confidence": 0.6,
                "rationale": "oversold",
            },
            {
                "conditions": [
                    {"feature": "macd_hist", "op": ">", "value": 0.0},
                    {"feature": "ema_gap", "op": ">", "value": 0.5},
                ],
                "action": "SELL",
                "confidence": 0.4,
                "rationale": "x",
            },
        ],
        "summary": "uptrend",
    }
    a.update(over)
    return a


def rule(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "conditions": [{"feature": "rsi", "op": "<", "value": 30}],
        "action": "BUY",
        "confidence": 0.6,
        "rationale": "r",
    }
    r.update(over)
    return r


@pytest.mark.parametrize(
    ("x", "want"),
    [
        (0.7, 0.7),
        (3, 3.0),
        ("0.7", 0.7),
        (" 1e-3 ", 0.001),
        ("70%", 70.0),
        ("-2.5", -2.5),
        ("+4", 4.0),
        (None, None),
        (True, None),
        (False, None),
        (float("nan"), None),
        (float("inf"), None),
        ("nan", None),
        ("-Infinity", None),
        ("", None),
        ("%", None),
        ("abc", None),
        ("1,5", None),
        ([1], None),
        ({"v": 1}, None),
        (10**400, None),
        ("1e400", None),
    ],
)
def test_safe_float(x: Any, want: float | None) -> None:
    got = safe_float(x)
    assert got == want
    assert got is None or math.isfinite(got)


def test_clean_answer_has_no_repairs() -> None:
    a = parse_answer(json.dumps(good()))
    assert (a.regime, a.action, a.confidence, a.summary) == ("bull", BUY, 0.7, "uptrend")
    assert a.repairs == {} and a.n_repairs == 0
    assert a.rules[0] == Rule((Condition("rsi", "<", 30.0),), BUY, 0.6, "oversold")
    assert a.rules[1].action == SELL and len(a.rules[1].conditions) == 2


CASES: list[tuple[str, str, dict[str, Any], dict[str, int]]] = [
    ("fence", "```json\n" + json.dumps(good()) + "\n```", {}, {"code_fence": 1}),
    ("fence_no_lang", "```\n" + json.dumps(good()) + "```", {}, {"code_fence": 1}),
    ("fence_unclosed", "```json\n" + json.dumps(good()), {}, {"code_fence": 1}),
    ("prose", "Sure! Here it is: " + json.dumps(good()) + " Hope it helps {x}.", {}, {"prose_stripped": 1}),
    ("brace_in_prose", "Use {curly} JSON: " + json.dumps(good()), {}, {"prose_stripped": 1}),
    ("string_conf", json.dumps(good(confidence="0.7")), {"confidence": 0.7}, {"string_number": 1}),
    (
        "pct_string_conf",
        json.dumps(good(confidence="70%")),
        {"confidence": 0.7},
        {"string_number": 1, "percent_confidence": 1},
    ),
    ("pct_number_conf", json.dumps(good(confidence=70)), {"confidence": 0.7}, {"percent_confidence": 1}),
    ("clamp_high", json.dumps(good(confidence=250)), {"confidence": 1.0}, {"clamped": 1}),
    ("clamp_low", json.dumps(good(confidence=-0.2)), {"confidence": 0.0}, {"clamped": 1}),
    ("enum_lower", json.dumps(good(action="buy", regime="BULL")), {"action": BUY}, {"enum_case": 2}),
    ("enum_title", json.dumps(good(action="Sell")), {"action": SELL}, {"enum_case": 1}),
    ("action_index", json.dumps(good(action=2)), {"action": SELL}, {"action_index": 1}),
    (
        "null_regime",
        json.dumps(good(regime=None)),
        {"regime": "range"},
        {"null_field": 1, "defaulted": 1},
    ),
    (
        "unknown_regime",
        json.dumps(good(regime="sideways")),
        {"regime": "range"},
        {"unknown_enum": 1, "defaulted": 1},
    ),
    ("null_action", json.dumps(good(action=None)), {"action": HOLD}, {"null_field": 1, "defaulted": 1}),
    ("null_conf", json.dumps(good(confidence=None)), {"confidence": 0.0}, {"null_field": 1, "defaulted": 1}),
    ("null_summary", json.dumps(good(summary=None)), {"summary": ""}, {"null_field": 1}),
    ("number_summary", json.dumps(good(summary=3)), {"summary": "3"}, {"not_a_string": 1}),
    ("long_summary", json.dumps(good(summary="x" * 5000)), {}, {"text_truncated": 1}),
    ("null_rules", json.dumps(good(rules=None)), {"n_rules": 0}, {"null_field": 1}),
    (
        "missing_summary",
        json.dumps({k: v for k, v in good().items() if k != "summary"}),
        {},
        {"missing_field": 1},
    ),
    ("extra_key", json.dumps(good(notes="...")), {}, {"extra_key_ignored": 1}),
    (
        "key_case",
        json.dumps({"Regime": "bull", **{k: v for k, v in good().items() if k != "regime"}}),
        {},
        {"key_case": 1},
    ),
    (
        "rule_string_numbers",
        json.dumps(
            good(rules=[rule(conditions=[{"feature": "rsi", "op": "<", "value": " 30 "}], confidence="60%")])
        ),
        {"n_rules": 1},
        {"string_number": 2, "percent_confidence": 1},
    ),
    (
        "rule_null_value",
        json.dumps(good(rules=[rule(conditions=[{"feature": "rsi", "op": "<", "value": None}])])),
        {"n_rules": 0},
        {"null_field": 1, "bad_value_dropped": 1, "rule_dropped": 1},
    ),
    (
        "rule_unknown_feature",
        json.dumps(good(rules=[rule(conditions=[{"feature": "stoch_rsi", "op": "<", "value": 1}]), rule()])),
        {"n_rules": 1},
        {"unknown_feature_dropped": 1, "rule_dropped": 1},
    ),
    (
        "rule_feature_case",
        json.dumps(good(rules=[rule(conditions=[{"feature": "RSI", "op": "<", "value": 1}])])),
        {"n_rules": 1},
        {"enum_case": 1},
    ),
    (
        "rule_one_bad_condition_drops_rule",
        json.dumps(
            good(
                rules=[
                    rule(
                        conditions=[
                            {"feature": "rsi", "op": "<", "value": 30},
                            {"feature": "pe_ratio", "op": "<", "value": 1},
                        ]
                    )
                ]
            )
        ),
        {"n_rules": 0},
        {"unknown_feature_dropped": 1, "rule_dropped": 1},
    ),
    (
        "rule_unknown_op",
        json.dumps(good(rules=[rule(conditions=[{"feature": "rsi", "op": "==", "value": 1}])])),
        {"n_rules": 0},
        {"unknown_op_dropped": 1, "rule_dropped": 1},
    ),
    (
        "rule_op_alias",
        json.dumps(good(rules=[rule(conditions=[{"feature": "rsi", "op": "=<", "value": 1}])])),
        {"n_rules": 1},
        {"op_alias": 1},
    ),
    (
        "rule_unknown_action",
        json.dumps(good(rules=[rule(action="SHORT")])),
        {"n_rules": 0},
        {"unknown_enum": 1, "rule_dropped": 1},
    ),
    (
        "rule_no_conditions",
        json.dumps(good(rules=[rule(conditions=[])])),
        {"n_rules": 0},
        {"rule_dropped": 1},
    ),
    (
        "rule_too_many_conditions",
        json.dumps(good(rules=[rule(conditions=[{"feature": "rsi", "op": "<", "value": 1}] * 4)])),
        {"n_rules": 0},
        {"too_many_conditions": 1, "rule_dropped": 1},
    ),
    (
        "rule_single_condition_object",
        json.dumps(good(rules=[rule(conditions={"feature": "rsi", "op": "<", "value": 1})])),
        {"n_rules": 1},
        {"wrapped_in_list": 1},
    ),
    (
        "rule_null_conf_takes_answer_conf",
        json.dumps(good(rules=[rule(confidence=None)])),
        {"rule0_conf": 0.7},
        {"null_field": 1},
    ),
    ("rule_not_object", json.dumps(good(rules=["rsi<30 buy", rule()])), {"n_rules": 1}, {"rule_dropped": 1}),
    (
        "rules_capped",
        json.dumps(good(rules=[rule()] * (MAX_RULES + 3))),
        {"n_rules": MAX_RULES},
        {"rules_capped": 3},
    ),
    ("rules_as_string", json.dumps(good(rules="none")), {"n_rules": 0}, {"defaulted": 1}),
]


@pytest.mark.parametrize(("name", "text", "want", "repairs"), CASES, ids=[c[0] for c in CASES])
def test_repairs(name: str, text: str, want: dict[str, Any], repairs: dict[str, int]) -> None:
    a = parse_answer(text)
    for key, value in repairs.items():
        assert a.repairs.get(key) == value, (key, a.repairs)
    # No repair other than the expected ones was counted.
    assert set(a.repairs) == set(repairs), a.repairs
    for key, value in want.items():
        if key == "n_rules":
            assert len(a.rules) == value
        elif key == "rule0_conf":
            assert a.rules[0].confidence == value
        else:
            assert getattr(a, key) == value
    assert 0.0 <= a.confidence <= 1.0 and a.regime in REGIMES


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I cannot help with that.",
        json.dumps(good())[:60],
        json.dumps(good())[: len(json.dumps(good())) * 3 // 4],  # holds a complete rule object
        "Answer: " + json.dumps(good())[:-1],
        "```json\n" + json.dumps(good())[:80] + "\n```",
        "[1, 2, 3]",
        '"just a string"',
        "42",
        "null",
        json.dumps({"foo": 1}),
        "{" * 5000 + "}" * 5000,
        "[" * 100_000,
    ],
)
def test_unreadable_raises_answer_error(text: str) -> None:
    with pytest.raises(AnswerError):
        parse_answer(text)


def test_answer_error_is_value_error() -> None:
    assert issubclass(AnswerError, ValueError)
    with pytest.raises(ValueError):
        parse_answer(None)  # type: ignore[arg-type]


def test_to_json_from_json_round_trip() -> None:
    a = parse_answer("```json\n" + json.dumps(good(confidence="70%")) + "\n```")
    stored = json.loads(json.dumps(a.to_json()))
    assert stored["action"] == "BUY" and stored["repairs"]["code_fence"] == 1
    assert Analysis.from_json(stored) == a
    for r in stored["rules"]:
        rule_from_json(r)


def test_schema_lists_features_and_required_fields() -> None:
    props = ANSWER_SCHEMA["properties"]
    cond = props["rules"]["items"]["properties"]["conditions"]["items"]["properties"]
    assert cond["feature"]["enum"] == list(FEATURES)
    assert set(ANSWER_SCHEMA["required"]) == {"regime", "action", "confidence", "rules", "summary"}
    assert props["rules"]["maxItems"] == ASKED_RULES <= MAX_RULES
    json.dumps(ANSWER_SCHEMA)


#: JSON-schema keywords llama.cpp's grammar (json-schema-to-grammar, also Ollama's and
#: llama-cpp-python's) honours; others are skipped silently (grammars/README.md, "unsupported").
GRAMMAR_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "description",
    "title",
}
#: Honoured on integers only.
INTEGER_ONLY = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def _grammar_problems(node: Any, path: str = "$") -> list[str]:
    """Keywords of ``node`` (a schema) that llama.cpp's grammar would skip or reject, with their paths."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    for key, value in node.items():
        if key in INTEGER_ONLY:
            if node.get("type") != "integer":
                problems.append(f"{path}.{key}: minimum/maximum are honoured on integers only")
        elif key not in GRAMMAR_KEYWORDS:
            problems.append(f"{path}.{key}: not supported by llama.cpp's grammar")
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and not 0 <= value < 2000:
            problems.append(f"{path}.{key}={value}: repetition bounds must stay below 2000")
    for name, sub in node.get("properties", {}).items():
        problems += _grammar_problems(sub, f"{path}.{name}")
    if "items" in node:
        problems += _grammar_problems(node["items"], f"{path}[]")
    if node.get("type") == "object" and node.get("additionalProperties") is not False:
        problems.append(f"{path}: objects need additionalProperties false (else extra keys cost tokens)")
    if "required" in node and set(node["required"]) - set(node.get("properties", {})):
        problems.append(f"{path}.required names a property that is not defined")
    return problems


def test_the_schema_stays_inside_what_llama_cpp_grammar_supports() -> None:
    assert _grammar_problems(ANSWER_SCHEMA) == []
    # the walker finds what it is meant to find
    props = {
        "c": {"type": "number", "minimum": 0},
        "s": {"type": "string", "maxLength": 5000},
        "u": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
    }
    bad = {"type": "object", "properties": props}
    found = " ".join(_grammar_problems(bad))
    assert "$.c.minimum" in found and "$.s.maxLength=5000" in found and "$.u.uniqueItems" in found
    assert "$: objects need additionalProperties false" in found


def test_schema_ignored_is_counted_for_off_schema_repairs_only() -> None:
    clean = parse_answer(json.dumps(good()))
    assert note_schema_ignored(clean) is clean
    fenced = note_schema_ignored(parse_answer("```json\n" + json.dumps(good()) + "\n```"))
    assert fenced.repairs == {"code_fence": 1, "schema_ignored": 1}
    for conf in (70, -2):  # the grammar cannot bound a number: a percent or a clamp is not off-schema
        repaired = note_schema_ignored(parse_answer(json.dumps(good(confidence=conf))))
        assert repaired.repairs and "schema_ignored" not in repaired.repairs


# -- property tests --------------------------------------------------------------------------

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["regime", "action", "confidence", "rules", "summary", "conditions", "feature", "op"])
_answerish = st.recursive(
    _json_leaf | st.sampled_from(["BUY", "sell", "rsi", "<", ">=", "70%", "bull"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


def _check(text: str) -> None:
    try:
        a = parse_answer(text)
    except ValueError:
        return
    assert a.regime in REGIMES and a.action in (HOLD, BUY, SELL)
    assert 0.0 <= a.confidence <= 1.0 and len(a.rules) <= MAX_RULES
    assert all(isinstance(v, int) and v > 0 for v in a.repairs.values())
    json.dumps(a.to_json(), allow_nan=False)
    for r in a.to_json()["rules"]:
        rule_from_json(r)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None)
@given(_json | _answerish, st.sampled_from(["{}", "```json\n{}\n```", "x {} y", "{}"]), st.integers(0, 400))
def test_random_json_never_crashes(obj: Any, wrap: str, cut: int) -> None:
    text = wrap.replace("{}", json.dumps(obj))
    _check(text)
    _check(text[:cut])


_cond = st.fixed_dictionaries(
    {
        "feature": st.sampled_from(FEATURES),
        "op": st.sampled_from(["<", "<=", ">", ">="]),
        "value": st.floats(-1e6, 1e6, allow_nan=False),
    }
)
_rule = st.fixed_dictionaries(
    {
        "conditions": st.lists(_cond, min_size=1, max_size=3),
        "action": st.sampled_from(["BUY", "SELL", "HOLD"]),
        "confidence": st.floats(0, 1),
        "rationale": st.text(max_size=50),
    }
)
_valid = st.fixed_dictionaries(
    {
        "regime": st.sampled_from(REGIMES),
        "action": st.sampled_from(["BUY", "SELL", "HOLD"]),
        "confidence": st.floats(0, 1),
        "rules": st.lists(_rule, max_size=MAX_RULES),
        "summary": st.text(max_size=100),
    }
)


@settings(max_examples=200, deadline=None)
@given(_valid)
def test_valid_answer_round_trips(obj: dict[str, Any]) -> None:
    a = parse_answer(json.dumps(obj))
    assert a.repairs == {}
    again = {k: v for k, v in a.to_json().items() if k != "repairs"}
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(obj))


def test_the_reason_first_variant_asks_reasoning_first_and_its_answer_needs_no_repair() -> None:
    from model.analyst.answer import ANSWER_SCHEMA, ASKED_REASONING_CHARS, REASONED_SCHEMA

    assert list(REASONED_SCHEMA["properties"])[0] == "reasoning"
    assert REASONED_SCHEMA["required"][0] == "reasoning"
    assert REASONED_SCHEMA["properties"]["reasoning"]["maxLength"] == ASKED_REASONING_CHARS
    assert "reasoning" not in ANSWER_SCHEMA["properties"]  # the default stays schema-first
    answer = {"reasoning": "falling", "regime": "bear", "action": "SELL", "confidence": 0.6, "rules": []}
    text = json.dumps({**answer, "summary": "down"})
    a = parse_answer(text)
    assert (a.regime, a.action, a.repairs) == ("bear", 2, {})
