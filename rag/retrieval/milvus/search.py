"""Search on a collection: requests grouped by shape, BM25 put on the local scale, ties by id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rag.config import Config, MilvusConfig, MilvusKind
from rag.retrieval.milvus.client import Connection
from rag.types import Chunk, Hit

MAX_TOPK = 16384  # Milvus' limit on one search's results
QUERY_BLOCK = 64  # queries per search request in search_many


def dense_params(settings: MilvusConfig, limit: int) -> dict[str, Any]:
    """Search parameters of the dense field: inner product, and HNSW's ef."""
    params: dict[str, Any] = {"metric_type": "IP"}
    if settings.index_type == "HNSW":
        params["params"] = {"ef": max(settings.search_ef, limit)}
    return params


def search_collection(
    conn: Connection,
    collection: str,
    cfg: Config,
    kind: MilvusKind,
    texts: list[str],
    vectors: list[list[float]],
    fetch: int,
) -> list[list[tuple[str, float]]]:
    """(pk, score) per query: BM25 on the local index's scale, cosine, or the RRF score."""
    from pymilvus import AnnSearchRequest, RRFRanker

    name, timeout, settings = collection, cfg.retrieval.milvus.timeout_s, cfg.retrieval.milvus
    bm25 = {"metric_type": "BM25"}
    if kind == "hybrid":
        pool = min(MAX_TOPK, max(fetch, cfg.retrieval.hybrid.candidates))
        reqs = []
        if texts:
            reqs.append(AnnSearchRequest(data=texts, anns_field="sparse", param=bm25, limit=pool))
        if vectors:
            dense = dense_params(settings, pool)
            reqs.append(AnnSearchRequest(data=vectors, anns_field="dense", param=dense, limit=pool))
        ranker = RRFRanker(settings.rrf_k)
        raw = conn.call(
            "hybrid_search",
            lambda c: c.hybrid_search(
                name, reqs, ranker, limit=fetch, output_fields=["id"], timeout=timeout
            ),
        )
    else:
        field, data = ("sparse", texts) if kind == "bm25" else ("dense", vectors)
        params = bm25 if kind == "bm25" else dense_params(settings, fetch)
        raw = conn.call(
            "search",
            lambda c: c.search(
                name,
                data=data,
                anns_field=field,
                limit=fetch,
                search_params=params,
                output_fields=["id"],
                timeout=timeout,
            ),
        )
    if kind != "bm25":
        return [[(str(h["id"]), float(h["distance"])) for h in hits] for hits in raw]
    # Milvus scores BM25 with the classic (k1 + 1) numerator (milvus-lite returns it
    # negated); bm25s, like Lucene since 8.0, leaves that constant out. Dividing it out puts
    # both stores on one scale, so escalation.weak_context.bm25 holds for either.
    scale = cfg.retrieval.bm25.k1 + 1.0
    return [[(str(h["id"]), abs(float(h["distance"])) / scale) for h in hits] for hits in raw]


def order_hits(
    raw: Sequence[tuple[str, float]],
    k: int,
    by_pk: Mapping[str, Chunk],
    hash_of: Mapping[str, str],
    *,
    positive: bool,
) -> list[Hit]:
    """At most k hits of known rows, best first; chunks with the same text in chunk-id order."""
    found = [(by_pk[pk], score) for pk, score in raw if pk in by_pk]
    if positive:
        found = [(c, s) for c, s in found if s > 0]
    found.sort(key=lambda cs: (-cs[1], cs[0].id))
    # Chunks with the same text score the same on both sides; Milvus orders such ties by
    # storage order, which RRF then turns into different scores. Put them in id order.
    chunks = [c for c, _ in found]
    places: dict[str, list[int]] = {}
    for pos, chunk in enumerate(chunks):
        places.setdefault(hash_of[chunk.id], []).append(pos)
    for positions in places.values():
        if len(positions) > 1:
            ordered = sorted((chunks[p] for p in positions), key=lambda c: c.id)
            for pos, chunk in zip(positions, ordered, strict=True):
                chunks[pos] = chunk
    return [
        Hit(chunk=chunk, score=score, rank=rank)
        for rank, (chunk, (_, score)) in enumerate(zip(chunks, found, strict=True), 1)
    ][:k]
