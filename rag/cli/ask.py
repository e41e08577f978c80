"""`rag ask`: one question, streamed to the terminal or printed as one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from rag.config import Config
from rag.errors import RagError
from rag.types import (
    ContextPacked,
    Done,
    Escalated,
    Event,
    Failed,
    Notice,
    Retrieved,
    StageStarted,
    Token,
)

if TYPE_CHECKING:
    from rag.assistant import AskOptions, Assistant
from rag.cli.common import _err, _progress, _roles_for, models_on_demand


def done_to_json(done: Done, question: str) -> dict[str, Any]:
    """The `rag ask --json` object."""
    from rag.latency import latency_json

    m = done.metrics
    return {
        "question": question,
        "answer": done.answer,
        "sources": [
            {
                "id": s.chunk.id,
                "n": s.n,
                "path": s.chunk.path,
                "title": s.chunk.title,
                "heading": s.chunk.heading,
                "score": round(s.hit.score, 4),
                "cited": any(c.n == s.n and c.source is not None for c in done.citations),
            }
            for s in done.sources
        ],
        "unverified_citations": [c.n for c in done.citations if c.source is None],
        "model": done.model,
        "models": list(m.models),
        "retriever": m.retriever,
        "escalated": m.escalated,
        "reason": m.reason,
        "abstained": done.abstained,
        "sufficiency": None if m.sufficiency is None else round(m.sufficiency, 4),
        "incomplete": m.incomplete,
        "timings": latency_json(m),  # the breakdown: prep, retrieval, packing, per stage
        "tokens": {
            "prompt": sum(u.prompt_tokens for _, u in m.stages),
            "completion": sum(u.completion_tokens for _, u in m.stages),
        },
        "cost": round(m.cost, 6),
    }


async def _ask(cfg: Config, args: argparse.Namespace) -> int:
    from rag.assistant import AskOptions, build_assistant

    assistant = build_assistant(cfg, _progress)
    opts = AskOptions(
        retriever=args.retriever,
        top_k=args.top_k,
        mode=args.mode,
        strategy=args.strategy,
        temperature=args.temperature,
        seed=args.seed,
    )
    # Bad input is refused before anything else happens; opening the index is start-up, not
    # per-question work, so it is kept out of prep_ms.
    assistant.check_question(args.question)
    with contextlib.suppress(RagError):
        assistant.index.get(args.retriever or cfg.retrieval.retriever)
    roles = _roles_for([args.mode or cfg.escalation.mode])
    with models_on_demand(cfg, roles, args, required=False):
        return await _ask_stream(assistant, opts, args)


async def _ask_stream(assistant: Assistant, opts: AskOptions, args: argparse.Namespace) -> int:
    out = sys.stdout
    streaming_stage = ""
    done: Done | None = None
    notices: list[str] = []
    async for ev in assistant.ask(args.question, opts):
        done = ev if isinstance(ev, Done) else done
        if isinstance(ev, Notice):
            notices.append(ev.text)
        if args.json:
            if isinstance(ev, Failed):
                print(json.dumps({"error": ev.message, "kind": ev.kind}))
                return 2 if ev.kind == "bad_input" else 1
            continue
        _render_cli(ev, out)
        if isinstance(ev, StageStarted):
            streaming_stage = ev.stage
        if isinstance(ev, Failed):
            _err(ev.message)
            return 2 if ev.kind == "bad_input" else 1
    if done is None:
        return 1
    if args.json:
        print(
            json.dumps(
                {**done_to_json(done, args.question), "notices": notices}, ensure_ascii=False
            )
        )
    del streaming_stage
    return 1 if done.model == "retrieval-only" else 0


def _render_cli(ev: Event, out: Any) -> None:
    if isinstance(ev, Retrieved):
        _progress(f"[retrieve] {ev.retriever}: {len(ev.hits)} hits in {ev.retrieval_ms:.1f} ms")
    elif isinstance(ev, ContextPacked) and ev.dropped:
        _progress(f"[context] {ev.dropped} passages left out to fit the window")
    elif isinstance(ev, StageStarted):
        _progress(f"[{ev.stage}] {ev.model}")
    elif isinstance(ev, Token):
        out.write(ev.text)
        out.flush()
    elif isinstance(ev, Escalated):
        out.write("\n")
        _progress(f"[escalate] {ev.decision.reason}")
    elif isinstance(ev, Notice):
        _progress(f"[{ev.level}] {ev.text}")
    elif isinstance(ev, Done):
        if ev.model in ("policy", "retrieval-only"):
            out.write(ev.answer)
        out.write("\n\nSources:\n")
        cited = {c.n for c in ev.citations if c.source is not None}
        for s in ev.sources:
            mark = "*" if s.n in cited else " "
            out.write(
                f" {mark}[{s.n}] {s.chunk.path} — {s.chunk.heading or s.chunk.title} ({s.hit.score:.3f})\n"
            )
        bad = [c.n for c in ev.citations if c.source is None]
        if bad:
            out.write(f"Unverified citations (not among the sources): {bad}\n")
        m = ev.metrics
        out.write(
            f"\n{m.retriever} · {ev.model} · retrieval {m.retrieval_ms:.0f} ms · total {m.total_ms:.0f} ms"
            + (f" · {m.reason}" if m.reason else "")
            + "\n"
        )


def cmd_ask(cfg: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_ask(cfg, args))
