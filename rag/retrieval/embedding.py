"""Dense retrieval: all-MiniLM-L6-v2 vectors and exact cosine with numpy.

Vectors are L2-normalised, so cosine is a dot product; at the corpus sizes this project
targets (thousands to tens of thousands of chunks) an exact matrix product beats any ANN
index on both recall and simplicity. Identical texts are encoded once and share one row,
so they score exactly the same and ties fall back to chunk id as the protocol promises.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rag.config import Config
from rag.errors import IndexError_, RetrieverUnavailable
from rag.models.artifacts import (
    EMBEDDING_DIM,
    EMBEDDING_MODEL_ID,
    embedding_model_dir,
    read_embedding_manifest,
)
from rag.retrieval.base import check_k
from rag.retrieval.encoder import BACKEND_VARIANTS, Encoder, load_encoder
from rag.text import chunk_text, content_words
from rag.types import Chunk, Hit

Matrix = NDArray[np.float32]
WEIGHTS_FILE = "model.safetensors"  # what the torch backend loads
QUERY_BLOCK = 256  # queries scored per matrix product: bounds memory at 256 x chunks floats


def has_content(query: str) -> bool:
    """False for an empty or all-stopword query, which the Retriever protocol answers with []."""
    return bool(content_words(query)) or any(c.isalnum() and not c.isascii() for c in query)


def text_key(text: str) -> str:
    """The sha256 that keys a vector to the exact text it was computed from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class EmbeddingRetriever:
    """Cosine similarity between query and chunk embeddings; any score is kept, best first."""

    name = "embedding"

    def __init__(self, cfg: Config | None = None, encoder: Encoder | None = None) -> None:
        self.cfg = cfg if cfg is not None else Config()
        self._encoder = encoder  # loaded on first use unless given
        self._given_encoder = encoder is not None
        self._chunks: list[Chunk] = []
        self._keys: list[str] = []  # text key per unique row
        self._unique: Matrix = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        self._row_of: NDArray[np.intp] = np.zeros(0, dtype=np.intp)  # chunk -> unique row
        self._cache: dict[str, Matrix] = {}  # text key -> vector, offered by reuse()
        self.last_encoded = 0

    @classmethod
    def from_config(cls, cfg: Config) -> EmbeddingRetriever:
        """A retriever for cfg; the encoder loads on first build or search, not here."""
        return cls(cfg)

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded now if needed (RetrieverUnavailable if the model is not built)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.cfg)
        return self._encoder

    # ---- build and search ----

    def build(self, chunks: Sequence[Chunk]) -> None:
        """Embed every chunk whose text has no vector yet (see reuse()); keep the rest."""
        texts = {text_key(t): t for t in map(chunk_text, chunks)}
        # Sorted, so the batches (and so the last bits of each vector) do not depend on order.
        todo = sorted(t for key, t in texts.items() if key not in self._cache)
        vectors = dict(self._cache)
        if todo:
            from tqdm import tqdm  # a progress bar on a terminal; silent in logs and tests

            step = 64
            with tqdm(
                total=len(todo), desc="embedding", unit="chunk", file=sys.stderr, disable=None
            ) as bar:
                for start in range(0, len(todo), step):
                    part = todo[start : start + step]
                    vectors.update(zip(map(text_key, part), self.encoder.encode(part), strict=True))
                    bar.update(len(part))
        self._install(chunks, vectors)
        self.last_encoded = len(todo)

    def _install(self, chunks: Sequence[Chunk], vectors: dict[str, Matrix]) -> None:
        """Hold ``chunks`` with one row per distinct text; ``vectors`` must cover every text."""
        row: dict[str, int] = {}
        rows = [row.setdefault(text_key(chunk_text(c)), len(row)) for c in chunks]
        self._keys = list(row)
        self._unique = (
            np.stack([vectors[key] for key in self._keys]).astype(np.float32, copy=False)
            if self._keys
            else self._empty()
        )
        self._row_of = np.array(rows, dtype=np.intp)
        self._chunks = list(chunks)
        # What this build holds is what the next build (e.g. after an edit) can reuse.
        self._cache = {key: self._unique[i] for i, key in enumerate(self._keys)}

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k chunks by cosine to the query, best first; [] for a query with no content."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``search`` for each query, encoding the queries as one batch."""
        check_k(k)
        results: list[list[Hit]] = [[] for _ in queries]
        live = [i for i, q in enumerate(queries) if has_content(q)]
        if not live or not self._chunks:
            return results
        for start in range(0, len(live), QUERY_BLOCK):
            block = live[start : start + QUERY_BLOCK]
            qvecs = self.encoder.encode([queries[i] for i in block])
            scores = qvecs @ self._unique.T  # (queries, unique texts): exact cosine
            for n, i in enumerate(block):
                results[i] = self._rank(scores[n][self._row_of], k)
        return results

    def _rank(self, scores: Matrix, k: int) -> list[Hit]:
        n = len(scores)
        if n > 4 * k:
            # Everything scoring at least the k-th best (ties included) is a candidate.
            cut = np.partition(scores, n - k)[n - k]
            candidates = np.flatnonzero(scores >= cut).tolist()
        else:
            candidates = list(range(n))
        chunks = self._chunks
        order = sorted(candidates, key=lambda i: (-scores[i], chunks[i].id))[:k]
        return [
            Hit(chunk=chunks[i], score=float(scores[i]), rank=r) for r, i in enumerate(order, 1)
        ]

    def _empty(self) -> Matrix:
        dim = self._encoder.dim if self._encoder is not None else EMBEDDING_DIM
        return np.zeros((0, dim), dtype=np.float32)

    # ---- persistence ----

    def save(self, folder: Path) -> None:
        """Write vectors.npy (one row per chunk), ids.json and meta.json into ``folder``."""
        vectors = self._unique[self._row_of] if len(self._row_of) else self._empty()
        np.save(folder / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        (folder / "ids.json").write_text(json.dumps([c.id for c in self._chunks]))
        meta = {
            "fingerprint": self.fingerprint(),
            "text_sha256": [self._keys[r] for r in self._row_of.tolist()],
        }
        (folder / "meta.json").write_text(json.dumps(meta))

    def _read(self, folder: Path) -> tuple[Matrix, list[str], list[str]]:
        """Saved vectors, ids and text keys, checked against each other and this fingerprint."""
        try:
            ids = json.loads((folder / "ids.json").read_text())
            meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexError_(
                f"embedding index in {folder} is missing or unreadable ({exc}); "
                "rebuild it with `rag index`"
            ) from None
        keys = meta.get("text_sha256")
        fingerprint = self.fingerprint()
        if meta.get("fingerprint") != fingerprint:
            raise IndexError_(
                f"embedding index in {folder} was built with {meta.get('fingerprint')}, "
                f"not {fingerprint}; rebuild it with `rag index`"
            )
        dim = int(fingerprint["dim"])
        if (
            not isinstance(ids, list)
            or not isinstance(keys, list)
            or vectors.dtype != np.float32
            or vectors.shape != (len(ids), dim)
            or len(keys) != len(ids)
        ):
            raise IndexError_(
                f"embedding index in {folder} is inconsistent: vectors {vectors.shape} "
                f"{vectors.dtype}, {len(ids)} ids, expected ({len(ids)}, {dim}) float32; "
                "rebuild it with `rag index`"
            )
        return vectors, [str(i) for i in ids], [str(k) for k in keys]

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Restore saved vectors; IndexError_ if they were built for other chunks or texts."""
        vectors, ids, keys = self._read(folder)
        if ids != [c.id for c in chunks]:
            raise IndexError_(
                f"embedding index in {folder} has {len(ids)} chunks that do not match the "
                f"{len(chunks)} current ones; rebuild it with `rag index`"
            )
        if keys != [text_key(chunk_text(c)) for c in chunks]:
            raise IndexError_(
                f"embedding index in {folder} was built from other chunk texts; "
                "rebuild it with `rag index`"
            )
        self._install(chunks, dict(zip(keys, vectors, strict=True)))
        self.last_encoded = 0

    def reuse(self, folder: Path) -> int:
        """Offer vectors saved in ``folder`` to the next build(); returns how many were loaded."""
        if not (folder / "vectors.npy").exists():
            return 0
        try:
            vectors, _, keys = self._read(folder)
        except IndexError_:
            return 0  # other model or variant: nothing there is reusable
        self._cache = dict(zip(keys, vectors, strict=True))
        return len(self._cache)

    def fingerprint(self) -> dict[str, str]:
        """Model, variant, weights, dims and runtime: a change means re-embedding everything."""
        return embedding_fingerprint(self.cfg, self._encoder if self._given_encoder else None)


def embedding_fingerprint(cfg: Config, encoder: Encoder | None = None) -> dict[str, str]:
    """What stored vectors depend on: model, variant, weights, dims and runtime."""
    emb = cfg.retrieval.embedding
    if encoder is not None:
        model, variant = encoder.model_id, encoder.variant
        dim, seq = encoder.dim, encoder.max_seq_length
    else:
        model, dim, seq = EMBEDDING_MODEL_ID, EMBEDDING_DIM, emb.max_seq_length
        variant = BACKEND_VARIANTS.get(emb.backend, emb.backend)
    runtime = "torch" if variant == "torch" else "onnxruntime"
    return {
        "model": model,
        "variant": variant,
        "weights": _weights(cfg, variant),
        "dim": str(dim),
        "max_seq_length": str(seq),
        runtime: _version(runtime),
    }


def _weights(cfg: Config, variant: str) -> str:
    """Short sha256 of the weights file a variant runs, as recorded by `rag models build`."""
    try:
        manifest = read_embedding_manifest(embedding_model_dir(cfg.data_dir))
    except RetrieverUnavailable:
        return "not built"
    rel = WEIGHTS_FILE if variant == "torch" else manifest.variants.get(variant, "")
    return str(manifest.files.get(rel, {}).get("sha256", "unknown"))[:16]
