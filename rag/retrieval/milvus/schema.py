"""The collection's schema: one row per chunk, BM25 terms and/or a dense vector, the index params."""

from __future__ import annotations

import hashlib
from typing import Any

from rag.config import BM25Config, MilvusConfig

SCHEMA_VERSION = "1"
FINGERPRINT_PROPERTY = "rag.fingerprint"
PK_CHARS = 32  # hex digits of sha256(chunk id): 128 bits
MAX_VARCHAR = 65535  # Milvus' VARCHAR limit, in bytes


def chunk_pk(chunk_id: str) -> str:
    """The primary key of a chunk's row: fixed length, whatever the chunk id."""
    return hashlib.sha256(chunk_id.encode("utf-8")).hexdigest()[:PK_CHARS]


def fit(text: str, limit: int = MAX_VARCHAR) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def both_forms(params: dict[str, Any]) -> dict[str, Any]:
    """Index parameters flat (as Milvus reads them) and under "params" (as milvus-lite 3.2 does).

    pymilvus 3 sends each parameter as its own key; milvus-lite 3.2.2 reads only a JSON "params"
    key and silently builds with its defaults otherwise (BM25 k1 1.5, b 0.75). Milvus merges
    a "params" key into the flat ones, so sending both is safe there.
    """
    return {**params, "params": dict(params)} if params else {}


def collection_schema(
    client: Any, settings: MilvusConfig, *, bm25: BM25Config | None, dim: int | None
) -> tuple[Any, Any]:
    """Schema and index parameters: BM25 terms when ``bm25`` is given, a vector when ``dim`` is."""
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=PK_CHARS)
    schema.add_field("chunk_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("text_hash", DataType.VARCHAR, max_length=64)
    index = client.prepare_index_params()
    if bm25 is not None:
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
        index.add_index(
            field_name="sparse",
            index_type="SPARSE_INVERTED_INDEX",
            metric_type="BM25",
            params=both_forms({"bm25_k1": bm25.k1, "bm25_b": bm25.b}),
        )
    if dim is not None:
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        params: dict[str, Any] = {}
        if settings.index_type == "HNSW":
            params = {
                "M": settings.hnsw_m,
                "efConstruction": settings.hnsw_ef_construction,
            }
        index.add_index(
            field_name="dense",
            index_type=settings.index_type,
            metric_type="IP",
            params=both_forms(params),
        )
    return schema, index
