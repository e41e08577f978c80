"""Naive word-overlap scoring (the workshop sample's idea), made sound.

Whole-word tokens, lowercased, stopwords removed; the score is the cosine of the binary
term sets, |Q ∩ D| / sqrt(|Q| · |D|), so long chunks do not win by size alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rag.config import Config
from rag.errors import IndexError_
from rag.retrieval.base import check_k, rank_hits
from rag.text import chunk_text, content_words
from rag.types import Chunk, Hit


class LexicalRetriever:
    """Zero-dependency baseline; builds in milliseconds, so nothing is persisted but ids."""

    name = "lexical"

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self._postings: dict[str, list[int]] = {}
        self._sizes: list[int] = []

    @classmethod
    def from_config(cls, cfg: Config) -> LexicalRetriever:
        return cls()

    def build(self, chunks: Sequence[Chunk]) -> None:
        self._chunks = list(chunks)
        self._postings = {}
        self._sizes = []
        for i, chunk in enumerate(self._chunks):
            terms = set(content_words(chunk_text(chunk)))
            self._sizes.append(len(terms))
            for term in terms:
                self._postings.setdefault(term, []).append(i)

    def search(self, query: str, k: int) -> list[Hit]:
        check_k(k)
        terms = set(content_words(query))
        if not terms or not self._chunks:
            return []
        overlap = [0] * len(self._chunks)
        for term in terms:
            for i in self._postings.get(term, ()):
                overlap[i] += 1
        scores = [
            o / math.sqrt(len(terms) * self._sizes[i]) if o else 0.0 for i, o in enumerate(overlap)
        ]
        return rank_hits(self._chunks, scores, k)

    def save(self, folder: Path) -> None:
        (folder / "ids.json").write_text(json.dumps([c.id for c in self._chunks]))

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        ids = json.loads((folder / "ids.json").read_text())
        if ids != [c.id for c in chunks]:
            raise IndexError_("lexical index does not match the chunks; rebuild with `rag index`")
        self.build(chunks)

    def fingerprint(self) -> dict[str, str]:
        return {"scoring": "binary-cosine-v1"}
