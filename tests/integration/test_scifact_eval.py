"""The functions behind `rag eval retrieval` and `rag bench retrieval`, end to end.

A tiny hand-made BEIR folder checks loading, the row format and the doc-level run; the @slow
tests score the real retrievers on SciFact (../shared/data/scifact, skipped when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.config import Config
from rag.errors import ConfigError, CorpusError
from rag.measure.eval.beir import eval_retrieval, load_beir, tune_hybrid
from rag.retrieval.base import Retriever
from rag.retrieval.bm25 import BM25Retriever
from tests.unit.retriever_contract import HashedTrigramRetriever

EVAL_KEYS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "qps", "build_s", "retriever"}
BENCH_KEYS = {"retriever", "chunks", "build_s", "p50_ms", "p95_ms", "peak_mb"}

DOCS = {
    "d1": ("Rollback", "Run the rollback script to restore the previous release."),
    "d2": ("Paging", "The pager rotates weekly between engineers on call."),
    "d3": ("Backups", "Nightly database backups are kept for thirty days."),
    "d4": ("Vault", "API keys are rotated every ninety days in the vault."),
}
QUERIES = {"q1": "restore the previous release", "q2": "database backups", "q3": "api keys"}


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) for i, (t, x) in DOCS.items()
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    queries = [json.dumps({"_id": i, "text": t}) for i, t in QUERIES.items()]
    queries.append(json.dumps({"_id": "q-train", "text": "pager"}))
    (tmp_path / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (tmp_path / "qrels").mkdir()
    rows = "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td3\t1\r\nq3\td4\t2\r\nq3\td9\t0\r\n"
    (tmp_path / "qrels" / "test.tsv").write_bytes(rows.encode())
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq-train\td2\t1\n")
    return tmp_path


def test_load_beir_reads_one_chunk_per_doc_and_the_splits_queries(beir: Path) -> None:
    corpus, queries, qrels = load_beir(beir, "test")
    assert [c.id for c in corpus] == ["d1", "d2", "d3", "d4"]
    assert corpus[0].title == "Rollback" and corpus[0].doc_id == "d1"
    assert set(queries) == {"q1", "q2", "q3"}  # q-train belongs to the other split
    assert qrels["q3"] == {"d4": 2, "d9": 0}


def test_load_beir_errors_say_what_to_pass(beir: Path) -> None:
    with pytest.raises(CorpusError, match="pass --data DIR"):
        load_beir(beir / "nope", "test")
    with pytest.raises(CorpusError, match="pass --split"):
        load_beir(beir, "dev")


def test_eval_rows_have_exactly_the_cli_keys(beir: Path) -> None:
    rows = eval_retrieval(beir, "test", ["bm25", "lexical"], Config())
    assert [r["retriever"] for r in rows] == ["bm25", "lexical"]
    for row in rows:
        assert set(row) == EVAL_KEYS
        assert row["qps"] > 0 and row["build_s"] >= 0
        assert 0 <= row["ndcg@10"] <= 1 and row["recall@10"] <= row["recall@100"]
    bm25 = rows[0]
    assert bm25["ndcg@10"] == pytest.approx(1.0) and bm25["mrr@10"] == pytest.approx(1.0)


def test_eval_maps_chunks_to_documents(beir: Path) -> None:
    class TwoChunksPerDoc(BM25Retriever):
        """Splits each doc in two chunks, so a doc can be hit twice and must count once."""

        def build(self, chunks):  # type: ignore[no-untyped-def]
            from dataclasses import replace

            halves = []
            for c in chunks:
                words = c.text.split()
                halves.append(replace(c, id=f"{c.id}#0", text=" ".join(words[:4])))
                halves.append(replace(c, id=f"{c.id}#1", text=" ".join(words[4:]), ordinal=1))
            super().build(halves)

    def factory(name: str, cfg: Config) -> Retriever:
        return TwoChunksPerDoc()

    (row,) = eval_retrieval(beir, "test", ["split-chunks"], Config(), build_factory=factory)
    assert row["retriever"] == "split-chunks"
    assert row["ndcg@10"] == pytest.approx(1.0) and row["recall@100"] == pytest.approx(1.0)


def test_eval_refuses_unknown_retrievers(beir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown retriever 'bm26'; choose from .*all"):
        eval_retrieval(beir, "test", ["bm26"], Config())


def test_tune_hybrid_scores_every_setting_on_one_pair_of_runs(beir: Path) -> None:
    def factory(name: str, cfg: Config) -> Retriever:
        return BM25Retriever() if name == "bm25" else HashedTrigramRetriever()

    rows = tune_hybrid(
        beir, "test", Config(), rrf_ks=(10, 60), alphas=(0.3, 0.7), build_factory=factory
    )
    assert len(rows) == 2 + 2 + 2
    assert {(r["method"], r["rrf_k"], r["alpha"]) for r in rows} >= {
        ("bm25", None, None),
        ("embedding", None, None),
        ("rrf", 60, None),
        ("minmax", None, 0.7),
    }
    ndcgs = [r["ndcg@10"] for r in rows]
    assert ndcgs == sorted(ndcgs, reverse=True)


# ---- bench ----


def test_bench_rows_have_exactly_the_cli_keys() -> None:
    from rag.measure.retrieval_bench import bench_retrieval

    rows = bench_retrieval(Config(), 300, ["bm25", "lexical"], queries=20, isolate=False)
    assert [r["retriever"] for r in rows] == ["bm25", "lexical"]
    for row in rows:
        assert set(row) == BENCH_KEYS and row["chunks"] == 300
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["build_s"] > 0 and row["peak_mb"] >= 0


def test_bench_runs_each_retriever_in_a_fresh_process() -> None:
    from rag.measure.retrieval_bench import bench_retrieval

    (row,) = bench_retrieval(Config(), 200, ["bm25"], queries=5)
    assert set(row) == BENCH_KEYS and row["retriever"] == "bm25"


@pytest.mark.parametrize("n", [0, 100_001])
def test_bench_refuses_corpus_sizes_out_of_range(n: int) -> None:
    from rag.measure.retrieval_bench import bench_retrieval

    with pytest.raises(ConfigError, match="--chunks must be between 1 and 100,000"):
        bench_retrieval(Config(), n, ["bm25"])


def test_synthetic_corpus_is_deterministic_and_zipf_like() -> None:
    from collections import Counter

    from rag.measure.retrieval_bench import STOPWORDS, synthetic_corpus, synthetic_queries

    first, again = synthetic_corpus(200), synthetic_corpus(200)
    assert first == again and len({c.id for c in first}) == 200
    counts = Counter(w for c in first for w in c.text.split())
    top = [w for w, _ in counts.most_common(3)]
    assert top[0] == "the" and set(top) <= set(STOPWORDS)
    assert sum(1 for n in counts.values() if n == 1) > len(counts) / 3  # a long tail
    queries = synthetic_queries(first, 10)
    assert queries == synthetic_queries(again, 10)
    assert all(3 <= len(q.split()) <= 6 and "the" not in q.split() for q in queries)


# ---- SciFact (slow) ----


@pytest.mark.slow
def test_bm25_on_scifact_test_reaches_the_published_ndcg(shared_data: Path) -> None:
    (row,) = eval_retrieval(shared_data, "test", ["bm25"], Config())
    assert row["ndcg@10"] >= 0.68, row
    assert row["recall@100"] > row["recall@10"] > row["ndcg@10"] - 0.2


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_embedding_and_hybrid_on_scifact_test(shared_data: Path) -> None:
    from rag.errors import RetrieverUnavailable
    from rag.retrieval.encoder import load_encoder

    try:
        load_encoder(Config())
    except RetrieverUnavailable as exc:
        pytest.skip(f"embedding model not built: {exc}")
    rows = {
        r["retriever"]: r
        for r in eval_retrieval(shared_data, "test", ["bm25", "embedding", "hybrid"], Config())
    }
    assert rows["embedding"]["ndcg@10"] >= 0.63, rows["embedding"]
    assert rows["hybrid"]["ndcg@10"] >= 0.72, rows["hybrid"]
    assert rows["hybrid"]["ndcg@10"] > max(rows["bm25"]["ndcg@10"], rows["embedding"]["ndcg@10"])
