"""MilvusRetriever: bm25, embedding or hybrid retrieval on one Milvus collection."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from rag.config import Config, MilvusKind
from rag.errors import ConfigError, IndexError_
from rag.retrieval.base import check_k
from rag.retrieval.bm25 import Analyzer, scoring_fingerprint
from rag.retrieval.embedding import embedding_fingerprint, has_content, text_key
from rag.retrieval.encoder import Encoder, load_encoder
from rag.retrieval.milvus import sync
from rag.retrieval.milvus.client import Connection, display_uri, resolve_uri
from rag.retrieval.milvus.schema import (
    FINGERPRINT_PROPERTY,
    SCHEMA_VERSION,
    chunk_pk,
    collection_schema,
    fit,
)
from rag.retrieval.milvus.search import MAX_TOPK, QUERY_BLOCK, order_hits, search_collection
from rag.retrieval.milvus.state import fingerprint_diff, read_state, write_state
from rag.text import chunk_text
from rag.types import Chunk, Hit

Mode = MilvusKind
MODES: tuple[Mode, ...] = get_args(MilvusKind)
T = TypeVar("T")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class MilvusRetriever:
    """bm25, embedding or hybrid retrieval on one Milvus collection; see the package docstring."""

    def __init__(self, cfg: Config, mode: Mode, encoder: Encoder | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown Milvus retriever {mode!r}; choose from {', '.join(MODES)}")
        self.cfg = cfg
        self.mode: Mode = mode
        self.name: str = mode
        self.settings = cfg.retrieval.milvus
        self.collection = f"{self.settings.collection}_{mode}"
        if not self.collection.replace("_", "a").isalnum() or self.collection[0].isdigit():
            raise ConfigError(
                f"retrieval.milvus.collection {self.settings.collection!r} is not a valid Milvus "
                "collection name: use letters, digits and underscores, starting with a letter"
            )
        self.uri = resolve_uri(self.settings.uri)
        self.conn = Connection(self.uri, self.settings)
        self.progress: Callable[[str], None] = _stderr
        self._encoder = encoder
        self._given_encoder = encoder is not None
        self._analyzer = Analyzer(cfg.retrieval.bm25)
        self._by_pk: dict[str, Chunk] = {}
        self._hash_of: dict[str, str] = {}  # chunk id -> text hash
        self.last_encoded: int | None = None if mode == "bm25" else 0

    @property
    def has_terms(self) -> bool:
        """Whether the collection has the BM25 fields (bm25, hybrid)."""
        return self.mode != "embedding"

    @property
    def has_vectors(self) -> bool:
        """Whether the collection has the dense vector field (embedding, hybrid)."""
        return self.mode != "bm25"

    @property
    def encoder(self) -> Encoder:
        """The query/chunk encoder, loaded now if needed (RetrieverUnavailable if not built)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.cfg)
        return self._encoder

    # ---- the collection ----

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with retries (client.py)."""
        return self.conn.call(what, fn)

    def _recorded_fingerprint(self) -> str | None:
        return sync.recorded_fingerprint(self.conn, self.collection)

    def _stored_rows(self) -> dict[str, str]:
        return sync.stored_rows(self.conn, self.collection)

    def _delete(self, pks: list[str]) -> None:
        sync.delete_rows(self.conn, self.collection, pks)

    def _dim(self) -> int:
        return int(self._embedding_fingerprint()["dim"])

    def _prepare_collection(self) -> None:
        """Create the collection if missing; drop and recreate it if built with other settings."""
        wanted = sync.fingerprint_json(self.fingerprint())
        name, timeout = self.collection, self.settings.timeout_s
        found = self._recorded_fingerprint()
        if found == wanted:
            sync.ensure_loaded(self.conn, name)
            return
        if found is not None:
            self.progress(
                f"milvus: collection {name} at {display_uri(self.uri)} was built with other "
                f"settings ({fingerprint_diff(found, self.fingerprint())}); dropping it and rebuilding"
            )
            sync.drop(self.conn, name)
        bm25 = self.cfg.retrieval.bm25 if self.has_terms else None
        dim = self._dim() if self.has_vectors else None

        def create(client: Any) -> None:
            schema, index = collection_schema(client, self.settings, bm25=bm25, dim=dim)
            client.create_collection(
                name,
                schema=schema,
                consistency_level="Session",
                properties={FINGERPRINT_PROPERTY: wanted},
                timeout=timeout,
            )
            # sync=False: pymilvus would poll each index of this empty collection, 0.5 s a time
            client.create_index(name, index, timeout=timeout, sync=False)
            client.load_collection(name, timeout=timeout)

        self._call("create_collection", create)
        sync.ensure_loaded(self.conn, name)

    # ---- build ----

    def reset(self) -> None:
        """Drop this retriever's collection, so the next build() starts from scratch."""
        if self._recorded_fingerprint() is not None:
            sync.drop(self.conn, self.collection)
        self._by_pk, self._hash_of = {}, {}

    def build(self, chunks: Sequence[Chunk]) -> None:
        """Bring the collection to exactly ``chunks``: delete gone rows, write new or changed ones."""
        from tqdm import tqdm

        self._prepare_collection()
        stored = self._stored_rows()
        by_pk = {chunk_pk(c.id): c for c in chunks}
        hash_of = {c.id: text_key(chunk_text(c)) for c in chunks}
        gone = sorted(pk for pk in stored if pk not in by_pk)
        todo = sorted(
            (c for pk, c in by_pk.items() if stored.get(pk) != hash_of[c.id]), key=lambda c: c.id
        )
        size = self.settings.batch_size
        for start in range(0, len(gone), size):
            self._delete(gone[start : start + size])
        vectors: dict[str, list[float]] = {}
        encoded = 0
        with tqdm(
            total=len(todo),
            desc=f"milvus {self.collection}",
            unit="chunk",
            file=sys.stderr,
            disable=None if todo else True,
        ) as bar:
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                if self.has_vectors:
                    encoded += self._encode_missing(batch, vectors)
                rows = [self._row(c, hash_of[c.id], vectors) for c in batch]
                sync.upsert_rows(self.conn, self.collection, rows)
                bar.update(len(batch))
        if gone or todo:
            sync.flush(self.conn, self.collection)  # once, after all the writes
        self._by_pk = by_pk
        self._hash_of = hash_of
        if self.has_vectors:
            self.last_encoded = encoded

    def _encode_missing(self, batch: Sequence[Chunk], vectors: dict[str, list[float]]) -> int:
        texts = sorted({t for t in map(chunk_text, batch) if text_key(t) not in vectors})
        if texts:
            encoded = self.encoder.encode(texts)
            vectors.update(
                (text_key(t), [float(x) for x in row])
                for t, row in zip(texts, encoded, strict=True)
            )
        return len(texts)

    def _row(self, chunk: Chunk, text_hash: str, vectors: dict[str, list[float]]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": chunk_pk(chunk.id),
            "chunk_id": fit(chunk.id),
            "doc_id": fit(chunk.doc_id),
            "text_hash": text_hash,
        }
        if self.has_terms:
            text = chunk_text(chunk)
            row["terms"] = fit(" ".join(self._analyzer.analyze(text)))
        if self.has_vectors:
            row["dense"] = vectors[text_hash]
        return row

    # ---- search ----

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k hits, best first, ties by chunk id; [] for a query with no content."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``search`` for each query, sending them to Milvus in blocks of QUERY_BLOCK."""
        return self._search_many(queries, k, self.mode)

    @property
    def sparse(self) -> MilvusBM25Side | None:
        """Hybrid's BM25 side (same collection), as the local HybridRetriever has; else None."""
        return MilvusBM25Side(self) if self.mode == "hybrid" else None

    def _search_many(self, queries: Sequence[str], k: int, kind: Mode) -> list[list[Hit]]:
        check_k(k)
        results: list[list[Hit]] = [[] for _ in queries]
        if not self._by_pk:
            return results
        fetch = min(MAX_TOPK, k + max(k, 10))  # room to break ties at the k-th place by id
        plans: dict[tuple[bool, bool], list[int]] = {}
        terms: list[str] = []
        for i, query in enumerate(queries):
            lexical = kind != "embedding" and bool(query.strip())
            words = " ".join(self._analyzer.analyze(query)) if lexical else ""
            terms.append(words)
            shape = (bool(words), kind != "bm25" and has_content(query))
            if any(shape):
                plans.setdefault(shape, []).append(i)
        for (use_sparse, use_dense), members in plans.items():
            for start in range(0, len(members), QUERY_BLOCK):
                block = members[start : start + QUERY_BLOCK]
                texts = [terms[i] for i in block] if use_sparse else []
                vectors = (
                    [
                        [float(x) for x in v]
                        for v in self.encoder.encode([queries[i] for i in block])
                    ]
                    if use_dense
                    else []
                )
                found = search_collection(
                    self.conn, self.collection, self.cfg, kind, texts, vectors, fetch
                )
                for i, raw in zip(block, found, strict=True):
                    results[i] = order_hits(
                        raw, k, self._by_pk, self._hash_of, positive=kind == "bm25"
                    )
        return results

    # ---- persistence: the rows live in Milvus; the folder only says where ----

    def save(self, folder: Path) -> None:
        """Write milvus.json: where the collection is, how many rows, and the fingerprint."""
        state = {
            "uri": display_uri(self.uri),
            "collection": self.collection,
            "count": len(self._by_pk),
            "fingerprint": self.fingerprint(),
        }
        write_state(folder, state)

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Check the collection holds exactly ``chunks`` as built; IndexError_ if not (a rebuild)."""
        state = read_state(folder)
        if state.get("fingerprint") != self.fingerprint():
            raise IndexError_(
                f"Milvus collection {state.get('collection')} was built with other settings "
                f"({fingerprint_diff(sync.fingerprint_json(state.get('fingerprint') or {}), self.fingerprint())}); "
                "run `rag index` to rebuild it"
            )
        where = f"collection {self.collection} at {display_uri(self.uri)}"
        found = self._recorded_fingerprint()
        if found is None:
            raise IndexError_(f"{where} does not exist; run `rag index` to build it")
        if found != sync.fingerprint_json(self.fingerprint()):
            raise IndexError_(
                f"{where} was built with other settings ({fingerprint_diff(found, self.fingerprint())}); "
                "run `rag index` to rebuild it"
            )
        sync.ensure_loaded(self.conn, self.collection)
        stored = self._stored_rows()
        hash_of = {c.id: text_key(chunk_text(c)) for c in chunks}
        wanted = {chunk_pk(c.id): hash_of[c.id] for c in chunks}
        if stored != wanted:
            missing = len(set(wanted) - set(stored))
            extra = len(set(stored) - set(wanted))
            changed = sum(1 for pk, h in wanted.items() if pk in stored and stored[pk] != h)
            raise IndexError_(
                f"{where} holds {len(stored)} chunks, not the {len(wanted)} expected "
                f"({missing} missing, {extra} extra, {changed} with other text); "
                "run `rag index` to update it"
            )
        self._by_pk = {chunk_pk(c.id): c for c in chunks}
        self._hash_of = hash_of
        if self.has_vectors:
            self.last_encoded = 0

    def fingerprint(self) -> dict[str, str]:
        """What the collection depends on: schema, index parameters, analysis, embedding model."""
        s = self.settings
        fp = {
            "store": "milvus",
            "schema": SCHEMA_VERSION,
            "retriever": self.mode,
            "collection": self.collection,
        }
        if self.has_terms:
            bm25 = scoring_fingerprint(self.cfg.retrieval.bm25)
            fp.update({f"bm25.{k}": v for k, v in bm25.items()})
        if self.has_vectors:
            fp["index_type"] = s.index_type
            fp["metric"] = "IP"
            if s.index_type == "HNSW":
                fp["hnsw_m"] = str(s.hnsw_m)
                fp["hnsw_ef_construction"] = str(s.hnsw_ef_construction)
            fp.update({f"embedding.{k}": v for k, v in self._embedding_fingerprint().items()})
        return fp

    def _embedding_fingerprint(self) -> dict[str, str]:
        return embedding_fingerprint(self.cfg, self._encoder if self._given_encoder else None)


class MilvusBM25Side:
    """BM25 alone on a hybrid collection's sparse field: what hybrid is judged on for weak context."""

    name = "bm25"

    def __init__(self, owner: MilvusRetriever) -> None:
        self._owner = owner

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k BM25 hits, best first, scored as the bm25 retriever scores them."""
        return self._owner._search_many([query], k, "bm25")[0]


def milvus_retriever(name: str, cfg: Config) -> MilvusRetriever:
    """The Milvus version of retriever ``name`` (bm25, embedding or hybrid), for store: milvus."""
    if name not in MODES:
        raise ConfigError(
            f"retriever {name!r} has no Milvus version; choose from {', '.join(MODES)}, "
            "or set retrieval.store: local"
        )
    return MilvusRetriever(cfg, name)
