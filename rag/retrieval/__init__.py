"""Retrieval strategies: one module each, one registry dict naming them."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from rag.config import Config, RetrieverName
from rag.errors import ConfigError
from rag.retrieval.base import Retriever, check_k, rank_hits


def _lexical(cfg: Config) -> Retriever:
    from rag.retrieval.lexical import LexicalRetriever

    return LexicalRetriever.from_config(cfg)


def _bm25(cfg: Config) -> Retriever:
    from rag.retrieval.bm25 import BM25Retriever

    return BM25Retriever.from_config(cfg)


def _embedding(cfg: Config) -> Retriever:
    from rag.retrieval.embedding import EmbeddingRetriever

    return EmbeddingRetriever.from_config(cfg)


def _hybrid(cfg: Config) -> Retriever:
    from rag.retrieval.hybrid import HybridRetriever

    return HybridRetriever.from_config(cfg)


# Imports stay inside the factories so choosing `lexical` never loads onnxruntime or bm25s.
RETRIEVERS: dict[str, Callable[[Config], Retriever]] = {
    "lexical": _lexical,
    "bm25": _bm25,
    "embedding": _embedding,
    "hybrid": _hybrid,
}

RETRIEVER_NAMES: tuple[str, ...] = get_args(RetrieverName)


def make_retriever(name: str, cfg: Config) -> Retriever:
    """A fresh retriever by registry name; unknown names list the choices."""
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}"
        ) from None
    if cfg.retrieval.store == "milvus" and name != "lexical":
        from rag.retrieval.milvus import milvus_retriever

        return milvus_retriever(name, cfg)
    return factory(cfg)


__all__ = ["RETRIEVERS", "RETRIEVER_NAMES", "Retriever", "check_k", "make_retriever", "rank_hits"]
