"""Optional retriever capabilities are declared by protocol, and each registry entry has its set."""

from pathlib import Path

import pytest

from rag.config import RETRIEVER_NAMES, Config, RetrievalConfig
from rag.retrieval import STORES, make_retriever
from rag.retrieval.base import (
    BatchSearch,
    CountsEncoded,
    HasSparseSide,
    ReportsProgress,
    Resettable,
    ReusesVectors,
)

CAPABILITIES = (
    BatchSearch,
    CountsEncoded,
    HasSparseSide,
    ReportsProgress,
    Resettable,
    ReusesVectors,
)

LOCAL = {
    "lexical": set(),
    "bm25": {BatchSearch},
    "embedding": {BatchSearch, CountsEncoded, ReusesVectors},
    "hybrid": {BatchSearch, CountsEncoded, ReusesVectors, HasSparseSide},
}


def test_every_store_registers_every_retriever_name() -> None:
    assert {store: tuple(names) for store, names in STORES.items()} == {
        "local": RETRIEVER_NAMES,
        "milvus": RETRIEVER_NAMES,
    }


@pytest.mark.parametrize("name", RETRIEVER_NAMES)
def test_local_retrievers_declare_their_capabilities(name: str, tmp_path: Path) -> None:
    retriever = make_retriever(name, Config(data_dir=tmp_path))
    assert {c for c in CAPABILITIES if isinstance(retriever, c)} == LOCAL[name]


@pytest.mark.parametrize("name", ["bm25", "embedding", "hybrid"])
def test_milvus_retrievers_come_from_the_registry(name: str, tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    cfg = Config(data_dir=tmp_path, retrieval=RetrievalConfig(store="milvus"))
    retriever = make_retriever(name, cfg)
    assert type(retriever).__name__ == "MilvusRetriever"
    assert {c for c in CAPABILITIES if isinstance(retriever, c)} == {
        BatchSearch,
        CountsEncoded,
        HasSparseSide,
        ReportsProgress,
        Resettable,
    }
    assert isinstance(retriever, HasSparseSide)
    assert (retriever.sparse is not None) == (name == "hybrid")
