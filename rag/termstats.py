"""Corpus term statistics (stemmed content words and their IDF) for compression and sufficiency.

Both the context compressor and the context-sufficiency score need to know how much a
question's word says: "vpn" is rare and telling, "policy" is everywhere. Lucene's IDF over
the indexed chunks says it, with one analysis (lowercase, stopwords out, Snowball stems) for
every caller.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from rag.text import content_words
from rag.types import Chunk


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer: Snowball stemmers in C

    return Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """Stemmed content words of ``text``, in order, repeats kept."""
    words = content_words(text)
    return list(_stemmer().stemWords(words)) if words else []


def chunk_terms(chunk: Chunk) -> set[str]:
    """The distinct terms of what the model sees of a chunk: title, heading and text."""
    return set(terms(f"{chunk.title}\n{chunk.heading}\n{chunk.text}"))


class TermStats:
    """Document frequencies over a chunk set; ``idf`` is Lucene's, unseen terms rarest of all."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        df: Counter[str] = Counter()
        n = 0
        for chunk in chunks:
            df.update(chunk_terms(chunk))
            n += 1
        self.n = n
        self.df = df

    def idf(self, term: str) -> float:
        """ln(1 + (N - df + 0.5) / (df + 0.5)); a term no chunk holds gets df = 0."""
        df = self.df.get(term, 0)
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))

    def weights(self, words: Sequence[str]) -> dict[str, float]:
        """Each distinct term of ``words`` with its IDF."""
        return {t: self.idf(t) for t in dict.fromkeys(words)}


_SHARED: list[tuple[Sequence[Chunk], TermStats]] = []  # recent chunk lists and their statistics
_SHARED_MAX = 4  # one per open index (lexical, bm25, embedding, hybrid)


def stats_for(chunks: Sequence[Chunk]) -> TermStats:
    """The statistics of one chunk list (by identity), computed once and shared: the assistant
    (sufficiency, compression) and hybrid's title boost read the same index's IDF."""
    for seen, stats in _SHARED:
        if seen is chunks:
            return stats
    stats = TermStats(chunks)
    _SHARED.insert(0, (chunks, stats))
    del _SHARED[_SHARED_MAX:]
    return stats
