"""What every retriever promises (rag.retrieval.base.Retriever), as one class to subclass.

A subclass defines ``make_retriever()`` returning a fresh, unbuilt retriever; the tests build it
on a small corpus themselves. ``HashedTrigramRetriever`` is a small but real dense retriever
(hashed character trigrams, cosine) that stands in for the embedding side of hybrid in fast tests.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.errors import IndexError_
from rag.retrieval.base import Retriever, check_k, rank_hits
from rag.types import Chunk, Hit


def chunk(cid: str, title: str, heading: str, text: str) -> Chunk:
    return Chunk(
        id=cid,
        doc_id=cid.split("#")[0],
        path=cid.split("#")[0],
        title=title,
        heading=heading,
        text=text,
        ordinal=0,
    )


CANARY = "A canary release sends a small share of live traffic to the new version first."

_ROWS = (
    ("runbook.md#rollback", "Deploy runbook", "Rollback",
     "To roll back a failed deployment, run the rollback script and confirm that the "
     "previous release is serving traffic again."),
    ("oncall.md#paging", "On-call", "Paging",
     "The pager rotates weekly. Escalate to the secondary engineer after fifteen minutes."),
    ("security.md#keys", "Security", "API keys",
     "Rotate API keys every ninety days and store them in the vault, never in the repository."),
    ("handbook.md#leave", "Handbook", "Leave",
     "Annual leave requests go through the HR portal at least two weeks in advance."),
    ("database.md#backups", "Database", "Backups",
     "Nightly backups of the Postgres database are kept for thirty days in cold storage."),
    ("network.md#vpn", "Network", "VPN", "Connect to the VPN before opening dashboards."),
    # the same passage under two ids: any retriever must order them by id
    ("glossary-b.md#canary", "Glossary", "Terms", CANARY),
    ("glossary-a.md#canary", "Glossary", "Terms", CANARY),
)  # fmt: skip
CORPUS: tuple[Chunk, ...] = tuple(chunk(*row) for row in _ROWS)


class RetrieverContract:
    """Behaviour every retriever shares; subclasses provide ``make_retriever``."""

    def make_retriever(self) -> Retriever:
        raise NotImplementedError

    @pytest.fixture
    def built(self) -> Retriever:
        retriever = self.make_retriever()
        retriever.build(CORPUS)
        return retriever

    def test_has_a_name(self, built: Retriever) -> None:
        assert isinstance(built.name, str) and built.name

    def test_relevant_chunk_comes_first(self, built: Retriever) -> None:
        hits = built.search("how do I roll back a failed deployment?", 3)
        assert hits[0].chunk.id == "runbook.md#rollback"

    def test_best_first_with_ranks_from_one(self, built: Retriever) -> None:
        hits = built.search("rotate the api keys in the vault", len(CORPUS))
        assert hits
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        assert len({h.chunk.id for h in hits}) == len(hits)

    @pytest.mark.parametrize("k", [1, 2, 3, len(CORPUS) + 5])
    def test_at_most_k(self, built: Retriever, k: int) -> None:
        hits = built.search("release traffic deployment backups", k)
        assert 1 <= len(hits) <= min(k, len(CORPUS))

    @pytest.mark.parametrize("k", [0, -1])
    def test_k_below_one_raises(self, built: Retriever, k: int) -> None:
        with pytest.raises(ValueError, match=f"k must be at least 1. Currently, k is {k}"):
            built.search("rollback", k)

    def test_unknown_words_do_not_crash(self, built: Retriever) -> None:
        hits = built.search("zqxjv flurbnik wompt", 3)
        assert isinstance(hits, list) and len(hits) <= 3

    @pytest.mark.parametrize("query", ["", "   ", "\n\t"])
    def test_empty_query_returns_nothing(self, built: Retriever, query: str) -> None:
        assert built.search(query, 5) == []

    def test_all_stopword_query_returns_nothing(self, built: Retriever) -> None:
        assert built.search("the of and to", 5) == []

    def test_empty_corpus_returns_nothing(self) -> None:
        retriever = self.make_retriever()
        retriever.build([])
        assert retriever.search("rollback", 5) == []
        many = getattr(retriever, "search_many", None)
        if many is not None:
            assert many(["rollback", ""], 5) == [[], []]

    def test_identical_chunks_come_out_in_id_order(self, built: Retriever) -> None:
        hits = built.search("canary release live traffic new version", 4)
        ids = [h.chunk.id for h in hits[:2]]
        assert ids == ["glossary-a.md#canary", "glossary-b.md#canary"]

    def test_equal_scores_are_in_id_order(self, built: Retriever) -> None:
        for query in ("canary release", "traffic", "rotate", "release traffic rollback"):
            hits = built.search(query, len(CORPUS))
            for a, b in itertools.pairwise(hits):
                if a.score == b.score:
                    assert a.chunk.id < b.chunk.id, (query, a, b)

    def test_results_do_not_depend_on_build_order(self, built: Retriever) -> None:
        other = self.make_retriever()
        other.build(list(reversed(CORPUS)))
        for query in ("canary release traffic", "rotate keys", "the secondary engineer"):
            assert _ranked(other.search(query, 5)) == _ranked(built.search(query, 5))

    def test_search_is_repeatable(self, built: Retriever) -> None:
        first = built.search("release traffic", 5)
        assert built.search("release traffic", 5) == first

    def test_rebuild_replaces_the_corpus(self, built: Retriever) -> None:
        built.build(CORPUS[:2])
        hits = built.search("api keys vault rollback pager", 5)
        assert {h.chunk.id for h in hits} <= {c.id for c in CORPUS[:2]}

    def test_search_many_matches_search(self, built: Retriever) -> None:
        many = getattr(built, "search_many", None)
        if many is None:
            pytest.skip(f"{built.name} has no search_many")
        queries = ["roll back", "", "canary release", "zqxjv", "nightly database backups"]
        assert _ranked_many(many(queries, 3)) == [_ranked(built.search(q, 3)) for q in queries]
        with pytest.raises(ValueError, match="k must be at least 1"):
            many(queries, 0)

    def test_fingerprint_is_strings_and_stable(self, built: Retriever) -> None:
        fp = built.fingerprint()
        assert fp and all(isinstance(k, str) and isinstance(v, str) for k, v in fp.items())
        assert self.make_retriever().fingerprint() == fp

    def test_save_then_load_gives_the_same_results(self, built: Retriever, tmp_path: Path) -> None:
        built.save(tmp_path)
        loaded = self.make_retriever()
        loaded.load(tmp_path, CORPUS)
        for query in ("roll back a deployment", "canary", "thirty days"):
            assert _ranked(loaded.search(query, 4)) == _ranked(built.search(query, 4))

    def test_load_refuses_other_chunks(self, built: Retriever, tmp_path: Path) -> None:
        built.save(tmp_path)
        with pytest.raises(IndexError_):
            self.make_retriever().load(tmp_path, CORPUS[1:])


def _ranked(hits: Sequence[Hit]) -> list[tuple[str, float]]:
    return [(h.chunk.id, round(h.score, 5)) for h in hits]


def _ranked_many(results: Sequence[Sequence[Hit]]) -> list[list[tuple[str, float]]]:
    return [_ranked(hits) for hits in results]


# ---- a real, small dense retriever for fast hybrid tests ----

_STOP = frozenset(
    {"a", "an", "and", "are", "at", "be", "by", "do", "for", "how", "i", "in", "is", "it"}
    | {"of", "on", "or", "the", "to", "with"}
)


def trigram_vectors(texts: Sequence[str], dim: int = 512) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Hashed character-trigram counts of content words, L2-normalised (zero rows stay zero)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        words = ["".join(ch for ch in w if ch.isalnum()) for w in text.lower().split()]
        for word in (w for w in words if w and w not in _STOP):
            padded = f"#{word}#"
            for i in range(len(padded) - 2):
                out[row, zlib.crc32(padded[i : i + 3].encode()) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class TrigramEncoder:
    """Hashed character trigrams as a 384-d encoder; records every text it encodes."""

    dim = 384
    max_seq_length = 256
    variant = "trigram"

    def __init__(self, model_id: str = "test/hashed-trigrams") -> None:
        self.model_id = model_id
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.encoded.extend(texts)
        return trigram_vectors(texts, self.dim)


class HashedTrigramRetriever:
    """Cosine over hashed character trigrams; deterministic, no model files."""

    name = "trigram"

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self._matrix = trigram_vectors([])
        self.reused_from: list[Path] = []

    def build(self, chunks: Sequence[Chunk]) -> None:
        self._chunks = list(chunks)
        self._matrix = trigram_vectors([f"{c.title} {c.heading} {c.text}" for c in chunks])

    def search(self, query: str, k: int) -> list[Hit]:
        check_k(k)
        q = trigram_vectors([query])[0]
        if not self._chunks or not q.any():
            return []
        return rank_hits(self._chunks, (self._matrix @ q).tolist(), k)

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self._matrix)
        (folder / "ids.json").write_text(json.dumps([c.id for c in self._chunks]))

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        if json.loads((folder / "ids.json").read_text()) != [c.id for c in chunks]:
            raise IndexError_(f"trigram index at {folder} was built for other chunks")
        self._chunks = list(chunks)
        self._matrix = np.load(folder / "vectors.npy")

    def reuse(self, folder: Path) -> int:
        self.reused_from.append(folder)
        path = folder / "vectors.npy"
        return int(np.load(path).shape[0]) if path.exists() else 0

    def fingerprint(self) -> dict[str, str]:
        return {"vectors": "hashed-trigram-512"}
