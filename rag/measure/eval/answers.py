"""`rag eval answers`: the cascade's quality, latency and cost on a QA set, per mode.

The QA folder holds ``queries.jsonl`` ({_id, text}) and ``answers.jsonl`` ({_id, answers,
is_impossible}); the documents are the configured corpus. Runs are deterministic
(temperature 0, fixed seed).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rag.assistant import AskOptions, Assistant
from rag.citations import contains_gold, strip_markers, token_f1
from rag.config import Mode, per_retriever
from rag.errors import CorpusError, ModelError
from rag.latency import latency_json
from rag.prompts import NOT_IN_DOCS
from rag.stats import bootstrap_ci, p95
from rag.types import Done, Notice

SEED = 1234


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    impossible: bool
    split: str = "test"  # rows without a split field count as test
    style: str = ""


Split = Literal["dev", "test", "all"]


def load_qa(folder: Path, split: Split = "all") -> list[QAItem]:
    """Questions joined with their gold answers, of one split; CorpusError names a missing file.

    Tune on ``dev``, report on ``test``. A set without a ``split`` field is all ``test``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for name in ("queries.jsonl", "answers.jsonl"):
        path = folder / name
        if not path.exists():
            raise CorpusError(
                f"{path} is missing; a QA folder holds queries.jsonl and answers.jsonl"
            )
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(str(row["_id"]), {}).update(row)
    items = [
        QAItem(
            qid,
            str(r["text"]),
            tuple(r.get("answers", [])),
            bool(r.get("is_impossible")),
            str(r.get("split", "test")),
            str(r.get("style", "")),
        )
        for qid, r in rows.items()
        if "text" in r
    ]
    bad = sorted({i.split for i in items} - {"dev", "test"})
    if bad:
        raise CorpusError(f"answers.jsonl: split must be dev or test, got {bad[0]!r}")
    return sorted((i for i in items if split in ("all", i.split)), key=lambda i: i.id)


def says_not_in_docs(answer: str, patterns: Sequence[str]) -> bool:
    """The answer declines: the app abstained, or the model said the docs don't contain it."""
    if NOT_IN_DOCS.lower().rstrip(".") in answer.lower() or "do not seem to cover" in answer:
        return True
    return any(re.search(p, answer, re.IGNORECASE) for p in patterns)


async def _answer(assistant: Assistant, question: str, opts: AskOptions) -> Done | None:
    done = None
    notices: list[str] = []
    async for ev in assistant.ask(question, opts):
        if isinstance(ev, Done):
            done = ev
        elif isinstance(ev, Notice):
            notices.append(ev.text)
    if done is not None and done.model == "retrieval-only":
        # The passages quoted when no model answers are not a model's answer: scoring them would
        # report a broken set-up as a result.
        models = ", ".join(
            f"{m.name} at {getattr(m, 'base_url', '?')}" for m in (assistant.slm, assistant.llm)
        )
        why = next((n for n in notices if n.startswith("No model could answer")), "")
        raise ModelError(
            f"no model answered {question!r} ({models}); an evaluation does not score "
            f"retrieval-only answers. {why} Start the models (`rag models serve`) or let the "
            "command start them (without --no-start-models).",
            kind="refused",
        )
    return done


async def eval_answers(
    assistant: Assistant,
    items: Sequence[QAItem],
    modes: Sequence[Mode],
    *,
    strategy: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    details: list[dict[str, Any]] | None = None,
    on_detail: Callable[[dict[str, Any]], None] | None = None,
    on_done: Callable[[QAItem, str, Done], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per mode: contains_gold, f1, abstain_impossible, escalation_rate, latency, cost.

    ``on_done(item, mode, done)`` sees every answer (e.g. for a judge or per-call timings).
    """
    patterns = assistant.cfg.escalation.evasive_patterns
    rows = []
    for mode in modes:
        opts = AskOptions(mode=mode, strategy=strategy, temperature=0.0, seed=SEED)  # type: ignore[arg-type]
        gold_hits: list[bool] = []
        f1s: list[float] = []
        false_abstains: list[bool] = []
        abstains: list[bool] = []
        in_context: list[bool] = []
        gold_given_context: list[bool] = []
        escalations: list[bool] = []
        latencies: list[float] = []
        costs: list[float] = []
        for n, item in enumerate(items, 1):
            done = await _answer(assistant, item.question, opts)
            if done is None:
                continue
            text = strip_markers(done.answer)
            declined = done.abstained or says_not_in_docs(done.answer, patterns)
            context_has_gold = any(contains_gold(s.chunk.text, item.answers) for s in done.sources)
            correct: bool | None = None
            if item.impossible:
                abstains.append(declined)
            else:
                # an abstention quotes the answer it withheld: that is not a right answer
                correct = not done.abstained and contains_gold(text, item.answers)
                gold_hits.append(correct)
                false_abstains.append(declined)
                f1s.append(max((token_f1(text, g) for g in item.answers), default=0.0))
                in_context.append(context_has_gold)
                if context_has_gold:
                    gold_given_context.append(correct)
            if on_done is not None:
                on_done(item, mode, done)
            escalations.append(done.metrics.escalated)
            latencies.append(done.metrics.total_ms)
            costs.append(done.metrics.cost)
            if details is not None or on_detail is not None:
                draft = next((u for st, u in done.metrics.stages if st == "draft"), None)
                detail = (
                    {
                        "id": item.id, "mode": mode, "split": item.split, "style": item.style,
                        "model": done.model, "impossible": item.impossible,
                        "declined": declined, "abstained": done.abstained, "correct": correct,
                        "gold_in_context": None if item.impossible else context_has_gold,
                        "escalated": done.metrics.escalated, "reason": done.metrics.reason,
                        "answer": done.answer,
                        "draft_tokens": draft.completion_tokens if draft else None,
                        "sufficiency": done.metrics.sufficiency,
                        "signals": _jsonable(done.metrics.signals),
                        "prompt_tokens": sum(u.prompt_tokens for _s, u in done.metrics.stages),
                        "total_ms": round(done.metrics.total_ms), "cost": done.metrics.cost,
                        "timings": latency_json(done.metrics),
                    }
                )  # fmt: skip
                if details is not None:
                    details.append(detail)
                if on_detail is not None:
                    on_detail(detail)
            progress(
                f"[{mode} {n}/{len(items)}] {item.id} {done.model} {done.metrics.total_ms:.0f} ms"
            )
        rows.append(
            {
                "mode": mode,
                "n": len(latencies),
                "answerable": len(gold_hits),
                "impossible": len(abstains),
                **_rate("contains_gold", gold_hits),
                **_rate("contains_gold_given_context", gold_given_context),
                "gold_in_context": _mean(in_context),
                "f1": _mean(f1s),
                **_rate("false_abstain", false_abstains),
                **_rate("abstain_impossible", abstains),
                **_rate("escalation_rate", escalations),
                "cost_mean": round(statistics.fmean(costs), 6) if costs else 0.0,
                "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
                "latency_p95_ms": round(p95(latencies), 1),
            }
        )
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _rate(name: str, values: Sequence[bool]) -> dict[str, Any]:
    """The share and its bootstrap 95% interval, e.g. contains_gold and contains_gold_ci95."""
    return {name: _mean(values), f"{name}_ci95": bootstrap_ci([float(v) for v in values])}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, int | float | str) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def calibrate(
    assistant: Assistant, items: Sequence[QAItem], names: Sequence[str]
) -> list[dict[str, Any]]:
    """Suggest escalation.weak_context thresholds per retriever from answerable vs impossible top scores."""
    from rag.escalation import suggest_threshold

    rows = []
    for name in names:
        retriever = assistant.index.get(name)
        answerable: list[float] = []
        impossible: list[float] = []
        for item in items:
            hits = retriever.search(item.question, 1)
            top = hits[0].score if hits else 0.0
            (impossible if item.impossible else answerable).append(top)
        threshold, accuracy = suggest_threshold(answerable, impossible)
        # The lowest threshold that still abstains on >= 80% of unanswerable questions: false
        # abstentions cost answers, so go no higher than the abstention target needs.
        ranked = sorted(impossible)
        at_target = ranked[math.ceil(0.8 * len(ranked)) - 1] + 1e-6 if ranked else threshold
        rows.append(
            {
                "retriever": name,
                "suggested_weak_context": round(threshold, 4),
                "balanced_accuracy": round(accuracy, 4),
                "for_80pct_abstention": round(at_target, 4),
                "answerable_kept_at_that": round(
                    sum(a >= at_target for a in answerable) / len(answerable), 4
                ),
                "current": per_retriever(assistant.cfg.escalation.weak_context, name),
                "answerable_median": round(statistics.median(answerable), 4),
                "impossible_median": round(statistics.median(impossible), 4),
            }
        )
    return rows
