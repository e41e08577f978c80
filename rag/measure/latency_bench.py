"""`rag bench latency`: the app's own pipeline (Assistant.ask), baseline vs shipped settings.

Both configurations run in one process, one after the other, each after one warm-up question
that is not counted (a question of the set outside the timed ones, so that no timed question
finds its own prompt in the server's cache; the first such question that reaches a model: one
abstained before drafting calls none, and would time only the retrieval):

- ``baseline``: whole passages (``context.compress: false``), no speculative decoding, no
  prompt cache, logits kept for every prompt token on both models and no logprobs asked for —
  the embedded servers as llama-cpp-python starts them by default;
- ``default``: the configuration as shipped (rag.yaml and the environment).

Embedded models (provider ``embedded`` without a base_url) get their own llama.cpp servers per
configuration, on free loopback ports, because logits_all, prompt lookup and the prompt cache
are server start-up settings; other providers are used where they are, so only the client-side
settings differ. Absolute times on a shared machine are noise: compare the two lines.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.assistant import AskOptions, Assistant, build_assistant
from rag.citations import contains_gold
from rag.config import Config
from rag.latency import first_token_ms
from rag.measure.eval.answers import SEED, QAItem, Split
from rag.prompts import format_source
from rag.stats import p95
from rag.types import ContextPacked, Done, Metrics

CONFIG_NAMES = ("baseline", "default")
# Warm-up candidates asked at most, until one reaches a model (see _warm_up).
WARM_UP_TRIES = 5


def baseline_config(cfg: Config) -> Config:
    """``cfg`` with the settings as they were before the latency work."""
    m = cfg.models
    embedded = m.embedded.model_copy(
        update={
            "prompt_lookup": False,
            "prompt_cache": False,
            "slm_logits_all": True,
            "llm_logits_all": True,
        }
    )
    models = m.model_copy(
        update={
            "embedded": embedded,
            "slm": m.slm.model_copy(update={"logprobs": False}),
            "llm": m.llm.model_copy(update={"logprobs": False}),
        }
    )
    context = cfg.context.model_copy(update={"compress": False})
    return cfg.model_copy(update={"context": context, "models": models})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def own_servers(cfg: Config, progress: Callable[[str], None]) -> Iterator[Config]:
    """Start this configuration's embedded servers on free ports; yield cfg pointing at them."""
    from rag.models.embedded import embedded_specs, serve
    from rag.models.warmup import warm_up

    e = cfg.models.embedded.model_copy(update={"slm_port": _free_port(), "llm_port": _free_port()})
    cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={"embedded": e})})
    specs = embedded_specs(cfg)
    if not specs:
        yield cfg
        return
    with serve(specs, cfg.data_dir / "logs" / "bench", progress) as started:
        warm_up(started, progress)
        update: dict[str, Any] = {
            s.role: getattr(cfg.models, s.role).model_copy(update={"base_url": s.base_url})
            for s in started
        }
        yield cfg.model_copy(update={"models": cfg.models.model_copy(update=update)})


@dataclass
class _Row:
    prompt_tokens: int | None
    ttft_ms: float | None
    total_ms: float
    gold_in_context: bool | None
    escalated: bool
    slm_ttft_ms: float | None = None  # question to the small model's first token (draft)
    asked_model: bool = True  # False: abstained before drafting, no model was called
    prompt_tps: float | None = None  # prompt reading speed of the first model call
    parts: dict[str, float] = field(default_factory=dict)  # where the time went (ms, tokens)


def _parts(m: Metrics) -> dict[str, float]:
    """The answer's breakdown, flat: prep, retrieval, packing, then per stage the server's split."""
    out = {"prep_ms": m.prep_ms, "retrieval_ms": m.retrieval_ms, "packing_ms": m.packing_ms}
    for stage, u in m.stages:
        values = {
            "prompt_tokens": u.prompt_tokens,
            "read_tokens": u.prompt_eval_tokens,
            "cached_tokens": u.cached_tokens,
            "queue_ms": u.queue_ms,
            "prompt_ms": u.prompt_ms,
            "ttft_ms": u.ttft_ms,
            "decode_ms": u.decode_ms,
            "completion_tokens": u.completion_tokens,
            "total_ms": u.total_ms,
        }
        out.update({f"{stage}.{k}": float(v) for k, v in values.items() if v is not None})
    out["total_ms"] = m.total_ms
    return out


async def _one(assistant: Assistant, item: QAItem) -> _Row | None:
    opts = AskOptions(temperature=0.0, seed=SEED)
    packed: ContextPacked | None = None
    done: Done | None = None
    async for ev in assistant.ask(item.question, opts):
        if isinstance(ev, ContextPacked):
            packed = ev
        elif isinstance(ev, Done):
            done = ev
    if done is None:
        return None
    context = "\n\n".join(format_source(s) for s in (packed.sources if packed else ()))
    m = done.metrics
    return _Row(
        prompt_tokens=m.stages[0][1].prompt_tokens if m.stages else None,
        ttft_ms=first_token_ms(m),
        total_ms=m.total_ms,
        gold_in_context=None if item.impossible else contains_gold(context, item.answers),
        escalated=m.escalated,
        slm_ttft_ms=first_token_ms(m, "draft"),  # None when the draft was skipped
        prompt_tps=m.stages[0][1].prompt_tokens_per_s if m.stages else None,
        asked_model=bool(m.stages),
        parts=_parts(m),
    )


def summarise(
    name: str,
    rows: Sequence[_Row],
    first: _Row | None = None,
    again: _Row | None = None,
    warmup: str | None = None,
) -> dict[str, Any]:
    """One output line: medians and p95s over the questions, gold_in_context over answerable.

    ``first`` is the warm-up question, asked first after the servers' own warm-up (as after
    ``rag serve``); ``again`` is the same question asked once more after the timed ones. Both
    read the same prompt past the same cached system prompt, so ``first_slowdown`` (the first
    asking's time over the second's, minus one) says what being first still costs; set against
    the timed questions' median instead, the first question's speed also carries how its prompt
    differs from theirs. ``warmup`` names that question.
    """
    prompts = [float(r.prompt_tokens) for r in rows if r.prompt_tokens is not None]
    ttfts = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    slm_ttfts = [r.slm_ttft_ms for r in rows if r.slm_ttft_ms is not None]
    tps = [r.prompt_tps for r in rows if r.prompt_tps is not None]
    totals = [r.total_ms for r in rows]
    golds = [r.gold_in_context for r in rows if r.gold_in_context is not None]

    def p50(values: Sequence[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    return {
        "config": name,
        "n": len(rows),
        "prompt_tokens_p50": p50(prompts),
        "ttft_ms_p50": p50(ttfts),
        "ttft_ms_p95": round(p95(ttfts), 1) if ttfts else None,
        "slm_ttft_ms_p50": p50(slm_ttfts),
        "total_ms_p50": p50(totals),
        "total_ms_p95": round(p95(totals), 1) if totals else None,
        "gold_in_context": round(sum(golds) / len(golds), 4) if golds else None,
        "escalation_rate": round(sum(r.escalated for r in rows) / len(rows), 4) if rows else None,
        "prompt_tps_p50": p50(tps),
        "warmup": warmup,
        "first_prompt_tps": round(first.prompt_tps, 1) if first and first.prompt_tps else None,
        "first_total_ms": round(first.total_ms, 1) if first else None,
        "again_prompt_tps": round(again.prompt_tps, 1) if again and again.prompt_tps else None,
        "again_total_ms": round(again.total_ms, 1) if again else None,
        "first_slowdown": _slowdown(first, again),
        # medians of each part over the answers that have it (a stage only when it ran)
        "breakdown_p50": {
            k: p50([r.parts[k] for r in rows if k in r.parts])
            for k in dict.fromkeys(k for r in rows for k in r.parts)
        },
    }


def _slowdown(first: _Row | None, again: _Row | None) -> dict[str, float] | None:
    """The first asking of one question against its second: time ratio minus one, per part.

    ``prompt``: the small model's prompt reading (the same tokens both times), ``total``: the
    question's whole answer. None when the question was not asked twice.
    """
    if first is None or again is None:
        return None
    out = {"total": round(first.total_ms / again.total_ms - 1, 3)} if again.total_ms else {}
    a, b = first.parts.get("draft.prompt_ms"), again.parts.get("draft.prompt_ms")
    if a is not None and b:
        out["prompt"] = round(a / b - 1, 3)
    return out


async def _warm_up(
    assistant: Assistant, candidates: Sequence[QAItem], progress: Callable[[str], None]
) -> tuple[QAItem | None, _Row | None]:
    """Ask the candidates in order until one reaches a model; that one and its row.

    A question abstained before drafting calls no model, so it would time the retrieval alone:
    the next candidate is asked instead (at most ``WARM_UP_TRIES``). (None, None) when none did.
    """
    for item in candidates[:WARM_UP_TRIES]:
        row = await _one(assistant, item)
        if row is not None and row.asked_model:
            return item, row
        progress(f"warm-up question {item.id} reached no model (abstained); asking the next")
    return None, None


async def bench_config(
    name: str,
    cfg: Config,
    items: Sequence[QAItem],
    progress: Callable[[str], None] = lambda _m: None,
    warmups: Sequence[QAItem] = (),
) -> dict[str, Any]:
    """Ask a warm-up question (not counted; the first of ``warmups`` that reaches a model),
    time every question through Assistant.ask, then ask the warm-up question again (not
    counted): the same question first and later, for ``first_slowdown``."""
    assistant = build_assistant(cfg, progress)
    try:
        warmup, first = await _warm_up(assistant, warmups, progress)
        rows: list[_Row] = []
        for n, item in enumerate(items, 1):
            row = await _one(assistant, item)
            if row is not None:
                rows.append(row)
                progress(
                    f"[{name} {n}/{len(items)}] {item.id} first token {row.ttft_ms or 0:.0f} ms, "
                    f"total {row.total_ms:.0f} ms"
                )
        again = await _one(assistant, warmup) if warmup is not None and rows else None
        return summarise(name, rows, first, again, warmup.id if warmup else None)
    finally:
        for model in (assistant.slm, assistant.llm):
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()


async def bench_latency(
    cfg: Config,
    items: Sequence[QAItem],
    progress: Callable[[str], None] = lambda _m: None,
    names: Sequence[str] = CONFIG_NAMES,
    warmups: Sequence[QAItem] = (),
) -> list[dict[str, Any]]:
    """One summary row per configuration, in ``names`` order."""
    configs = {"baseline": baseline_config(cfg), "default": cfg}
    rows = []
    for name in names:
        with own_servers(configs[name], progress) as ready:
            rows.append(await bench_config(name, ready, items, progress, warmups))
    return rows


def load_items(folder: Path, limit: int, split: Split = "all") -> tuple[list[QAItem], list[QAItem]]:
    """The timed questions (the first ``limit`` when limit > 0) and the warm-up candidates.

    The candidates are the questions after the timed ones, or the other split's when the whole
    split is timed (``_warm_up`` asks at most ``WARM_UP_TRIES`` of them); none for a set of one
    question.
    """
    from rag.measure.eval.answers import load_qa

    items = load_qa(folder, split)
    timed = items[:limit] if limit > 0 else items
    rest = items[len(timed) :] or [q for q in load_qa(folder) if q not in timed]
    return timed, rest
