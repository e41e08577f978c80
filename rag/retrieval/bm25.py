"""BM25 on bm25s: precomputed Lucene scores in a sparse matrix, English stopwords, Snowball stems.

bm25s scores a query by summing, per query token, one column of a document x token matrix whose
entries were computed at build time, so a search is a few array slices instead of a pass over
every document. Scoring is Lucene's: ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` and
``tf / (tf + k1 * (1 - b + b * len / avglen))``. The IDF stays positive for terms in more than
half the documents, unlike rank-bm25's Okapi IDF (negative there, floored to 0.25 x the mean
IDF), which is the only difference in ranking between the two (tests/unit/test_bm25.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.config import BM25Config, Config
from rag.errors import IndexError_
from rag.retrieval.base import check_k
from rag.text import chunk_text
from rag.types import Chunk, Hit

IDS_FILE = "chunk_ids.json"

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.intp]


class Analyzer:
    """BM25's text analysis (lowercase, English stopwords, Snowball stems), shared with Milvus."""

    def __init__(self, config: BM25Config) -> None:
        self.config = config
        self._stemmer: Any = None

    def _stemmer_or_none(self) -> Any:
        if self.config.stemming and self._stemmer is None:
            import Stemmer  # PyStemmer: Snowball stemmers in C

            self._stemmer = Stemmer.Stemmer("english")
        return self._stemmer

    def tokenize(self, texts: list[str], *, ids: bool) -> Any:
        """bm25s tokens of ``texts``: ids and vocabulary, or lists of terms."""
        import bm25s

        return bm25s.tokenize(
            texts,
            stopwords="en" if self.config.stopwords else None,
            stemmer=self._stemmer_or_none(),
            return_ids=ids,
            show_progress=False,
        )

    def analyze(self, text: str) -> list[str]:
        """The terms a text is indexed or searched as (lowercased, stopwords out, stemmed)."""
        terms: list[list[str]] = self.tokenize([text], ids=False)
        return terms[0]


def scoring_fingerprint(config: BM25Config) -> dict[str, str]:
    """What BM25 scores depend on: bm25s and PyStemmer versions, k1, b and the analysis."""
    return {
        "bm25s": metadata.version("bm25s"),
        "pystemmer": metadata.version("PyStemmer") if config.stemming else "off",
        "k1": repr(config.k1),
        "b": repr(config.b),
        "stemming": "english" if config.stemming else "off",
        "stopwords": "en" if config.stopwords else "off",
    }


def id_order(chunks: Sequence[Chunk]) -> IntArray:
    """Each chunk's position in chunk-id order, so ties can be broken by id with integer sorts."""
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].id)
    ranks = np.empty(len(chunks), dtype=np.intp)
    ranks[np.asarray(order, dtype=np.intp)] = np.arange(len(chunks), dtype=np.intp)
    return ranks


def top_k_indices(scores: FloatArray, tiebreak: IntArray, k: int) -> IntArray:
    """Indices of the best k positive scores, best first, ties by ``tiebreak`` (as rank_hits)."""
    pos = np.flatnonzero(scores > 0)
    if pos.size > k:
        kept = scores[pos]
        kth = np.partition(kept, pos.size - k)[pos.size - k]
        pos = pos[kept >= kth]  # keeps every tie at the boundary so the id order decides
    order = np.lexsort((tiebreak[pos], -scores[pos]))[:k]
    return pos[order]


class BM25Retriever:
    """Lucene BM25 over ``title + heading + text`` with bm25s; k1, b and analysis from config."""

    name = "bm25"

    def __init__(self, config: BM25Config | None = None) -> None:
        self.config = config if config is not None else BM25Config()
        self._chunks: list[Chunk] = []
        self._index: Any = None  # bm25s.BM25, or None when the corpus has no tokens
        self._tiebreak: IntArray = np.zeros(0, dtype=np.intp)
        self.analyzer = Analyzer(self.config)

    @classmethod
    def from_config(cls, cfg: Config) -> BM25Retriever:
        """A retriever tuned by ``cfg.retrieval.bm25``."""
        return cls(cfg.retrieval.bm25)

    def analyze(self, text: str) -> list[str]:
        """The terms a text is indexed or searched as (lowercased, stopwords out, stemmed)."""
        return self.analyzer.analyze(text)

    # ---- build / search ----

    def build(self, chunks: Sequence[Chunk]) -> None:
        """Index ``chunks``; an empty corpus (or one with no terms at all) searches to []."""
        import bm25s

        self._chunks = list(chunks)
        self._tiebreak = id_order(self._chunks)
        self._index = None
        if not self._chunks:
            return
        tokens = self.analyzer.tokenize([chunk_text(c) for c in self._chunks], ids=True)
        if not tokens.vocab:
            return
        index = bm25s.BM25(k1=self.config.k1, b=self.config.b, method="lucene")
        index.index(tokens, show_progress=False)
        self._index = index

    def _scores(self, terms: list[str]) -> FloatArray | None:
        vocab: dict[str, int] = self._index.vocab_dict
        token_ids = [vocab[t] for t in terms if t and t in vocab]
        if not token_ids:
            return None
        scores: FloatArray = self._index.get_scores_from_ids(token_ids)
        return scores

    def _hits(self, terms: list[str], k: int) -> list[Hit]:
        scores = self._scores(terms)
        if scores is None:
            return []
        best = top_k_indices(scores, self._tiebreak, k)
        chunks = self._chunks
        # tolist() once: indexing numpy scalars one by one costs more than the scoring
        pairs = zip(best.tolist(), scores[best].tolist(), strict=True)
        return [Hit(chunk=chunks[i], score=s, rank=r) for r, (i, s) in enumerate(pairs, 1)]

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k hits with positive scores, best first, ties by chunk id."""
        check_k(k)
        if self._index is None or not query.strip():
            return []
        return self._hits(self.analyze(query), k)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``search`` for each query, tokenizing them in one batch."""
        check_k(k)
        if self._index is None or not queries:
            return [[] for _ in queries]
        batches: list[list[str]] = self.analyzer.tokenize(list(queries), ids=False)
        return [self._hits(terms, k) for terms in batches]

    # ---- persistence ----

    def fingerprint(self) -> dict[str, str]:
        """What the saved index depends on: bm25s and PyStemmer versions, k1, b, analysis."""
        return {"retriever": self.name, "method": "lucene", **scoring_fingerprint(self.config)}

    def save(self, folder: Path) -> None:
        """Write bm25s's arrays and vocabulary plus the chunk ids into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        if self._index is not None:
            self._index.save(str(folder), show_progress=False)
        meta = {
            "chunk_ids": [c.id for c in self._chunks],
            "has_index": self._index is not None,
            "fingerprint": self.fingerprint(),
        }
        (folder / IDS_FILE).write_text(json.dumps(meta), encoding="utf-8")

    def load(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Restore a saved index; raises IndexError_ if it is missing or made for other chunks."""
        import bm25s

        meta_path = folder / IDS_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexError_(
                f"BM25 index at {folder} is missing or unreadable ({exc}); "
                "run `rag index` to rebuild it"
            ) from None
        saved_ids: list[str] = meta.get("chunk_ids", [])
        ids = [c.id for c in chunks]
        if saved_ids != ids:
            first = next(
                (i for i, (a, b) in enumerate(zip(saved_ids, ids, strict=False)) if a != b),
                min(len(saved_ids), len(ids)),
            )
            saved = saved_ids[first] if first < len(saved_ids) else None
            given = ids[first] if first < len(ids) else None
            raise IndexError_(
                f"BM25 index at {folder} was built for other chunks ({len(saved_ids)} saved, "
                f"{len(ids)} given; at position {first} saved {saved!r}, given {given!r}); "
                "run `rag index` to rebuild it"
            )
        if meta.get("fingerprint") != self.fingerprint():
            raise IndexError_(
                f"BM25 index at {folder} was built with {meta.get('fingerprint')}, "
                f"not {self.fingerprint()}; run `rag index` to rebuild it"
            )
        index = None
        if meta.get("has_index"):
            try:
                index = bm25s.BM25.load(str(folder), show_progress=False)
            except (OSError, ValueError, KeyError) as exc:
                raise IndexError_(
                    f"BM25 index at {folder} is corrupt ({exc}); run `rag index` to rebuild it"
                ) from None
            if int(index.scores["num_docs"]) != len(ids):
                raise IndexError_(
                    f"BM25 index at {folder} holds {index.scores['num_docs']} documents for "
                    f"{len(ids)} chunk ids; run `rag index` to rebuild it"
                )
        self._chunks = list(chunks)
        self._tiebreak = id_order(self._chunks)
        self._index = index
