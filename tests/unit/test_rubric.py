"""The rubric parser: JSON first, then `key: n` patterns; anything incomplete is missing, not a score."""

from __future__ import annotations

import pytest

from rag.measure.eval.rubric import Judgement, judge_prompt, parse_judgement, summarize


def test_plain_json() -> None:
    j = parse_judgement(
        '{"coherence": 5, "factuality": 4, "conciseness": 3, "reason": "Cites [1] but pads."}'
    )
    assert j == Judgement(5, 4, 3, "Cites [1] but pads.")


def test_json_in_a_code_fence_with_chatter_and_odd_keys() -> None:
    reply = (
        "Sure! Here is my grading:\n```json\n"
        '{"Coherence": "4", "Factuality": 5.0, "conciseness": "2/5", "Reason": "Too long."}\n```'
    )
    assert parse_judgement(reply) == Judgement(4, 5, 2, "Too long.")


def test_single_quoted_pseudo_json() -> None:
    j = parse_judgement(
        "{'coherence': 3, 'factuality': 2, 'conciseness': 4, 'reason': 'Unsupported'}"
    )
    assert j == Judgement(3, 2, 4, "Unsupported")


def test_fallback_to_key_value_lines() -> None:
    reply = "**Coherence**: 4/5\nFactuality = 2\nconciseness - 5\nreason: invents a date"
    assert parse_judgement(reply) == Judgement(4, 2, 5, "invents a date")


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The answer is good.",
        '{"coherence": 4, "factuality": 5}',  # conciseness missing
        '{"coherence": 7, "factuality": 5, "conciseness": 5}',  # out of range
        '{"coherence": 4.5, "factuality": 5, "conciseness": 5}',  # not a whole score
        "coherence: 10, factuality: 5, conciseness: 5",
        '{"coherence": true, "factuality": 5, "conciseness": 5}',
    ],
)
def test_unparsable_or_incomplete_is_missing(reply: str) -> None:
    assert parse_judgement(reply) is None


def test_summary_counts_missing_apart_from_scores() -> None:
    out = summarize([Judgement(5, 4, 3, ""), None, Judgement(3, 2, 1, "")])
    assert out == {
        "coherence": 4.0,
        "factuality": 3.0,
        "conciseness": 2.0,
        "judged": 2,
        "missing": 1,
    }
    assert summarize([None])["coherence"] is None


def test_prompt_carries_sources_question_and_answer_within_budget() -> None:
    msgs = judge_prompt("How long?", "30 days [1].", ["x" * 5000, "second passage"])
    body = msgs[1]["content"]
    assert msgs[0]["role"] == "system" and '"coherence"' in msgs[0]["content"]
    assert "QUESTION: How long?" in body and "ANSWER: 30 days [1]." in body
    assert "second passage" not in body  # the first source used up the budget
    assert len(body) < 2600
