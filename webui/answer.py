"""One question's events drawn with Chainlit: steps for retrieval and drafts, the answer, panels."""

from __future__ import annotations

from typing import Any

import chainlit as cl
from chainlit.utils import utc_now

from rag.assistant import AskOptions
from rag.chat_settings import SETTINGS_KEY
from rag.latency import breakdown_markdown
from rag.stats import SessionStats
from rag.types import (
    ContextPacked,
    Done,
    Escalated,
    Failed,
    Notice,
    Retrieved,
    StageFinished,
    StageStarted,
    Token,
)
from webui import render
from webui.context import AppContext


def panel_values() -> dict[str, Any]:
    """The settings panel's current values in this session."""
    values = cl.user_session.get("chat_settings")
    return dict(values) if isinstance(values, dict) else {}


async def answer(ctx: AppContext, question: str, opts: AskOptions) -> None:
    """Ask the assistant and render each event as it arrives."""
    reply = cl.Message(content="")
    compared: list[StageFinished] = []
    step: cl.Step | None = None
    streamed_into_answer = False
    async for ev in ctx.assistant.ask(question, opts):
        if isinstance(ev, Retrieved):
            async with cl.Step(
                name=f"Retrieve ({ev.retriever})",
                type="retrieval",
                icon="search",
                show_input=False,  # the question is right above
            ) as rs:
                rs.input = question
                rs.output = render.hits_markdown(ev)
        elif isinstance(ev, ContextPacked):
            pass
        elif isinstance(ev, Notice):
            await cl.Message(content=render.notice(ev)).send()
        elif isinstance(ev, StageStarted):
            if ev.stage in ("draft", "compare"):
                # Sent now but ended later, so not `async with`: set what it would have (the
                # parent, else the step lands below the answer; start and end, which drive
                # "Using…" and the collapse). Open while the draft streams, folded after.
                parent = cl.context.current_step
                step = cl.Step(
                    name=f"{ev.stage.title()} · {ev.model}",
                    type="llm",
                    icon="notebook-pen",
                    parent_id=parent.id if parent else None,
                    default_open=True,
                    auto_collapse=True,
                )
                step.start = utc_now()
                await step.send()
        elif isinstance(ev, Token):
            if step is not None and ev.stage in ("draft", "compare"):
                await step.stream_token(ev.text)
            else:
                if not streamed_into_answer:
                    # stream_token leaves created_at unset, and a stored step without it sorts
                    # before its parent, so a resumed thread would lose the answer.
                    reply.created_at = utc_now()
                await reply.stream_token(ev.text)
                streamed_into_answer = True  # sent now: _finish updates it, not sends it
        elif isinstance(ev, StageFinished):
            if ev.stage == "compare":
                compared.append(ev)
            if step is not None:
                output = render.stage_output(ev)
                if output is None:  # the model failed before a word; a notice says why
                    step.is_error = True
                step.output = output if output is not None else render.STEP_FAILED
                step.end = utc_now()
                await step.update()
                step = None
        elif isinstance(ev, Escalated):
            async with cl.Step(name="Escalate", type="tool", icon="arrow-up-right") as es:
                es.output = ev.decision.reason
        elif isinstance(ev, Failed):
            await cl.Message(content=f"⚠️ {ev.message}").send()
            return
        elif isinstance(ev, Done):
            stats = cl.user_session.get("stats")
            if isinstance(stats, SessionStats):
                stats.add(ev)
            await _finish(reply, ev, streamed_into_answer, compared)
            # the footer keeps one line; the full breakdown folds out below the answer
            async with cl.Step(name="Where the time went", type="tool", icon="timer") as ts:
                ts.output = breakdown_markdown(ev.metrics)


async def _finish(
    reply: cl.Message, done: Done, streamed: bool, compared: list[StageFinished]
) -> None:
    elements: list[Any] = [
        cl.Text(name=p.name, content=p.content, display="side") for p in render.cited_passages(done)
    ]
    reply.content = render.answer_content(done, compared)
    # The model name only: Chainlit looks the author up as an avatar and refuses names with
    # brackets; the footer says when the answer was escalated.
    reply.author = done.model
    # Stored with the answer, so a thread resumed later continues with these settings.
    reply.metadata = {**(reply.metadata or {}), SETTINGS_KEY: panel_values()}
    reply.elements = elements
    if streamed:
        await reply.update()
    else:
        await reply.send()
