"""Warm the embedded model servers at start so the first user question is not a cold load.

A freshly started llama.cpp server has its weights mapped but not yet paged in, and has never
read the system prompt. One short request per server, with the app's own system prompt, pays
both before anyone asks: the system prompt's tokens then stay in the server's KV cache and are
reused as the common prefix of the next request.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from rag.models.embedded import ServerSpec


def warm_up_messages() -> list[dict[str, str]]:
    """The app's system prompt and a tiny user turn shaped like a real one."""
    from rag.prompts import answer_messages

    return [
        {"role": m["role"], "content": m["content"]}
        for m in answer_messages("Warm-up.", [], draft=True)
    ]


def warm_one(base_url: str, model: str, timeout_s: float = 300.0) -> float:
    """Send one short chat completion; returns its wall time in ms. Raises OSError on failure."""
    body = {
        "model": model,
        "messages": warm_up_messages(),
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
            ms = warm_one(spec.base_url, spec.alias)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            progress(f"{spec.role}: warm-up request failed ({exc}); the first question pays it")
            out[spec.role] = None
            continue
        progress(f"warmed {spec.role} in {ms:.0f} ms")
        out[spec.role] = ms
    return out
