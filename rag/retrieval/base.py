"""The Retriever protocol every strategy implements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rag.types import Chunk, Hit


class Retriever(Protocol):
    """Rank chunks for a query. Read-only after build().

    ``search`` returns at most k hits, best first, with ranks 1..n; ties are broken by
    chunk id so results are deterministic. It raises ValueError if k < 1. An empty or
    all-stopword query, or an empty corpus, returns [].
    """

    name: str

    def build(self, chunks: Sequence[Chunk]) -> None: ...

    def search(self, query: str, k: int) -> list[Hit]: ...

    def save(self, folder: Path) -> None:
        """Write this retriever's artifacts into ``folder`` (created by the caller)."""

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Restore from ``folder``; ``chunks`` are the same chunks build() saw, same order."""

    def fingerprint(self) -> dict[str, str]:
        """What the saved artifacts depend on (model id, dims, versions); a change forces a rebuild."""


def check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1. Currently, k is {k}")


def rank_hits(chunks: Sequence[Chunk], scores: Sequence[float], k: int) -> list[Hit]:
    """Best k by score, ties broken by chunk id; zero or negative scores are dropped."""
    order = sorted(
        (i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], chunks[i].id)
    )[:k]
    return [Hit(chunk=chunks[i], score=float(scores[i]), rank=r) for r, i in enumerate(order, 1)]
