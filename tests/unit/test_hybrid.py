"""Fusion arithmetic, tie-breaks, the rerank seam and the composition of the hybrid retriever."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import HybridConfig, load_config
from rag.errors import ConfigError
from rag.retrieval.bm25 import BM25Retriever
from rag.retrieval.hybrid import HybridRetriever, fuse
from rag.types import Chunk, Hit
from tests.unit.retriever_contract import CORPUS, HashedTrigramRetriever, chunk


def c(cid: str) -> Chunk:
    return Chunk(id=cid, doc_id=cid, path=cid, title="", heading="", text=cid, ordinal=0)


def ranked(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(chunk=c(cid), score=s, rank=r) for r, (cid, s) in enumerate(pairs, 1)]


def scored(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.chunk.id, round(h.score, 10)) for h in hits]


SPARSE = ranked(("A", 10.0), ("B", 6.0), ("C", 2.0))
DENSE = ranked(("C", 0.9), ("D", 0.5))


def test_rrf_sums_reciprocal_ranks() -> None:
    hits = fuse(SPARSE, DENSE, HybridConfig(method="rrf", rrf_k=60), 10)
    assert scored(hits) == [
        ("C", round(1 / 63 + 1 / 61, 10)),
        ("A", round(1 / 61, 10)),
        ("B", round(1 / 62, 10)),  # B and D tie at 1/62 with the same best rank: by id
        ("D", round(1 / 62, 10)),
    ]
    assert [h.rank for h in hits] == [1, 2, 3, 4]


def test_rrf_ties_go_to_the_better_best_rank_before_the_id() -> None:
    # rrf_k=1: "z" at rank 1 in one list scores 1/2; "w" at rank 3 in both scores 1/4 + 1/4
    sparse = ranked(("z", 9.0), ("x", 8.0), ("w", 7.0))
    dense = ranked(("y", 0.9), ("v", 0.8), ("w", 0.7))
    hits = fuse(sparse, dense, HybridConfig(method="rrf", rrf_k=1), 10)
    assert hits[0].score == hits[2].score == 0.5
    assert [h.chunk.id for h in hits[:3]] == ["y", "z", "w"]


def test_minmax_weights_normalised_scores() -> None:
    hits = fuse(SPARSE, DENSE, HybridConfig(method="minmax", alpha=0.4), 10)
    # sparse A=1, B=.5, C=0; dense C=1, D=0; missing counts 0; score = .4 dense + .6 sparse
    assert scored(hits) == [("A", 0.6), ("C", 0.4), ("B", 0.3), ("D", 0.0)]


@pytest.mark.parametrize(("alpha", "first"), [(0.0, "A"), (1.0, "C")])
def test_minmax_alpha_is_the_weight_on_dense(alpha: float, first: str) -> None:
    assert fuse(SPARSE, DENSE, HybridConfig(method="minmax", alpha=alpha), 1)[0].chunk.id == first


def test_minmax_list_of_equal_scores_counts_as_all_best() -> None:
    hits = fuse(ranked(("A", 3.0), ("B", 3.0)), [], HybridConfig(method="minmax", alpha=0.5), 5)
    assert scored(hits) == [("A", 0.5), ("B", 0.5)]


def test_minmax_ties_by_best_rank_then_id() -> None:
    # alpha .5: A (1, absent) and C (0, 1) both score .5 with best rank 1: by id
    hits = fuse(SPARSE, DENSE, HybridConfig(method="minmax", alpha=0.5), 2)
    assert scored(hits) == [("A", 0.5), ("C", 0.5)]


@pytest.mark.parametrize("method", ["rrf", "minmax"])
def test_fuse_cuts_at_k_and_checks_it(method: str) -> None:
    config = HybridConfig(method=method)
    assert len(fuse(SPARSE, DENSE, config, 2)) == 2
    assert fuse([], [], config, 3) == []
    with pytest.raises(ValueError, match="k must be at least 1"):
        fuse(SPARSE, DENSE, config, 0)


def hybrid(**overrides: object) -> HybridRetriever:
    retriever = HybridRetriever(
        BM25Retriever(), HashedTrigramRetriever(), HybridConfig.model_validate(overrides)
    )
    retriever.build(CORPUS)
    return retriever


def test_search_fuses_each_sides_candidates() -> None:
    retriever = hybrid(method="rrf", rrf_k=60, candidates=3)
    query = "rotate keys in the vault"
    sparse = retriever.sparse.search(query, 3)
    dense = retriever.dense.search(query, 3)
    expected = fuse(sparse, dense, retriever.config, 2)
    assert retriever.search(query, 2) == expected
    assert retriever.search(query, 2)[0].chunk.id == "security.md#keys"


def test_k_above_candidates_asks_each_side_for_k() -> None:
    retriever = hybrid(candidates=1)
    assert len(retriever.search("release traffic rollback database", 4)) == 4


def test_saves_each_side_in_its_subfolder(tmp_path: Path) -> None:
    retriever = hybrid()
    retriever.save(tmp_path)
    assert (tmp_path / "bm25" / "chunk_ids.json").exists()
    assert (tmp_path / "embedding" / "vectors.npy").exists()
    loaded = HybridRetriever(BM25Retriever(), HashedTrigramRetriever())
    loaded.load(tmp_path, CORPUS)
    assert loaded.search("canary", 3) == retriever.search("canary", 3)


def test_reuse_is_forwarded_to_the_embedding_side(tmp_path: Path) -> None:
    hybrid().save(tmp_path)
    dense = HashedTrigramRetriever()
    fresh = HybridRetriever(BM25Retriever(), dense)
    assert fresh.reuse(tmp_path) == len(CORPUS)
    assert dense.reused_from == [tmp_path / "embedding"]


def test_reuse_without_a_dense_reuse_is_zero(tmp_path: Path) -> None:
    assert HybridRetriever(BM25Retriever(), BM25Retriever()).reuse(tmp_path) == 0


def test_fingerprint_merges_both_sides() -> None:
    fp = hybrid().fingerprint()
    assert fp["retriever"] == "hybrid"
    assert fp["bm25.k1"] == "1.5"
    assert fp["embedding.vectors"] == "hashed-trigram-512"


class Reverse:
    """A reranker that reverses what it is given and records the pool size."""

    def __init__(self) -> None:
        self.pools: list[int] = []

    def rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        self.pools.append(len(hits))
        return [Hit(h.chunk, h.score, r) for r, h in enumerate(reversed(hits), 1)][:k]


def test_a_reranker_reorders_the_fused_pool() -> None:
    reranker = Reverse()
    retriever = HybridRetriever(
        BM25Retriever(), HashedTrigramRetriever(), HybridConfig(candidates=5), reranker
    )
    retriever.build(CORPUS)
    plain = HybridRetriever(BM25Retriever(), HashedTrigramRetriever(), HybridConfig(candidates=5))
    plain.build(CORPUS)
    pool = plain.search("release traffic rollback", 5)
    got = retriever.search("release traffic rollback", 2)
    assert [h.chunk.id for h in got] == [h.chunk.id for h in reversed(pool)][:2]
    assert reranker.pools == [len(pool)]


def test_there_is_no_rerank_setting_to_turn_on() -> None:
    """No cross-encoder ships offline, so rag.yaml offers no switch that could only be refused."""
    with pytest.raises(ConfigError, match=r"retrieval\.rerank: Extra inputs are not permitted"):
        load_config(None, environ={"RAG__RETRIEVAL__RERANK": "true"})


# ---- title boost ----

ONCALL = chunk(
    "oncall.txt#0",
    "ON-CALL ESCALATION AND CONTACTS",
    "",
    "Escalation steps: page the platform primary; if there is no answer, page the secondary.",
)
AUTH = chunk(
    "auth.md#3",
    "Auth service runbook",
    "Escalation",
    "Escalation: the on-call engineer escalates to the auth team lead; escalation policy "
    "for auth outages follows the on-call escalation policy.",
)
OTHERS = [
    chunk(f"doc{i}.md#0", f"Guide {i}", "", f"Filler {i}: the travel policy covers laptops.")
    for i in range(6)
]


def boosted(boost: float) -> HybridRetriever:
    retriever = HybridRetriever(
        BM25Retriever(), HashedTrigramRetriever(), HybridConfig(title_boost=boost)
    )
    retriever.build([ONCALL, AUTH, *OTHERS])
    return retriever


def test_title_shares_are_the_query_idf_held_by_the_title() -> None:
    from rag.retrieval.hybrid import title_shares
    from rag.termstats import TermStats, terms

    stats = TermStats([ONCALL, AUTH, *OTHERS])
    query = "What is the on-call escalation policy?"
    shares = title_shares(query, [ONCALL, AUTH, OTHERS[0]], stats)
    weights = stats.weights(terms(query))
    held = sum(w for t, w in weights.items() if t in set(terms(ONCALL.title)))
    assert shares[ONCALL.id] == pytest.approx(held / sum(weights.values()))
    assert 0 < shares[ONCALL.id] < 1  # "policy" is not in the title
    assert AUTH.id not in shares and OTHERS[0].id not in shares  # no question word in their titles
    assert title_shares("the of and", [ONCALL], stats) == {}  # no content word: no share


def test_a_title_boost_lifts_the_document_titled_for_the_question() -> None:
    query = "What is the on-call escalation policy?"
    assert boosted(0.0).search(query, 2)[0].chunk.id == AUTH.id  # its body says it all twice
    top = boosted(0.5).search(query, 2)
    assert top[0].chunk.id == ONCALL.id
    plain = {h.chunk.id: h.score for h in boosted(0.0).search(query, 2)}
    assert top[0].score > plain[ONCALL.id]  # the bonus is added to the fused score


def test_fuse_adds_a_bonus_only_to_candidates() -> None:
    hits = fuse(SPARSE, DENSE, HybridConfig(method="minmax", alpha=0.4), 10, {"B": 0.5, "Z": 9})
    assert scored(hits) == [("B", 0.8), ("A", 0.6), ("C", 0.4), ("D", 0.0)]


def test_sides_built_outside_rank_the_same_when_given_the_chunks() -> None:
    chunks = [ONCALL, AUTH, *OTHERS]
    sparse, dense = BM25Retriever(), HashedTrigramRetriever()
    sparse.build(chunks)
    dense.build(chunks)
    composed = HybridRetriever(sparse, dense, HybridConfig(title_boost=0.3), chunks=chunks)
    query = "on-call escalation policy"
    assert composed.search(query, 3) == boosted(0.3).search(query, 3)


def test_the_boost_and_the_assistant_share_one_statistics_per_chunk_list() -> None:
    from rag.termstats import stats_for

    chunks = [ONCALL, AUTH, *OTHERS]
    assert stats_for(chunks) is stats_for(chunks)  # computed once per index
    again = list(chunks)  # an upload gives the index a new chunk list: new statistics
    assert stats_for(again) is not stats_for(chunks)
    assert stats_for(again).df == stats_for(chunks).df
