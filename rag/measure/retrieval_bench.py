"""`rag bench retrieval`: build time, query latency and peak memory on a synthetic corpus.

The corpus is generated, not read: a fixed seed draws each chunk's words from a Zipf-Mandelbrot
distribution over a vocabulary whose most frequent words are real English stopwords followed by
pronounceable made-up words, so term frequencies and posting-list lengths look like text and
BM25 has realistic work to do. Queries are 3-6 content words picked from a random chunk.

Each retriever runs in a fresh child process (spawn), so one's memory and caches cannot
flatter or burden the next. ``peak_mb`` is how far the child's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) rose from just before ``build`` to after the
last query: the index, the model and the scoring buffers, not the interpreter or the corpus.

The embedding retriever (alone or inside hybrid) gets a RandomFillEncoder: its matrix is
filled with random unit vectors instead of encoding the corpus (hours on a laptop CPU, and it
does not change search cost), while its queries are encoded for real, so p50/p95 include query
encoding. Its ``build_s`` is then the fill and hashing time, not an encoding time.
"""

from __future__ import annotations

import gc
import multiprocessing
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.config import Config
from rag.errors import ConfigError
from rag.retrieval.base import Retriever
from rag.retrieval.encoder import Encoder
from rag.stats import percentile
from rag.types import Chunk

MAX_CHUNKS = 100_000
SEED = 20240601
VOCAB_SIZE = 50_000
ZIPF_S = 1.07  # exponent of the Zipf-Mandelbrot law fitted to English text
ZIPF_Q = 2.7  # its rank offset
WORDS_PER_CHUNK = (80, 200)

STOPWORDS: tuple[str, ...] = (  # the Zipf head of English text
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their",
    "has", "would", "when", "if", "so", "no", "will", "can", "more", "other", "what", "its",
    "into", "than", "them", "only", "some", "could", "these", "may", "then", "do",
)  # fmt: skip
_ONSETS = ("b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_SYLLABLES = tuple(o + v for o in _ONSETS for v in _VOWELS)


def vocabulary(size: int = VOCAB_SIZE) -> list[str]:
    """Stopwords first (the Zipf head), then unique made-up words of two or more syllables."""
    words = list(STOPWORDS)
    n = len(_SYLLABLES)
    i = n  # start at two syllables
    while len(words) < size:
        parts, j = [], i
        while j:
            j, r = divmod(j, n)
            parts.append(_SYLLABLES[r])
        words.append("".join(reversed(parts)))
        i += 1
    return words


def synthetic_corpus(n_chunks: int, seed: int = SEED) -> list[Chunk]:
    """``n_chunks`` deterministic chunks, five per made-up document."""
    vocab = np.asarray(vocabulary(), dtype=object)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    weights = 1.0 / (ranks + ZIPF_Q) ** ZIPF_S
    cdf = np.cumsum(weights / weights.sum())
    rng = np.random.default_rng(seed)
    chunks: list[Chunk] = []
    low, high = WORDS_PER_CHUNK
    for i in range(n_chunks):
        n_words = int(rng.integers(low, high + 1))
        idx = np.searchsorted(cdf, rng.random(n_words), side="right")
        words = vocab[np.minimum(idx, len(vocab) - 1)]
        doc = f"synthetic/{i // 5:06d}.md"
        chunks.append(
            Chunk(
                id=f"{doc}#{i % 5}",
                doc_id=doc,
                path=doc,
                title=f"{words[0]} {words[1]}".title(),
                heading=f"Section {i % 5}",
                text=" ".join(words.tolist()),
                ordinal=i % 5,
            )
        )
    return chunks


def synthetic_queries(chunks: Sequence[Chunk], n: int, seed: int = SEED + 1) -> list[str]:
    """``n`` queries of 3-6 content words, each taken from one random chunk."""
    if not chunks:
        return ["nothing indexed"] * n
    rng = np.random.default_rng(seed)
    stop = set(STOPWORDS)
    queries = []
    for _ in range(n):
        words = [w for w in chunks[int(rng.integers(len(chunks)))].text.split() if w not in stop]
        size = min(int(rng.integers(3, 7)), len(words))
        picked = rng.choice(len(words), size=size, replace=False).tolist() if size else []
        queries.append(" ".join(words[j] for j in picked) or "empty")
    return queries


class RandomFillEncoder:
    """Random unit vectors while ``filling``, the real encoder after; same name, dims, variant.

    Handed to EmbeddingRetriever as its encoder, it fills the index without encoding the
    corpus, then encodes queries for real, so the timings include query encoding.
    """

    def __init__(self, real: Encoder, seed: int = SEED) -> None:
        self.real = real
        self.model_id = real.model_id
        self.dim = real.dim
        self.variant = real.variant
        self.max_seq_length = real.max_seq_length
        self.filling = True
        self._rng = np.random.default_rng(seed)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Random unit rows while filling, else the real encoder's vectors."""
        if not self.filling:
            return self.real.encode(texts)
        vectors = self._rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


def make_bench_retriever(name: str, cfg: Config) -> tuple[Retriever, RandomFillEncoder | None]:
    """The registry's retriever, except that an embedding side gets a RandomFillEncoder."""
    from rag.retrieval import RETRIEVERS

    if name not in RETRIEVERS:
        raise ConfigError(f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}")
    if name not in ("embedding", "hybrid"):
        from rag.retrieval import make_retriever

        return make_retriever(name, cfg), None
    from rag.retrieval.bm25 import BM25Retriever
    from rag.retrieval.embedding import EmbeddingRetriever
    from rag.retrieval.encoder import load_encoder
    from rag.retrieval.hybrid import HybridRetriever

    encoder = RandomFillEncoder(load_encoder(cfg))
    if cfg.retrieval.store == "milvus":
        from rag.retrieval.milvus import MilvusRetriever

        return MilvusRetriever(
            cfg, "embedding" if name == "embedding" else "hybrid", encoder=encoder
        ), encoder
    dense = EmbeddingRetriever(cfg, encoder=encoder)
    if name == "embedding":
        return dense, encoder
    return HybridRetriever(BM25Retriever.from_config(cfg), dense, cfg.retrieval.hybrid), encoder


def _build(retriever: Retriever, encoder: RandomFillEncoder | None, chunks: list[Chunk]) -> None:
    if encoder is not None:
        encoder.filling = True
    retriever.build(chunks)
    if encoder is not None:
        encoder.filling = False


def _max_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_one(cfg: Config, n_chunks: int, name: str, queries: int) -> dict[str, Any]:
    """Build ``name`` on the synthetic corpus in this process and time single searches."""
    chunks = synthetic_corpus(n_chunks)
    texts = synthetic_queries(chunks, queries)
    retriever, encoder = make_bench_retriever(name, cfg)
    # Warm up on a few chunks first, so imports and model sessions are neither timed nor
    # counted in peak_mb: what is left is the index, the scoring buffers and the build itself.
    _build(retriever, encoder, chunks[:10])
    retriever.search(texts[0], 10)
    gc.collect()
    before = _max_rss_mb()
    t0 = time.perf_counter()
    _build(retriever, encoder, chunks)
    build_s = time.perf_counter() - t0
    retriever.search(texts[0], 10)  # first query on the full index: caches, lazy arrays
    times = []
    for text in texts:
        start = time.perf_counter()
        retriever.search(text, 10)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "retriever": name,
        "chunks": n_chunks,
        "build_s": build_s,
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "peak_mb": max(_max_rss_mb() - before, 0.0),
    }


def bench_retrieval(
    cfg: Config, n_chunks: int, names: list[str], queries: int = 200, *, isolate: bool = True
) -> list[dict[str, Any]]:
    """One row per retriever: retriever, chunks, build_s, p50_ms, p95_ms, peak_mb.

    ``isolate`` runs each retriever in its own spawned process (the default, and the only
    way peak_mb means anything when several retrievers are benchmarked).
    """
    if not 1 <= n_chunks <= MAX_CHUNKS:
        raise ConfigError(f"--chunks must be between 1 and {MAX_CHUNKS:,}, got {n_chunks}")
    if queries < 1:
        raise ConfigError(f"queries must be at least 1, got {queries}")
    from rag.measure.eval.beir import resolve_names

    rows = []
    for name in resolve_names(names):
        if not isolate:
            rows.append(bench_one(cfg, n_chunks, name, queries))
            continue
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            rows.append(pool.submit(bench_one, cfg, n_chunks, name, queries).result())
    return rows
