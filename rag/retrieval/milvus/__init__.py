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

The package, one job per module: client.py (the shared client, retries), schema.py (rows and
index parameters), sync.py (what the collection holds, batched writes), search.py (requests,
scores, ties), state.py (the index folder's record) and retriever.py (MilvusRetriever).
"""

from rag.retrieval.milvus.client import display_uri, release, resolve_uri
from rag.retrieval.milvus.retriever import (
    MODES,
    MilvusBM25Side,
    MilvusRetriever,
    Mode,
    milvus_retriever,
)
from rag.retrieval.milvus.schema import SCHEMA_VERSION, chunk_pk

__all__ = [
    "MODES",
    "SCHEMA_VERSION",
    "MilvusBM25Side",
    "MilvusRetriever",
    "Mode",
    "chunk_pk",
    "display_uri",
    "milvus_retriever",
    "release",
    "resolve_uri",
]
