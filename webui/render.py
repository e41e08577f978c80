"""Pure formatters: events and figures to the markdown the chat shows. No Chainlit here.

Every function takes rag's typed events (or plain values) and returns strings, so the whole of
what an answer looks like is unit-tested without a browser (tests/unit/test_webui_render.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.types import Done, Notice, Retrieved, StageFinished

WELCOME = (
    "👋 **Welcome to the Docs Assistant.** Ask a question about the team's internal documents "
    "(on-call runbooks, policies, ADRs, the release process…). Answers cite their sources like "
    "[1] — click a marker to open the passage. Change the retriever, the number of passages and "
    "the escalation mode in the settings panel (⚙). To try one prompt against either model and "
    "watch the tokens arrive, open the [streaming playground](/playground)."
)
INCOMPLETE = "⚠️ *This answer is incomplete — the model stopped mid-answer. Ask again to retry.*"
STEP_FAILED = "*No answer: the model failed (see the message below).*"
CUT_OFF = "\n\n*(cut off)*"

_LIST_MARK = re.compile(r"^(?:[-*+]|\d+[.)])\s+")  # a leading list marker would show raw in a cell


def ms(value: float) -> str:
    """A duration for people: one decimal below 10 ms, none above."""
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def notice(ev: Notice) -> str:
    """A notice as a chat line: ⚠️ for warnings, ℹ️ for information."""
    return ("⚠️ " if ev.level == "warning" else "ℹ️ ") + ev.text


def hits_markdown(ev: Retrieved) -> str:
    """The Retrieve step's output: one line per passage with its path and score."""
    if not ev.hits:
        return f"**{ev.retriever}** found nothing relevant ({ev.retrieval_ms:.1f} ms)."
    lines = [f"**{ev.retriever}** · {len(ev.hits)} passages · {ev.retrieval_ms:.1f} ms", ""]
    for h in ev.hits:
        where = f" › {h.chunk.heading}" if h.chunk.heading else ""
        lines.append(f"{h.rank}. {h.chunk.title}{where} — `{h.chunk.path}` (score {h.score:.3f})")
    if ev.sufficiency is not None:
        lines += ["", f"Context: {ev.sufficiency.describe()}."]
    return "\n".join(lines)


def stage_output(ev: StageFinished) -> str | None:
    """A draft/compare step's final text, or None when the model failed before a word."""
    if not ev.text:
        return None
    return ev.text + (CUT_OFF if ev.incomplete else "")


def footer(done: Done) -> str:
    """The metrics line under an answer: retriever, model, timings, whether it escalated."""
    m = done.metrics
    last = m.stages[-1][1] if m.stages else None
    parts = [m.retriever, done.model, f"retrieval {ms(m.retrieval_ms)}"]
    if last:
        parts += [f"first token {ms(last.ttft_ms)}", f"{last.tokens_per_s:.1f} tok/s"]
    parts.append(f"total {m.total_ms / 1000:.1f} s")
    if m.escalated:
        parts.append("escalated")
    return "*" + " · ".join(parts) + "*"


def compare_table(compared: Sequence[StageFinished]) -> str:
    """Both models' answers side by side with their timings and token counts."""
    if not compared:
        return ""
    cells = [
        (
            c.usage.model,
            _LIST_MARK.sub("", " ".join(c.text.split())).replace("|", "\\|") or "*(failed)*",
            c.usage,
        )
        for c in compared
    ]
    head = "| | " + " | ".join(f"**{m}**" for m, _, _ in cells) + " |"
    sep = "|---" * (len(cells) + 1) + "|"
    rows = [
        "| answer | " + " | ".join(t for _, t, _ in cells) + " |",
        "| first token | " + " | ".join(ms(u.ttft_ms) for _, _, u in cells) + " |",
        "| total | " + " | ".join(f"{u.total_ms / 1000:.1f} s" for _, _, u in cells) + " |",
        "| tokens (prompt / answer) | "
        + " | ".join(f"{u.prompt_tokens} / {u.completion_tokens}" for _, _, u in cells)
        + " |",
        "| tokens/s | " + " | ".join(f"{u.tokens_per_s:.1f}" for _, _, u in cells) + " |",
    ]
    return "\n".join([head, sep, *rows])


@dataclass(frozen=True)
class CitedPassage:
    """A side panel for one citation marker: its name ("[n]") and markdown content."""

    name: str
    content: str


def cited_passages(done: Done) -> list[CitedPassage]:
    """One panel per verified marker, first occurrence only, in marker order."""
    panels: list[CitedPassage] = []
    seen: set[int] = set()
    for c in done.citations:
        if c.source is None or c.n in seen:
            continue
        seen.add(c.n)
        ch = c.source.chunk
        heading = f"\n\n*Section:* {ch.heading}" if ch.heading else ""
        # Chainlit (>= 2.11) opens the panel by itself with every side element of the chat
        # stacked, so each one names its marker.
        content = f"**[{c.n}] {ch.title}**\n\n*Path:* `{ch.path}`{heading}\n\n---\n\n{ch.text}"
        panels.append(CitedPassage(f"[{c.n}]", content))
    return panels


def answer_content(done: Done, compared: Sequence[StageFinished]) -> str:
    """The final answer message: the answer (or the comparison table), warnings, the footer."""
    parts = [done.answer]
    if compared:  # the table holds both answers; the final answer is shown only if both failed
        parts = [compare_table(compared)] + (
            [done.answer] if not any(c.text for c in compared) else []
        )
    unverified = sorted({c.n for c in done.citations if c.source is None})
    if unverified:
        marks = ", ".join(f"[{n}]" for n in unverified)
        parts.append(f"⚠️ Unverified citation {marks}: no such passage was retrieved.")
    if done.metrics.incomplete:
        parts.append(INCOMPLETE)
    return "\n\n".join([*parts, footer(done)])
