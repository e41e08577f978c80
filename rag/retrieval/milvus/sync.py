"""Keeping a collection in step with the chunks: what it holds, and writes in batches."""

from __future__ import annotations

import json
from typing import Any

from rag.retrieval.milvus.client import Connection
from rag.retrieval.milvus.schema import FINGERPRINT_PROPERTY

SCAN_BATCH = 4096  # rows per page when reading the ids back


def recorded_fingerprint(conn: Connection, collection: str) -> str | None:
    """The fingerprint the collection was built with, or None if there is no collection."""
    name, timeout = collection, conn.settings.timeout_s
    if not conn.call("has_collection", lambda c: c.has_collection(name, timeout=timeout)):
        return None
    info = conn.call("describe_collection", lambda c: c.describe_collection(name, timeout=timeout))
    return str(dict(info.get("properties") or {}).get(FINGERPRINT_PROPERTY, "{}"))


def ensure_loaded(conn: Connection, collection: str) -> None:
    """Load the collection into memory unless it is loaded."""
    name, timeout = collection, conn.settings.timeout_s
    state = conn.call("get_load_state", lambda c: c.get_load_state(name, timeout=timeout))
    if "NotLoad" in str(state.get("state")):
        conn.call("load_collection", lambda c: c.load_collection(name, timeout=timeout))


def stored_rows(conn: Connection, collection: str) -> dict[str, str]:
    """pk -> text hash of every row in the collection (read with strong consistency)."""

    def scan(client: Any) -> dict[str, str]:
        rows: dict[str, str] = {}
        it = client.query_iterator(
            collection,
            batch_size=SCAN_BATCH,
            output_fields=["text_hash"],
            timeout=conn.settings.timeout_s,
            consistency_level="Strong",
        )
        try:
            while batch := it.next():
                rows.update((str(r["id"]), str(r["text_hash"])) for r in batch)
        finally:
            it.close()
        return rows

    return conn.call("reading the stored ids", scan)


def delete_rows(conn: Connection, collection: str, pks: list[str]) -> None:
    """Delete rows by primary key."""
    timeout = conn.settings.timeout_s
    conn.call("delete", lambda c: c.delete(collection, ids=pks, timeout=timeout))


def upsert_rows(conn: Connection, collection: str, rows: list[dict[str, Any]]) -> None:
    """Write rows; upsert, not insert: a retried batch must not leave duplicate primary keys."""
    timeout = conn.settings.timeout_s
    conn.call("upsert", lambda c: c.upsert(collection, rows, timeout=timeout))


def flush(conn: Connection, collection: str) -> None:
    """Seal what was written: milvus-lite rebuilds the BM25 index of unflushed rows per search."""
    timeout = conn.settings.timeout_s
    conn.call("flush", lambda c: c.flush(collection, timeout=timeout))


def drop(conn: Connection, collection: str) -> None:
    """Drop the collection."""
    timeout = conn.settings.timeout_s
    conn.call("drop_collection", lambda c: c.drop_collection(collection, timeout=timeout))


def fingerprint_json(fingerprint: dict[str, str]) -> str:
    """The fingerprint as the collection property records it."""
    return json.dumps(fingerprint, sort_keys=True)
