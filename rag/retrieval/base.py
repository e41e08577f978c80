"""The Retriever protocol every strategy implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rag.types import Chunk, Hit

if TYPE_CHECKING:
    from rag.retrieval.encoder import Encoder


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


# ---- optional capabilities: small protocols a retriever declares by implementing them ----
# The index and the measurements ask `isinstance(retriever, BatchSearch)` etc.; the registry
# checks each retriever it makes (rag/retrieval/__init__.py: capabilities()).


@runtime_checkable
class BatchSearch(Protocol):
    """Searches many queries in one call (bm25 tokenizes, embedding encodes them together)."""

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...


@runtime_checkable
class Resettable(Protocol):
    """Keeps data outside the index folder (a Milvus collection) that a forced rebuild drops."""

    def reset(self) -> None: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """Reports long work (a remote upload) through the index's progress callback."""

    progress: Callable[[str], None]


@runtime_checkable
class CountsEncoded(Protocol):
    """Says how many chunks its last build encoded (None when it encodes nothing)."""

    @property
    def last_encoded(self) -> int | None: ...


@runtime_checkable
class ReusesVectors(Protocol):
    """Takes vectors saved by an earlier build, so only new or changed chunks are encoded."""

    def reuse(self, folder: Path) -> int:
        """Offer the vectors saved under ``folder`` to the next build(); returns how many."""


class Searcher(Protocol):
    """Anything that ranks chunks for a query, as Retriever.search does."""

    name: str

    def search(self, query: str, k: int) -> list[Hit]: ...


@runtime_checkable
class HasSparseSide(Protocol):
    """A fused retriever whose sparse (BM25) side can be searched alone (weak-context check)."""

    @property
    def sparse(self) -> Searcher | None: ...


@runtime_checkable
class HasEncoder(Protocol):
    """A retriever that embeds text (context compression scores sentences with it too)."""

    @property
    def encoder(self) -> Encoder: ...


@runtime_checkable
class HasDenseSide(Protocol):
    """A fused retriever whose dense (embedding) side can be searched alone (sufficiency)."""

    @property
    def dense(self) -> Searcher | None: ...


def search_many(retriever: Retriever, queries: Sequence[str], k: int) -> list[list[Hit]]:
    """Every query's hits: in one batch where the retriever can, else one search each."""
    if isinstance(retriever, BatchSearch):
        return retriever.search_many(queries, k)
    return [retriever.search(q, k) for q in queries]


def check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1. Currently, k is {k}")


def rank_hits(chunks: Sequence[Chunk], scores: Sequence[float], k: int) -> list[Hit]:
    """Best k by score, ties broken by chunk id; zero or negative scores are dropped."""
    order = sorted(
        (i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], chunks[i].id)
    )[:k]
    return [Hit(chunk=chunks[i], score=float(scores[i]), rank=r) for r, i in enumerate(order, 1)]
