"""Retrieval strategies: one module each, one registry dict per store naming them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rag.config import RETRIEVER_NAMES, Config, RetrieverName, Store
from rag.errors import ConfigError
from rag.retrieval.base import Retriever, check_k, rank_hits

Factory = Callable[[Config], Retriever]


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


def _milvus(name: RetrieverName) -> Factory:
    def factory(cfg: Config) -> Retriever:
        from rag.retrieval.milvus import milvus_retriever

        return milvus_retriever(name, cfg)

    return factory


# Imports stay inside the factories so choosing `lexical` never loads onnxruntime or bm25s.
RETRIEVERS: dict[RetrieverName, Factory] = {
    "lexical": _lexical,
    "bm25": _bm25,
    "embedding": _embedding,
    "hybrid": _hybrid,
}

# retrieval.store: milvus keeps bm25, embedding and hybrid in Milvus collections; lexical has
# nothing to store and stays local.
STORES: dict[Store, Mapping[RetrieverName, Factory]] = {
    "local": RETRIEVERS,
    "milvus": {
        "lexical": _lexical,
        "bm25": _milvus("bm25"),
        "embedding": _milvus("embedding"),
        "hybrid": _milvus("hybrid"),
    },
}

for _store, _registry in STORES.items():  # checked once, at import: every store serves every name
    if tuple(_registry) != RETRIEVER_NAMES:
        raise ConfigError(f"store {_store}: {tuple(_registry)} is not {RETRIEVER_NAMES}")


def make_retriever(name: str, cfg: Config) -> Retriever:
    """A fresh retriever by registry name, from the configured store; unknown names list the choices."""
    registry = STORES[cfg.retrieval.store]
    if name not in registry:
        raise ConfigError(f"unknown retriever {name!r}; choose from {', '.join(registry)}")
    return registry[name](cfg)  # type: ignore[index]


__all__ = [
    "RETRIEVERS",
    "RETRIEVER_NAMES",
    "STORES",
    "Retriever",
    "check_k",
    "make_retriever",
    "rank_hits",
]
