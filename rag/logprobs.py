"""Answer confidence from per-token log-probabilities, citation markers left out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# "[1]", "[2, 3]", "[1][2]" — the markers the prompt asks for; their tokens say nothing about
# whether the answer is right, and models are very sure of them (they would lift the mean).
_MARKER = re.compile(r"\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]")


def answer_logprob_stats(
    tokens: Sequence[tuple[str, float]] | None,
) -> tuple[float | None, float | None]:
    """Mean and min log-probability of the answer tokens outside citation markers.

    ``tokens`` are (text, logprob) pairs in order. Returns (None, None) when nothing was
    returned or every token belongs to a marker: "unknown", never "confident".
    """
    if not tokens:
        return None, None
    text = "".join(t for t, _ in tokens)
    masked = [False] * len(text)
    for m in _MARKER.finditer(text):
        for i in range(m.start(), m.end()):
            masked[i] = True
    kept: list[float] = []
    pos = 0
    for piece, lp in tokens:
        span = range(pos, pos + len(piece))
        pos += len(piece)
        if not math.isfinite(lp):
            continue
        # a token that carries any marker character (" [", "1", "]." ...) is left out
        if any(masked[i] for i in span if not text[i].isspace()):
            continue
        kept.append(lp)
    if not kept:
        return None, None
    return sum(kept) / len(kept), min(kept)
