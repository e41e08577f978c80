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
from typing import Any

from rag.assistant import AskOptions, Assistant
from rag.citations import contains_gold, strip_markers, token_f1
from rag.config import Config, Mode
from rag.errors import CorpusError
from rag.prompts import NOT_IN_DOCS
from rag.stats import p95
from rag.types import Done

SEED = 1234
# Reference cost profile: the large model costs 10x the small one per token (a TCO story
# for a cloud-priced LLM; the embedded models really cost nothing).
REFERENCE_PRICES = {"slm": (0.1, 0.2), "llm": (1.0, 2.0)}


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    impossible: bool
    split: str = "test"  # answers.jsonl rows without a "split" field count as test


def load_qa(folder: Path) -> list[QAItem]:
    """Questions joined with their gold answers; raises CorpusError naming a missing file."""
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
            str(r.get("split") or "test"),
        )
        for qid, r in rows.items()
        if "text" in r
    ]
    return sorted(items, key=lambda i: i.id)


def with_reference_prices(cfg: Config) -> Config:
    """The same config with the reference cost profile (large model 10x the small one)."""
    models = cfg.models
    slm = models.slm.model_copy(
        update={
            "price_in_per_1k": REFERENCE_PRICES["slm"][0],
            "price_out_per_1k": REFERENCE_PRICES["slm"][1],
        }
    )
    llm = models.llm.model_copy(
        update={
            "price_in_per_1k": REFERENCE_PRICES["llm"][0],
            "price_out_per_1k": REFERENCE_PRICES["llm"][1],
        }
    )
    return cfg.model_copy(update={"models": models.model_copy(update={"slm": slm, "llm": llm})})


def says_not_in_docs(answer: str, patterns: Sequence[str]) -> bool:
    """The answer declines: the app abstained, or the model said the docs don't contain it."""
    if NOT_IN_DOCS.lower().rstrip(".") in answer.lower() or "do not seem to cover" in answer:
        return True
    return any(re.search(p, answer, re.IGNORECASE) for p in patterns)


async def _answer(assistant: Assistant, question: str, opts: AskOptions) -> Done | None:
    done = None
    async for ev in assistant.ask(question, opts):
        if isinstance(ev, Done):
            done = ev
    return done


async def eval_answers(
    assistant: Assistant,
    items: Sequence[QAItem],
    modes: Sequence[Mode],
    *,
    strategy: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    details: list[dict[str, Any]] | None = None,
    on_done: Callable[[QAItem, str, Done], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per mode: contains_gold, f1, abstain_impossible, escalation_rate, latency, cost.

    ``on_done(item, mode, done)`` sees every answer (e.g. for a judge or per-call timings).
    """
    patterns = assistant.cfg.escalation.evasive_patterns
    rows = []
    for mode in modes:
        opts = AskOptions(mode=mode, strategy=strategy, temperature=0.0, seed=SEED)  # type: ignore[arg-type]
        gold_hits, f1s, abstains, escalations, latencies, costs = [], [], [], [], [], []
        for n, item in enumerate(items, 1):
            done = await _answer(assistant, item.question, opts)
            if done is None:
                continue
            text = strip_markers(done.answer)
            declined = done.abstained or says_not_in_docs(done.answer, patterns)
            if item.impossible:
                abstains.append(declined)
            else:
                gold_hits.append(contains_gold(text, item.answers))
                f1s.append(max((token_f1(text, g) for g in item.answers), default=0.0))
            if on_done is not None:
                on_done(item, mode, done)
            escalations.append(done.metrics.escalated)
            latencies.append(done.metrics.total_ms)
            costs.append(done.metrics.cost)
            if details is not None:
                draft = next((u for st, u in done.metrics.stages if st == "draft"), None)
                details.append(
                    {
                        "id": item.id, "mode": mode, "model": done.model,
                        "impossible": item.impossible, "declined": declined,
                        "correct": None if item.impossible else gold_hits[-1],
                        "escalated": done.metrics.escalated, "reason": done.metrics.reason,
                        "answer": done.answer, "draft_tokens": draft.completion_tokens if draft else None,
                        "total_ms": round(done.metrics.total_ms), "cost": done.metrics.cost,
                    }
                )  # fmt: skip
            progress(
                f"[{mode} {n}/{len(items)}] {item.id} {done.model} {done.metrics.total_ms:.0f} ms"
            )
        rows.append(
            {
                "mode": mode,
                "questions": len(latencies),
                "contains_gold": round(statistics.fmean(gold_hits), 4) if gold_hits else None,
                "f1": round(statistics.fmean(f1s), 4) if f1s else None,
                "abstain_impossible": round(statistics.fmean(abstains), 4) if abstains else None,
                "escalation_rate": round(statistics.fmean(escalations), 4) if escalations else 0.0,
                "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
                "latency_p95_ms": round(p95(latencies), 1),
                "cost_mean": round(statistics.fmean(costs), 6) if costs else 0.0,
            }
        )
    return rows


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
                "current": assistant.cfg.escalation.weak_context.get(name),
                "answerable_median": round(statistics.median(answerable), 4),
                "impossible_median": round(statistics.median(impossible), 4),
            }
        )
    return rows
