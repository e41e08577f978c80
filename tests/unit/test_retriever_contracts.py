"""Every retriever against the shared contract in retriever_contract.py."""

from __future__ import annotations

import pytest

from rag.config import Config, HybridConfig
from rag.retrieval.base import Retriever
from rag.retrieval.bm25 import BM25Retriever
from rag.retrieval.hybrid import HybridRetriever
from tests.unit.retriever_contract import HashedTrigramRetriever, RetrieverContract


class TestBM25Contract(RetrieverContract):
    def make_retriever(self) -> Retriever:
        return BM25Retriever.from_config(Config())


class TestHybridRRFContract(RetrieverContract):
    def make_retriever(self) -> Retriever:
        return HybridRetriever(
            BM25Retriever(), HashedTrigramRetriever(), HybridConfig(method="rrf", rrf_k=60)
        )


class TestHybridMinMaxContract(RetrieverContract):
    def make_retriever(self) -> Retriever:
        return HybridRetriever(
            BM25Retriever(), HashedTrigramRetriever(), HybridConfig(method="minmax", alpha=0.5)
        )


def _real(name: str) -> Retriever:
    from rag.errors import RetrieverUnavailable
    from rag.retrieval import RETRIEVERS

    try:
        return RETRIEVERS[name](Config())
    except (RetrieverUnavailable, ImportError) as exc:
        pytest.skip(f"{name} retriever unavailable here: {exc}")


@pytest.mark.slow
class TestEmbeddingContract(RetrieverContract):
    def make_retriever(self) -> Retriever:
        return _real("embedding")


@pytest.mark.slow
class TestHybridRealContract(RetrieverContract):
    def make_retriever(self) -> Retriever:
        return _real("hybrid")
