"""Warm the embedded model servers at start so the first user question is not a cold load.

A freshly started llama.cpp server has its weights mapped but not yet paged in, and has never
read the system prompt. One request per server, with the app's own system prompt, pays both
before anyone asks: the system prompt's tokens then stay in the server's KV cache and are
reused as the common prefix of the next request. The request carries one passage about as long
as a real compressed context (``WARM_UP_TOKENS``): a first long prompt also pays for the
server's larger compute batches and, with ``logits_all``, for paging in the rows of the logits
array that a real prompt fills — measured by ``rag bench latency`` (``first_prompt_tps``), a
short warm-up left the first question's prompt reading a third slower than the next ones'.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from rag.models.embedded import ServerSpec

WARM_UP_TOKENS = 400  # about the compressed context of a real question (context.budget_tokens)
_FILLER = "This passage warms the model up so that the first question finds it ready."


def warm_up_messages(tokens: int = WARM_UP_TOKENS, *, draft: bool = True) -> list[dict[str, str]]:
    """The role's system prompt and a user turn shaped like a real one: one passage, a question.

    ``draft``: the small model's prompt (its system prompt is the prefix its cache keeps);
    the large model answers with the full one.
    """
    from rag.models.openai_compat import estimate_tokens
    from rag.prompts import answer_messages
    from rag.types import Chunk, Hit, Source

    repeat = max(tokens // max(estimate_tokens(_FILLER), 1), 1)
    chunk = Chunk("warm-up", "warm-up", "warm-up", "Warm-up", "", " ".join([_FILLER] * repeat), 0)
    sources = [Source(1, Hit(chunk, 1.0, 1))] if tokens > 0 else []
    return [
        {"role": m["role"], "content": m["content"]}
        for m in answer_messages("Warm-up.", sources, draft=draft)
    ]


def warm_one(base_url: str, model: str, timeout_s: float = 300.0, *, draft: bool = True) -> float:
    """Send one short chat completion; returns its wall time in ms. Raises OSError on failure."""
    body = {
        "model": model,
        "messages": warm_up_messages(draft=draft),
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": False,
    }
    req = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        resp.read()
    return (time.perf_counter() - t0) * 1000


def warm_up(
    specs: Sequence[ServerSpec], progress: Callable[[str], None] = print
) -> dict[str, float | None]:
    """Warm every server in turn, logging "warmed slm in X ms"; a failure is logged, not raised."""
    out: dict[str, float | None] = {}
    for spec in specs:
        try:
            ms = warm_one(spec.base_url, spec.alias, draft=spec.role == "slm")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            progress(f"{spec.role}: warm-up request failed ({exc}); the first question pays it")
            out[spec.role] = None
            continue
        progress(f"warmed {spec.role} in {ms:.0f} ms")
        out[spec.role] = ms
    return out
