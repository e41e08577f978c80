"""The streaming playground: one prompt, optional reference text, one model, timed tokens.

``playground_events`` yields plain dicts the /playground page reads as server-sent events:
``{"type": "token", "text": ...}`` per delta, then one ``{"type": "done", ...}`` with the
timings, or one ``{"type": "error", "message": ...}``. Reference text is quoted to the model as
source [1] through rag.prompts, so the same injection hygiene applies as in the chat.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from rag.citations import attach_citations
from rag.config import Config
from rag.errors import ConfigError, ModelError
from rag.models import CallRecord, Message, OpenAICompatModel, estimate_tokens, make_chat_model
from rag.prompts import SYSTEM, answer_messages
from rag.types import Chunk, Hit, Source

ROLES: dict[str, str] = {"slm": "small", "llm": "large"}
REFERENCE_TITLE = "Reference text"
REFERENCE_PATH = "playground/reference"
MAX_BODY_BYTES = 1_000_000  # a request body larger than this is refused before it is parsed
_PROMPT_OVERHEAD_TOKENS = 64  # the source tags, the title line and the "Question:" label


def reference_source(text: str) -> Source:
    """The pasted reference text as numbered source [1]."""
    chunk = Chunk(
        id=f"{REFERENCE_PATH}#0",
        doc_id=REFERENCE_PATH,
        path=REFERENCE_PATH,
        title=REFERENCE_TITLE,
        heading="",
        text=text,
        ordinal=0,
    )
    return Source(n=1, hit=Hit(chunk=chunk, score=1.0, rank=1))


def playground_messages(prompt: str, reference: str, role: str) -> list[Message]:
    """A plain user prompt, or a grounded one citing the reference text as [1]."""
    if not reference.strip():
        return [{"role": "user", "content": prompt}]
    return answer_messages(prompt, [reference_source(reference.strip())], draft=role == "slm")


def check_request(cfg: Config, role: str, prompt: str, reference: str) -> str | None:
    """What is wrong with a playground request, as a sentence for the page; None when fine."""
    if role not in ROLES:
        return f"Unknown model {role!r}; choose slm (the small model) or llm (the large model)."
    limit = cfg.chat.max_message_chars
    if not prompt.strip():
        return "The prompt is empty. Type a question or an instruction for the model."
    if len(prompt) > limit:
        return (
            f"The prompt is {len(prompt):,} characters long; the limit is {limit:,} "
            "(chat.max_message_chars). Shorten it."
        )
    mcfg = cfg.models.slm if role == "slm" else cfg.models.llm
    room = mcfg.context_window - mcfg.max_tokens - estimate_tokens(SYSTEM)
    need = estimate_tokens(prompt) + estimate_tokens(reference) + _PROMPT_OVERHEAD_TOKENS
    if reference.strip() and need > room:
        return (
            f"The prompt and reference text come to about {need:,} tokens; the {ROLES[role]} "
            f"model ({mcfg.model}) has room for about {max(room, 0):,} with its "
            f"{mcfg.context_window:,}-token window. Paste only the relevant part."
        )
    return None


async def playground_events(
    cfg: Config,
    role: str,
    prompt: str,
    reference: str = "",
    *,
    model: OpenAICompatModel | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Stream one answer: token events, then a done event with timings, or an error event."""
    problem = check_request(cfg, role, prompt, reference)
    if problem:
        yield {"type": "error", "message": problem}
        return
    which: Literal["slm", "llm"] = "slm" if role == "slm" else "llm"
    own = model is None
    try:
        chat = model or make_chat_model(cfg, which)
    except ConfigError as exc:
        yield {"type": "error", "message": f"The {ROLES[which]} model is not configured: {exc}"}
        return
    record = CallRecord(model=chat.name)
    messages = playground_messages(prompt.strip(), reference, which)
    t0 = time.perf_counter()
    try:
        async for piece in chat.stream(messages, record):
            yield {"type": "token", "text": piece}
    except ModelError as exc:
        yield {
            "type": "error",
            "message": f"{exc}",
            "model": chat.name,
            "partial": bool(exc.partial),
            "total_ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        return
    finally:
        if own:
            await chat.aclose()
    usage = record.usage()
    grounded = bool(reference.strip())
    # The small model is asked for the fact, not for markers: the app attaches [1] to the
    # sentences the reference text supports, as the chat does (rag.citations).
    cited = attach_citations(record.text, [reference_source(reference.strip())] if grounded else [])
    yield {
        "type": "done",
        "model": chat.name,
        "role": which,
        "grounded": grounded,
        "text": cited,
        "ttft_ms": round(usage.ttft_ms, 1),
        "total_ms": round(usage.total_ms, 1),
        "tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "tokens_estimated": usage.tokens_estimated,
        "tokens_per_s": round(usage.tokens_per_s, 1),
    }


def parse_request(body: Any) -> tuple[str, str, str]:
    """(role, prompt, reference) from the page's JSON body; missing text fields count as empty."""
    if not isinstance(body, Mapping):
        raise ValueError(
            'send a JSON object like {"role": "slm", "prompt": "...", "reference": ""}'
        )
    role, prompt, reference = (body.get(k, "") for k in ("role", "prompt", "reference"))
    for name, value in (("role", role), ("prompt", prompt), ("reference", reference)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return role or "slm", prompt, reference


def sse(event: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``event`` as JSON."""
    return b"data: " + json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def sse_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The events as a text/event-stream body."""
    async for event in events:
        yield sse(event)
