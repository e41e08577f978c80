"""`rag compare`: the small and the large model on the same prompts, after a warm-up."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from rag.errors import ModelError
from rag.models import CallRecord, ChatModel, Message
from rag.stats import p95

DEFAULT_PROMPTS = (
    "In two sentences, explain what an on-call runbook is for.",
    "List three things a good incident postmortem contains.",
)


async def compare_models(
    models: Sequence[tuple[str, ChatModel]],
    prompts: Sequence[str],
    rounds: int,
    *,
    max_tokens: int = 128,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """One row per model: latency mean/p95, time to first token, tokens/s, tokens, a sample answer."""
    rows: list[dict[str, Any]] = []
    for role, model in models:
        warm = CallRecord(model=model.name)
        msgs: list[Message] = [{"role": "user", "content": prompts[0]}]
        try:
            async for _ in model.stream(msgs, warm, max_tokens=16, temperature=0.0):
                pass
        except ModelError as exc:
            rows.append({"role": role, "model": model.name, "error": str(exc)})
            continue
        records: list[CallRecord] = []
        for r in range(rounds):
            for prompt in prompts:
                rec = CallRecord(model=model.name)
                async for _ in model.stream(
                    [{"role": "user", "content": prompt}],
                    rec,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    seed=r,
                ):
                    pass
                records.append(rec)
                progress(f"{role} {model.name}: {rec.total_ms:.0f} ms")
        totals = [r.total_ms for r in records]
        rows.append(
            {
                "role": role,
                "model": model.name,
                "runs": len(records),
                "latency_mean_ms": round(statistics.fmean(totals), 1),
                "latency_p95_ms": round(p95(totals), 1),
                "ttft_mean_ms": round(statistics.fmean(r.ttft_ms for r in records), 1),
                "tokens_per_s": round(statistics.fmean(r.usage().tokens_per_s for r in records), 1),
                "completion_tokens_mean": round(
                    statistics.fmean(r.completion_tokens for r in records), 1
                ),
                "sample": records[0].text[:200],
            }
        )
    return rows
