"""Retrieval on Milvus: one API (pymilvus' MilvusClient) for milvus-lite, its server and a cluster.

``retrieval.milvus.uri`` picks the deployment: a ``.db`` path is embedded milvus-lite (one
process per data directory), ``http://host:port`` a ``milvus-lite server`` or a Milvus
standalone/cluster (``MILVUS_URI`` overrides it; ``token_env`` names the variable holding
``user:password`` or an API token).

Each retriever name owns one collection, ``<collection>_<name>``:

* ``id``: VARCHAR primary key, the first 32 hex digits of sha256(chunk id), so any chunk id
  fits; ``chunk_id`` and ``doc_id`` keep the originals for people reading the collection.
* ``text_hash``: sha256 of the embedded text (title, heading path, body); a changed hash is a
  changed chunk, which is all the incremental update needs.
* ``terms`` -> ``sparse`` (bm25, hybrid): a BM25 Function turns the analyzed VARCHAR into a
  sparse vector server-side and Milvus scores it with BM25 (k1, b from ``retrieval.bm25``).
  The terms are analyzed here, with the local BM25 index's stopwords and Snowball stemmer:
  milvus-lite has no stemming filter, so this is what makes milvus-lite, Milvus and the local
  index rank with the same terms. The server only splits them on spaces.
* ``dense`` (embedding, hybrid): FLOAT_VECTOR from our ONNX encoder, HNSW (or FLAT/AUTOINDEX)
  with inner product (the vectors are L2-normalised, so IP is cosine and a zero vector scores 0).

Hybrid is server-side: ``hybrid_search`` with a BM25 and a dense AnnSearchRequest fused by
RRFRanker(``retrieval.milvus.rrf_k``). Results are re-sorted by (-score, chunk id), and chunks
with the same text take their places in id order, so ties are deterministic as the Retriever
protocol promises. Each search asks Milvus for more than k so ties at the cut are kept.

The collection records the retriever's fingerprint in a property; a build that finds another
fingerprint (schema version, model, analysis, index parameters) drops the collection and
rebuilds it, saying why; ``reset()`` drops it on request. Pitfalls: milvus-lite computes BM25
IDF per segment (rows added by an incremental update score against their own small segment
until a rebuild from scratch), and it is pure Python, so keep its collections to about 10k
chunks; use Milvus standalone beyond that.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit, urlunsplit

from rag.config import Config
from rag.errors import ConfigError, IndexError_, RetrieverUnavailable
from rag.retrieval.base import check_k
from rag.retrieval.bm25 import BM25Retriever
from rag.retrieval.embedding import EmbeddingRetriever, chunk_text, has_content, text_key
from rag.retrieval.encoder import Encoder, load_encoder
from rag.types import Chunk, Hit

Mode = Literal["bm25", "embedding", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
SCHEMA_VERSION = "1"
STATE_FILE = "milvus.json"
FINGERPRINT_PROPERTY = "rag.fingerprint"
PK_CHARS = 32  # hex digits of sha256(chunk id): 128 bits
MAX_VARCHAR = 65535  # Milvus' VARCHAR limit, in bytes
MAX_TOPK = 16384  # Milvus' limit on one search's results
QUERY_BLOCK = 64  # queries per search request in search_many
SCAN_BATCH = 4096  # rows per page when reading the ids back
BACKOFF_S = 0.5  # first retry delay; doubles each time
TRANSIENT_MARKERS = (
    "unavailable",
    "fail connecting",
    "connection refused",
    "deadline exceeded",
    "rate limit",
    "too many requests",
    "socket closed",
)
T = TypeVar("T")
log = logging.getLogger(__name__)


class _DropMvccWarning(logging.Filter):
    """milvus-lite returns no MVCC timestamp to query iterators; pymilvus warns on every scan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_DropMvccWarning())


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chunk_pk(chunk_id: str) -> str:
    """The primary key of a chunk's row: fixed length, whatever the chunk id."""
    return hashlib.sha256(chunk_id.encode("utf-8")).hexdigest()[:PK_CHARS]


def _fit(text: str, limit: int = MAX_VARCHAR) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def display_uri(uri: str) -> str:
    """The URI without any user:password part, fit for messages and saved state."""
    if uri.endswith(".db") or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _both_forms(params: dict[str, Any]) -> dict[str, Any]:
    """Index parameters flat (as Milvus reads them) and under "params" (as milvus-lite 3.2 does).

    pymilvus 3 sends each parameter as its own key; milvus-lite 3.2.2 reads only a JSON "params"
    key and silently builds with its defaults otherwise (BM25 k1 1.5, b 0.75). Milvus merges
    a "params" key into the flat ones, so sending both is safe there.
    """
    return {**params, "params": dict(params)} if params else {}


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    if "retry timeout" in text or "retry run out" in text:
        return False  # pymilvus already retried this call for timeout_s: give up now
    code = getattr(exc, "code", None)
    code = code() if callable(code) else code
    if getattr(code, "name", None) in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"):
        return True
    return any(marker in text for marker in TRANSIENT_MARKERS)


# ---- connections: one client per (uri, token), shared by every retriever in the process ----

_CLIENTS: dict[tuple[str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client_for(uri: str, token: str, timeout: float) -> Any:
    from pymilvus import MilvusClient

    # pymilvus logs every failed RPC with a traceback on its own stderr handler; our
    # RetrieverUnavailable already carries the reason, so keep the CLI and chat logs readable.
    # (Set the "pymilvus" logger to DEBUG again to see them.)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((uri, token))
        if client is None:
            options: dict[str, Any] = {}
            if uri.endswith(".db"):
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
                # The embedded server runs gRPC's default ping policy and answers pymilvus'
                # idle keepalive pings (every 10 s) with GOAWAY "too_many_pings" while a long
                # build encodes; in process there is no idle connection worth probing.
                options["grpc_options"] = {"grpc.keepalive_permit_without_calls": 0}
            client = MilvusClient(uri=uri, token=token, timeout=timeout, **options)
            _CLIENTS[(uri, token)] = client
        return client


def _forget_client(uri: str, token: str) -> None:
    with _CLIENTS_LOCK:
        client = _CLIENTS.pop((uri, token), None)
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # closing a broken channel must not hide the real error
            log.debug("closing the Milvus client for %s failed: %s", display_uri(uri), exc)


def release(uri: str) -> None:
    """Close this process's clients for ``uri``; for a ``.db`` also stop its embedded milvus-lite."""
    resolved = resolve_uri(uri)
    with _CLIENTS_LOCK:
        keys = [key for key in _CLIENTS if key[0] == resolved]
    for key in keys:
        _forget_client(*key)
    if resolved.endswith(".db"):
        try:
            manager: Any = importlib.import_module("milvus_lite.server_manager")
        except ImportError:
            return
        manager.server_manager_instance.release_server(resolved)


def resolve_uri(uri: str) -> str:
    """A ``.db`` path made absolute (milvus-lite keys its servers by path); URLs as given."""
    return str(Path(uri).expanduser().resolve()) if uri.endswith(".db") else uri


# ---- the retriever ----


class MilvusRetriever:
    """bm25, embedding or hybrid retrieval on one Milvus collection; see the module docstring."""

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
        self.progress: Callable[[str], None] = _stderr
        self._encoder = encoder
        self._given_encoder = encoder is not None
        self._analyzer = BM25Retriever(cfg.retrieval.bm25)
        self._client: Any = None
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

    # ---- talking to Milvus ----

    def _token(self) -> str:
        env = self.settings.token_env
        if not env:
            return ""
        token = os.environ.get(env)
        if not token:
            raise RetrieverUnavailable(
                f"retrieval.milvus.token_env names {env}, but {env} is not set; "
                f"export {env}=user:password (or an API token), or set token_env: null"
            )
        return token

    def _unavailable(self, what: str, exc: BaseException) -> RetrieverUnavailable:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        where = display_uri(self.uri)
        hint = "check that Milvus is running there and that MILVUS_URI (or retrieval.milvus.uri) points at it"
        if self.uri.endswith(".db") and "open local milvus failed" in reason.lower():
            hint = (
                "milvus-lite allows one process per data directory: stop the other process, or "
                f"serve it with `milvus-lite server --data-dir {where} --host 127.0.0.1` and set "
                "MILVUS_URI=http://127.0.0.1:19530 in every process"
            )
        return RetrieverUnavailable(
            f"retrieval on Milvus at {where} is unavailable ({what} failed: {reason}); {hint}. "
            "What still works: the lexical retriever, and the local store "
            "(retrieval.store: local or RAG__RETRIEVAL__STORE=local, then `rag index`)."
        )

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, retried with backoff on transient gRPC errors; RetrieverUnavailable after."""
        from pymilvus.exceptions import MilvusException

        grpc: Any = importlib.import_module("grpc")  # no type stubs; pymilvus depends on it
        failures: tuple[type[BaseException], ...] = (MilvusException, grpc.RpcError)
        delay = BACKOFF_S
        for attempt in range(self.settings.retries + 1):
            try:
                if self._client is None:
                    self._client = _client_for(self.uri, self._token(), self.settings.timeout_s)
                return fn(self._client)
            except failures as exc:
                # gRPC channels reconnect by themselves: keep the (shared) client and retry
                if not _is_transient(exc) or attempt == self.settings.retries:
                    stage = what if self._client is not None else "connecting"
                    raise self._unavailable(stage, exc) from None
                log.info("milvus %s failed (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _schema(self, client: Any) -> tuple[Any, Any]:
        from pymilvus import DataType, Function, FunctionType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=PK_CHARS)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("text_hash", DataType.VARCHAR, max_length=64)
        index = client.prepare_index_params()
        if self.has_terms:
            schema.add_field(
                "terms",
                DataType.VARCHAR,
                max_length=MAX_VARCHAR,
                enable_analyzer=True,
                analyzer_params={"tokenizer": "standard", "filter": ["lowercase"]},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="terms_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["terms"],
                    output_field_names=["sparse"],
                )
            )
            bm25 = self.cfg.retrieval.bm25
            index.add_index(
                field_name="sparse",
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params=_both_forms({"bm25_k1": bm25.k1, "bm25_b": bm25.b}),
            )
        if self.has_vectors:
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self._dim())
            params: dict[str, Any] = {}
            if self.settings.index_type == "HNSW":
                params = {
                    "M": self.settings.hnsw_m,
                    "efConstruction": self.settings.hnsw_ef_construction,
                }
            index.add_index(
                field_name="dense",
                index_type=self.settings.index_type,
                metric_type="IP",
                params=_both_forms(params),
            )
        return schema, index

    def _dim(self) -> int:
        return int(self._embedding_fingerprint()["dim"])

    def _recorded_fingerprint(self) -> str | None:
        """The fingerprint the collection was built with, or None if there is no collection."""
        name, timeout = self.collection, self.settings.timeout_s
        if not self._call("has_collection", lambda c: c.has_collection(name, timeout=timeout)):
            return None
        info = self._call(
            "describe_collection", lambda c: c.describe_collection(name, timeout=timeout)
        )
        return str(dict(info.get("properties") or {}).get(FINGERPRINT_PROPERTY, "{}"))

    def _prepare_collection(self) -> None:
        """Create the collection if missing; drop and recreate it if built with other settings."""
        wanted = json.dumps(self.fingerprint(), sort_keys=True)
        name, timeout = self.collection, self.settings.timeout_s
        found = self._recorded_fingerprint()
        if found == wanted:
            self._ensure_loaded()
            return
        if found is not None:
            self.progress(
                f"milvus: collection {name} at {display_uri(self.uri)} was built with other "
                f"settings ({_diff(found, self.fingerprint())}); dropping it and rebuilding"
            )
            self._call("drop_collection", lambda c: c.drop_collection(name, timeout=timeout))

        def create(client: Any) -> None:
            schema, index = self._schema(client)
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
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        name, timeout = self.collection, self.settings.timeout_s
        state = self._call("get_load_state", lambda c: c.get_load_state(name, timeout=timeout))
        if "NotLoad" in str(state.get("state")):
            self._call("load_collection", lambda c: c.load_collection(name, timeout=timeout))

    def _stored_rows(self) -> dict[str, str]:
        """pk -> text hash of every row in the collection (read with strong consistency)."""

        def scan(client: Any) -> dict[str, str]:
            rows: dict[str, str] = {}
            it = client.query_iterator(
                self.collection,
                batch_size=SCAN_BATCH,
                output_fields=["text_hash"],
                timeout=self.settings.timeout_s,
                consistency_level="Strong",
            )
            try:
                while batch := it.next():
                    rows.update((str(r["id"]), str(r["text_hash"])) for r in batch)
            finally:
                it.close()
            return rows

        return self._call("reading the stored ids", scan)

    # ---- build ----

    def reset(self) -> None:
        """Drop this retriever's collection, so the next build() starts from scratch."""
        name, timeout = self.collection, self.settings.timeout_s
        if self._recorded_fingerprint() is not None:
            self._call("drop_collection", lambda c: c.drop_collection(name, timeout=timeout))
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
        timeout = self.settings.timeout_s
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
                self._upsert([self._row(c, hash_of[c.id], vectors) for c in batch])
                bar.update(len(batch))
        if gone or todo:
            # milvus-lite rebuilds the BM25 index of unflushed rows on every search: flush once
            self._call("flush", lambda c: c.flush(self.collection, timeout=timeout))
        self._by_pk = by_pk
        self._hash_of = hash_of
        if self.has_vectors:
            self.last_encoded = encoded

    def _delete(self, pks: list[str]) -> None:
        timeout = self.settings.timeout_s
        self._call("delete", lambda c: c.delete(self.collection, ids=pks, timeout=timeout))

    def _upsert(self, rows: list[dict[str, Any]]) -> None:
        # upsert, not insert: a retried batch must not leave duplicate primary keys
        timeout = self.settings.timeout_s
        self._call("upsert", lambda c: c.upsert(self.collection, rows, timeout=timeout))

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
            "chunk_id": _fit(chunk.id),
            "doc_id": _fit(chunk.doc_id),
            "text_hash": text_hash,
        }
        if self.has_terms:
            text = f"{chunk.title}\n{chunk.heading}\n{chunk.text}"
            row["terms"] = _fit(" ".join(self._analyzer.analyze(text)))
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
                found = self._search(kind, texts, vectors, fetch)
                for i, raw in zip(block, found, strict=True):
                    results[i] = self._hits(raw, k, positive=kind == "bm25")
        return results

    def _dense_params(self, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.settings.index_type == "HNSW":
            params["params"] = {"ef": max(self.settings.search_ef, limit)}
        return params

    def _search(
        self, kind: Mode, texts: list[str], vectors: list[list[float]], fetch: int
    ) -> list[list[tuple[str, float]]]:
        """(pk, score) per query: BM25 on the local index's scale, cosine, or the RRF score."""
        from pymilvus import AnnSearchRequest, RRFRanker

        name, timeout = self.collection, self.settings.timeout_s
        bm25 = {"metric_type": "BM25"}
        if kind == "hybrid":
            pool = min(MAX_TOPK, max(fetch, self.cfg.retrieval.hybrid.candidates))
            reqs = []
            if texts:
                reqs.append(
                    AnnSearchRequest(data=texts, anns_field="sparse", param=bm25, limit=pool)
                )
            if vectors:
                dense = self._dense_params(pool)
                reqs.append(
                    AnnSearchRequest(data=vectors, anns_field="dense", param=dense, limit=pool)
                )
            ranker = RRFRanker(self.settings.rrf_k)
            raw = self._call(
                "hybrid_search",
                lambda c: c.hybrid_search(
                    name, reqs, ranker, limit=fetch, output_fields=["id"], timeout=timeout
                ),
            )
        else:
            field, data = ("sparse", texts) if kind == "bm25" else ("dense", vectors)
            params = bm25 if kind == "bm25" else self._dense_params(fetch)
            raw = self._call(
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
        scale = self.cfg.retrieval.bm25.k1 + 1.0
        return [[(str(h["id"]), abs(float(h["distance"])) / scale) for h in hits] for hits in raw]

    def _hits(self, raw: Sequence[tuple[str, float]], k: int, *, positive: bool) -> list[Hit]:
        found = [(self._by_pk[pk], score) for pk, score in raw if pk in self._by_pk]
        if positive:
            found = [(c, s) for c, s in found if s > 0]
        found.sort(key=lambda cs: (-cs[1], cs[0].id))
        # Chunks with the same text score the same on both sides; Milvus orders such ties by
        # storage order, which RRF then turns into different scores. Put them in id order.
        chunks = [c for c, _ in found]
        places: dict[str, list[int]] = {}
        for pos, chunk in enumerate(chunks):
            places.setdefault(self._hash_of[chunk.id], []).append(pos)
        for positions in places.values():
            if len(positions) > 1:
                ordered = sorted((chunks[p] for p in positions), key=lambda c: c.id)
                for pos, chunk in zip(positions, ordered, strict=True):
                    chunks[pos] = chunk
        return [
            Hit(chunk=chunk, score=score, rank=rank)
            for rank, (chunk, (_, score)) in enumerate(zip(chunks, found, strict=True), 1)
        ][:k]

    # ---- persistence: the rows live in Milvus; the folder only says where ----

    def save(self, folder: Path) -> None:
        """Write milvus.json: where the collection is, how many rows, and the fingerprint."""
        state = {
            "uri": display_uri(self.uri),
            "collection": self.collection,
            "count": len(self._by_pk),
            "fingerprint": self.fingerprint(),
        }
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Check the collection holds exactly ``chunks`` as built; IndexError_ if not (a rebuild)."""
        try:
            state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexError_(
                f"Milvus index state in {folder} is missing or unreadable ({exc}); "
                "run `rag index` to rebuild it"
            ) from None
        if state.get("fingerprint") != self.fingerprint():
            raise IndexError_(
                f"Milvus collection {state.get('collection')} was built with other settings "
                f"({_diff(json.dumps(state.get('fingerprint')), self.fingerprint())}); "
                "run `rag index` to rebuild it"
            )
        where = f"collection {self.collection} at {display_uri(self.uri)}"
        found = self._recorded_fingerprint()
        if found is None:
            raise IndexError_(f"{where} does not exist; run `rag index` to build it")
        if found != json.dumps(self.fingerprint(), sort_keys=True):
            raise IndexError_(
                f"{where} was built with other settings ({_diff(found, self.fingerprint())}); "
                "run `rag index` to rebuild it"
            )
        self._ensure_loaded()
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
            bm25 = self._analyzer.fingerprint()
            fp.update({f"bm25.{k}": v for k, v in bm25.items() if k not in ("retriever", "method")})
        if self.has_vectors:
            fp["index_type"] = s.index_type
            fp["metric"] = "IP"
            if s.index_type == "HNSW":
                fp["hnsw_m"] = str(s.hnsw_m)
                fp["hnsw_ef_construction"] = str(s.hnsw_ef_construction)
            fp.update({f"embedding.{k}": v for k, v in self._embedding_fingerprint().items()})
        return fp

    def _embedding_fingerprint(self) -> dict[str, str]:
        encoder = self._encoder if self._given_encoder else None
        return EmbeddingRetriever(self.cfg, encoder).fingerprint()


class MilvusBM25Side:
    """BM25 alone on a hybrid collection's sparse field: what hybrid is judged on for weak context."""

    name = "bm25"

    def __init__(self, owner: MilvusRetriever) -> None:
        self._owner = owner

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k BM25 hits, best first, scored as the bm25 retriever scores them."""
        return self._owner._search_many([query], k, "bm25")[0]


def _diff(found: str | None, wanted: dict[str, str]) -> str:
    """The fingerprint keys that differ, as ``key: old → new``."""
    try:
        old = cast(dict[str, str], json.loads(found)) if found else {}
    except ValueError:
        old = {}
    if not isinstance(old, dict) or not old:
        return "no fingerprint recorded"
    keys = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
    return "; ".join(f"{k}: {old.get(k)} → {wanted.get(k)}" for k in keys) or "same settings"


def milvus_retriever(name: str, cfg: Config) -> MilvusRetriever:
    """The Milvus version of retriever ``name`` (bm25, embedding or hybrid), for store: milvus."""
    if name not in MODES:
        raise ConfigError(
            f"retriever {name!r} has no Milvus version; choose from {', '.join(MODES)}, "
            "or set retrieval.store: local"
        )
    if name == "hybrid" and cfg.retrieval.rerank:
        raise RetrieverUnavailable(
            "retrieval.rerank is true, but no cross-encoder reranker ships offline with this "
            "project; set retrieval.rerank: false in rag.yaml (or RAG__RETRIEVAL__RERANK=false)"
        )
    return MilvusRetriever(cfg, cast(Mode, name))


__all__ = [
    "MODES",
    "MilvusBM25Side",
    "MilvusRetriever",
    "chunk_pk",
    "display_uri",
    "milvus_retriever",
    "release",
]
