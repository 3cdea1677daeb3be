"""The native Ollama path (``OllamaClient`` + ``parse_answer``) on real answers of a real model.

``tests/data/smollm2_answers.json`` holds answers recorded once from SmolLM2-135M-Instruct (Q4_1)
served by llama.cpp (llama-cpp-python's server, the embedded model of worker/embedded/llm.py) to
qtrain's own prompts, with the usage the server reported: recorded by ``bench/bench_llm.py
--record`` (its first case), not written by hand. Here each is played back as Ollama's
``/api/chat`` would return it (``message.content``, ``prompt_eval_count``, ``eval_count``,
``done_reason``) to the real client over ``httpx.MockTransport``, so the parsing of real model
output is checked without the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from model import ACTIONS
from model.analyst.answer import MAX_RULES, parse_answer
from worker.clients.llm import AnswerCut
from worker.clients.ollama import OllamaClient

DATA = Path(__file__).parent / "data" / "smollm2_answers.json"
RECORDED = json.loads(DATA.read_text())
ANSWERS: list[dict[str, Any]] = RECORDED["answers"]


def _messages(a: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "system", "content": RECORDED["system"]}, {"role": "user", "content": a["user"]}]


def _client(a: dict[str, Any], seen: list[dict[str, Any]]) -> OllamaClient:
    """An OllamaClient whose one host answers ``a`` as Ollama 0.12 would."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": "0.12.6"})
        assert request.url.path == "/api/chat"
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "model": RECORDED["model"],
                "message": {"role": "assistant", "content": a["text"]},
                "done": True,
                "done_reason": "length" if a["finish_reason"] == "length" else "stop",
                "prompt_eval_count": a["prompt_tokens"],
                "eval_count": a["completion_tokens"],
                "total_duration": int(a["seconds"] * 1e9),
                "eval_duration": int(a["seconds"] * 0.8e9),
            },
        )

    transport = httpx.MockTransport(handler)
    return OllamaClient(
        ("http://ollama:11434",),
        RECORDED["model"],
        client=httpx.Client(transport=transport),
        max_tokens=RECORDED["max_tokens"],
        max_retries=0,
        sleep=lambda _: None,
    )


def test_the_fixture_is_what_it_says() -> None:
    assert "SmolLM2-135M" in RECORDED["recorded_from"] and "llama.cpp" in RECORDED["recorded_from"]
    assert len(ANSWERS) >= 4
    assert any(a["finish_reason"] == "stop" for a in ANSWERS)
    assert any(a["finish_reason"] == "length" for a in ANSWERS)  # the model looped to the cap once


@pytest.mark.parametrize("a", [a for a in ANSWERS if a["finish_reason"] == "stop"], ids=lambda a: a["id"])
def test_a_finished_real_answer_parses_to_what_the_model_wrote(a: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []
    res = _client(a, seen).chat(_messages(a))
    assert seen[0]["messages"] == _messages(a) and seen[0]["options"]["num_predict"] == RECORDED["max_tokens"]
    assert (res.prompt_tokens, res.completion_tokens) == (a["prompt_tokens"], a["completion_tokens"])
    analysis = parse_answer(res.text)
    raw = json.loads(a["text"])  # the model's JSON as written (the grammar made it valid JSON)
    assert analysis.regime == raw["regime"]
    assert ACTIONS[analysis.action] == raw["action"]
    assert analysis.confidence == pytest.approx(min(1.0, max(0.0, float(raw["confidence"]))))
    assert len(analysis.rules) == min(len(raw["rules"]), MAX_RULES)
    for rule, raw_rule in zip(analysis.rules, raw["rules"], strict=False):
        assert [(c.feature, c.op, c.value) for c in rule.conditions] == [
            (c["feature"], c["op"], pytest.approx(float(c["value"]))) for c in raw_rule["conditions"]
        ]
    assert analysis.summary == raw["summary"][: len(analysis.summary)]


@pytest.mark.parametrize("a", [a for a in ANSWERS if a["finish_reason"] == "length"], ids=lambda a: a["id"])
def test_a_real_answer_that_looped_to_the_cap_is_a_failure_not_a_partial_analysis(a: dict[str, Any]) -> None:
    with pytest.raises(AnswerCut, match=f"answer cut at {a['completion_tokens']} tokens"):
        _client(a, []).chat(_messages(a))
