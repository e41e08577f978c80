"""A quality rubric judged by a model: coherence, factuality against the sources, conciseness (1-5).

The judge is asked for one line of JSON at temperature 0. Models do not always comply, so the
parser tries JSON first (the first {...} in the reply, code fences and single quotes tolerated),
then ``key: n`` patterns. A reply without all three scores is *missing*, never a guessed score.

Known bias: the judge is the large model, and it also judges its own answers (self-preference).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.errors import ModelError
from rag.models.base import CallRecord, ChatModel, Message

CRITERIA = ("coherence", "factuality", "conciseness")
JUDGE_BIAS = (
    "The judge is the large model, and it judges its own answers as well as the small "
    "model's: models tend to prefer their own wording (self-preference), so read the large "
    "model's rubric scores as an upper bound and compare them with the gold-answer metrics."
)
JUDGE_SYSTEM = (
    "You grade an answer to a question about company documents. Give each criterion a whole "
    "number from 1 (bad) to 5 (excellent):\n"
    "- coherence: the answer is clear, well-formed and on topic;\n"
    "- factuality: every claim is supported by the SOURCES (an answer that says the sources do "
    "not cover the question is factual when they indeed do not);\n"
    "- conciseness: no padding, repetition or unrelated detail.\n"
    'Reply with ONE line of JSON and nothing else: {"coherence": n, "factuality": n, '
    '"conciseness": n, "reason": "one short sentence"}'
)
MAX_SOURCE_CHARS = 2400  # the judge reads the sources on 2 CPU cores; keep its prompt short


@dataclass(frozen=True)
class Judgement:
    coherence: int
    factuality: int
    conciseness: int
    reason: str

    def scores(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in CRITERIA}


_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_REASON = re.compile(r"""["']?reason["']?\s*[:=]\s*["']?(.+?)["']?\s*(?:[,}]\s*$|[}\n]|$)""", re.I)


def _score(value: Any) -> int | None:
    """A whole score 1-5 from 4, 4.0, "4" or "4/5"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([1-5])(?:\.0)?\s*(?:/\s*5)?\s*", value)
        return int(m.group(1)) if m else None
    if isinstance(value, int | float) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    return None


def _from_json(text: str) -> Judgement | None:
    for match in _OBJECT.finditer(text):
        raw = match.group(0)
        for candidate in (raw, raw.replace("'", '"')):
            try:
                data = json.loads(candidate)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            lowered = {str(k).strip().lower(): v for k, v in data.items()}
            coh, fact, conc = (_score(lowered.get(c)) for c in CRITERIA)
            if coh is not None and fact is not None and conc is not None:
                return Judgement(coh, fact, conc, str(lowered.get("reason", "")).strip())
    return None


def _from_patterns(text: str) -> Judgement | None:
    scores: dict[str, int] = {}
    for c in CRITERIA:
        m = re.search(rf"{c}\W{{0,6}}?\s*([1-5])(?:\.0)?(?![\d.]*\d)(?:\s*/\s*5)?", text, re.I)
        if m is None:
            return None
        scores[c] = int(m.group(1))
    reason = _REASON.search(text)
    return Judgement(
        scores["coherence"],
        scores["factuality"],
        scores["conciseness"],
        reason.group(1).strip() if reason else "",
    )


def parse_judgement(text: str) -> Judgement | None:
    """The three scores and the reason from a judge's reply, or None if any score is missing."""
    cleaned = _FENCE.sub("", text)
    return _from_json(cleaned) or _from_patterns(cleaned)


def judge_prompt(question: str, answer: str, sources: Sequence[str]) -> list[Message]:
    """The judge's messages: the rubric, then the sources, the question and the answer."""
    parts, used = [], 0
    for n, text in enumerate(sources, 1):
        room = MAX_SOURCE_CHARS - used
        if room <= 0:
            break
        piece = text[:room]
        used += len(piece)
        parts.append(f"[{n}] {piece}")
    body = (
        "SOURCES:\n" + ("\n\n".join(parts) or "(none)") + f"\n\nQUESTION: {question}\n\n"
        f"ANSWER: {answer.strip() or '(empty)'}\n\nJSON:"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": body}]


async def judge(
    model: ChatModel, question: str, answer: str, sources: Sequence[str], *, seed: int = 1234
) -> tuple[Judgement | None, str]:
    """Ask ``model`` for a judgement at temperature 0; (parsed or None, the raw reply)."""
    record = CallRecord(model=model.name)
    try:
        async for _ in model.stream(
            judge_prompt(question, answer, sources),
            record,
            max_tokens=120,
            temperature=0.0,
            seed=seed,
        ):
            pass
    except ModelError as exc:
        return None, f"(judge failed: {exc})"
    return parse_judgement(record.text), record.text


def summarize(judgements: Sequence[Judgement | None]) -> dict[str, Any]:
    """Mean per criterion over the parsed judgements, with how many were judged and missing."""
    done = [j for j in judgements if j is not None]
    out: dict[str, Any] = {
        c: round(statistics.fmean(getattr(j, c) for j in done), 2) if done else None
        for c in CRITERIA
    }
    out["judged"] = len(done)
    out["missing"] = len(judgements) - len(done)
    return out
