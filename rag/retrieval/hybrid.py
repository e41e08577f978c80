"""Hybrid retrieval: fuse the BM25 and embedding candidate lists of one query into one ranking.

Two fusion methods (``retrieval.hybrid.method``):

- ``rrf``: reciprocal rank fusion, ``score = sum over lists of 1 / (rrf_k + rank)``.
- ``minmax``: each list's scores are min-max normalised over its own candidates for this query
  (best -> 1, worst -> 0; a list whose scores are all equal -> 1), then
  ``score = alpha * dense + (1 - alpha) * sparse``; a chunk missing from a list counts 0 there.

Title boost (``retrieval.hybrid.title_boost``, b): after fusing, each candidate gains
``b * share``, where share is the part of the question's IDF weight (corpus term statistics,
``rag.termstats``) held by the words of its document's title. Internal documents are titled
for what they are about ("ON-CALL ESCALATION AND CONTACTS"), and a short question ("What is
the on-call escalation policy?") is often just that title paraphrased; the body text of
another document that mentions escalation can otherwise outscore it. With ``minmax`` b is in
units of the fused score (0-1); with ``rrf`` fused scores are small, so b must be too.

Ties (RRF makes many: rank 3 in one list alone scores the same whichever list it is) are broken
by the better best rank across the two lists, then by chunk id, so results are deterministic.
Every candidate is kept, so a min-max score can be 0 (the worst of one list, absent from the other).

Reranking is a seam for code, not a setting: pass a ``Reranker`` to reorder the fused list. No
cross-encoder ships offline, so rag.yaml has no switch for one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from rag.config import Config, HybridConfig
from rag.retrieval.base import (
    CountsEncoded,
    Retriever,
    ReusesVectors,
    check_k,
    search_many,
)
from rag.termstats import TermStats, stats_for, terms
from rag.types import Chunk, Hit


class Reranker(Protocol):
    """Reorder fused hits for a query (e.g. with a cross-encoder); returns at most k, best first."""

    def rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]: ...


def _normalised(hits: Sequence[Hit]) -> dict[str, float]:
    if not hits:
        return {}
    scores = [h.score for h in hits]
    low, high = min(scores), max(scores)
    if high == low:
        return {h.chunk.id: 1.0 for h in hits}
    return {h.chunk.id: (h.score - low) / (high - low) for h in hits}


@lru_cache(maxsize=4096)
def _title_terms(title: str) -> frozenset[str]:
    return frozenset(terms(title))


def title_shares(query: str, chunks: Sequence[Chunk], stats: TermStats) -> dict[str, float]:
    """Each chunk's share (0-1) of the query's IDF weight found in its document title."""
    weights = stats.weights(terms(query))
    total = sum(weights.values())
    if total <= 0:
        return {}
    shares = {}
    for chunk in chunks:
        held = sum(w for t, w in weights.items() if t in _title_terms(chunk.title))
        if held > 0:
            shares[chunk.id] = held / total
    return shares


def fuse(
    sparse: Sequence[Hit],
    dense: Sequence[Hit],
    config: HybridConfig,
    k: int,
    bonus: Mapping[str, float] | None = None,
) -> list[Hit]:
    """Fuse two ranked candidate lists by ``config.method``; at most k hits, ties deterministic.

    ``bonus`` (chunk id -> score) is added to the fused score of the candidates it names.
    """
    check_k(k)
    chunks: dict[str, Chunk] = {}
    best_rank: dict[str, int] = {}
    for hits in (sparse, dense):
        for h in hits:
            chunks.setdefault(h.chunk.id, h.chunk)
            best_rank[h.chunk.id] = min(h.rank, best_rank.get(h.chunk.id, h.rank))
    fused: dict[str, float] = dict.fromkeys(chunks, 0.0)
    if config.method == "rrf":
        for hits in (sparse, dense):
            for h in hits:
                fused[h.chunk.id] += 1.0 / (config.rrf_k + h.rank)
    else:
        for weight, hits in ((1.0 - config.alpha, sparse), (config.alpha, dense)):
            for cid, norm in _normalised(hits).items():
                fused[cid] += weight * norm
    for cid, extra in (bonus or {}).items():
        if cid in fused:
            fused[cid] += extra
    order = sorted(fused, key=lambda cid: (-fused[cid], best_rank[cid], cid))[:k]
    return [Hit(chunk=chunks[cid], score=fused[cid], rank=r) for r, cid in enumerate(order, 1)]


class HybridRetriever:
    """BM25 and embedding candidates fused by RRF or weighted min-max scores."""

    name = "hybrid"

    def __init__(
        self,
        sparse: Retriever,
        dense: Retriever,
        config: HybridConfig | None = None,
        reranker: Reranker | None = None,
        chunks: Sequence[Chunk] = (),
    ) -> None:
        """``chunks``: what both sides were built on, when they were built outside this object
        (the title boost's IDF is computed over them); build() and load() set them too."""
        self.sparse = sparse
        self.dense = dense
        self.config = config if config is not None else HybridConfig()
        self.reranker = reranker
        self._chunks: Sequence[Chunk] = chunks

    @classmethod
    def from_config(cls, cfg: Config) -> HybridRetriever:
        """BM25 + embedding retrievers from ``cfg``."""
        from rag.retrieval.bm25 import BM25Retriever
        from rag.retrieval.embedding import EmbeddingRetriever

        return cls(
            BM25Retriever.from_config(cfg),
            EmbeddingRetriever.from_config(cfg),
            cfg.retrieval.hybrid,
        )

    def build(self, chunks: Sequence[Chunk]) -> None:
        """Build both sides on the same chunks."""
        self.sparse.build(chunks)
        self.dense.build(chunks)
        self._chunks = chunks

    def _title_bonus(self, query: str, sparse: list[Hit], dense: list[Hit]) -> dict[str, float]:
        boost = self.config.title_boost
        if boost <= 0:
            return {}
        candidates = {h.chunk.id: h.chunk for h in (*sparse, *dense)}
        shares = title_shares(query, list(candidates.values()), stats_for(self._chunks))
        return {cid: boost * share for cid, share in shares.items()}

    def _finish(self, query: str, sparse: list[Hit], dense: list[Hit], k: int) -> list[Hit]:
        pool = max(k, self.config.candidates)
        bonus = self._title_bonus(query, sparse, dense)
        hits = fuse(sparse, dense, self.config, pool if self.reranker else k, bonus)
        if self.reranker is not None and hits:
            return self.reranker.rerank(query, hits, k)[:k]
        return hits

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k fused hits, best first."""
        check_k(k)
        n = max(k, self.config.candidates)
        return self._finish(query, self.sparse.search(query, n), self.dense.search(query, n), k)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``search`` for each query, with each side searching the whole batch at once."""
        check_k(k)
        n = max(k, self.config.candidates)
        sparse = search_many(self.sparse, queries, n)
        dense = search_many(self.dense, queries, n)
        return [self._finish(q, s, d, k) for q, s, d in zip(queries, sparse, dense, strict=True)]

    def save(self, folder: Path) -> None:
        """Save each side into ``folder/bm25`` and ``folder/embedding``."""
        for sub, part in (("bm25", self.sparse), ("embedding", self.dense)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            part.save(folder / sub)

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Load each side from ``folder/bm25`` and ``folder/embedding``."""
        self.sparse.load(folder / "bm25", chunks)
        self.dense.load(folder / "embedding", chunks)
        self._chunks = chunks

    def reuse(self, folder: Path) -> int:
        """Offer the embedding side vectors saved under ``folder``; returns how many it took."""
        if not isinstance(self.dense, ReusesVectors):
            return 0
        sub = folder / "embedding"
        return self.dense.reuse(sub if sub.is_dir() else folder)

    @property
    def last_encoded(self) -> int | None:
        """How many chunks the embedding side encoded in its last build (None if it does not say)."""
        return self.dense.last_encoded if isinstance(self.dense, CountsEncoded) else None

    def fingerprint(self) -> dict[str, str]:
        """Both sides' fingerprints, keys prefixed ``bm25.`` and ``embedding.``."""
        merged = {"retriever": self.name}
        merged.update({f"bm25.{k}": v for k, v in self.sparse.fingerprint().items()})
        merged.update({f"embedding.{k}": v for k, v in self.dense.fingerprint().items()})
        return merged
