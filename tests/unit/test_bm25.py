"""BM25Retriever on bm25s, with rank-bm25 as the oracle for the scoring formula."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rag.config import BM25Config, Config
from rag.errors import IndexError_
from rag.retrieval.base import rank_hits
from rag.retrieval.bm25 import BM25Retriever, id_order, top_k_indices
from rag.text import chunk_text
from rag.types import Chunk

rank_bm25 = pytest.importorskip("rank_bm25")


def doc(cid: str, text: str, title: str = "", heading: str = "") -> Chunk:
    return Chunk(id=cid, doc_id=cid, path=cid, title=title, heading=heading, text=text, ordinal=0)


SERVICES = [
    doc("d0", "The payment service restarts after every deploy.", "Payments", "Deploys"),
    doc("d1", "Service logs rotate nightly and are shipped to the log store.", "Logging"),
    doc("d2", "The health check endpoint of each service answers within 200 ms.", "Health"),
    doc("d3", "Deploy rollback: run the rollback script, then the smoke tests.", "Runbook"),
    doc("d4", "Nightly database backups are restored weekly to test them.", "Database"),
    doc("d5", "VPN access for contractors is granted by the security team.", "Access"),
    doc("d6", "Restarting a service drains its connections first.", "Payments", "Restarts"),
    doc("d7", "Backups of the payment database are encrypted at rest.", "Payments", "Backups"),
]

QUERIES = [
    "service restart",
    "rollback a deploy",
    "nightly backups of the payment database",
    "logs",
    "who grants VPN access?",
    "restarted services restarting",
]


def lucene_oracle(tokens: list[list[str]], k1: float, b: float) -> object:
    """rank-bm25's Okapi scorer with its IDF replaced by Lucene's ln(1 + (N - n + .5)/(n + .5))."""
    oracle = rank_bm25.BM25Okapi(tokens, k1=k1, b=b)
    n_docs = len(tokens)
    df: dict[str, int] = {}
    for doc_terms in tokens:
        for term in set(doc_terms):
            df[term] = df.get(term, 0) + 1
    oracle.idf = {t: math.log(1 + (n_docs - n + 0.5) / (n + 0.5)) for t, n in df.items()}
    return oracle


@pytest.mark.parametrize(
    "config",
    [BM25Config(), BM25Config(k1=0.9, b=0.4), BM25Config(stemming=False, stopwords=False)],
    ids=["defaults", "k1-0.9-b-0.4", "no-analysis"],
)
def test_same_formula_as_rank_bm25_with_lucene_idf(config: BM25Config) -> None:
    retriever = BM25Retriever(config)
    retriever.build(SERVICES)
    tokens = [retriever.analyze(chunk_text(c)) for c in SERVICES]
    oracle = lucene_oracle(tokens, config.k1, config.b)
    for query in QUERIES:
        expected = oracle.get_scores(retriever.analyze(query)) / (config.k1 + 1)  # type: ignore[attr-defined]
        hits = retriever.search(query, len(SERVICES))
        assert hits, query
        got = np.zeros(len(SERVICES))
        for h in hits:
            got[SERVICES.index(h.chunk)] = h.score
        # bm25s drops Lucene's constant (k1 + 1) factor and stores float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=query)
        oracle_order = rank_hits(SERVICES, expected.tolist(), len(SERVICES))
        assert [h.chunk.id for h in hits] == [h.chunk.id for h in oracle_order], query


def test_okapi_idf_floor_is_the_only_difference_from_rank_bm25() -> None:
    # "cache" is in 4 of 6 docs: Okapi's IDF ln((N - n + .5)/(n + .5)) is negative there and
    # rank-bm25 floors it to 0.25 x the mean IDF, which the 24 one-off words push up; Lucene's
    # ln(1 + ...) stays positive. So Okapi prefers the long doc with the rare "miss", Lucene the
    # short doc about "cache"; with Lucene's IDF put into rank-bm25 the two agree again.
    corpus = [
        doc("short", "cache"),
        doc("long", "miss " + " ".join(f"word{j}" for j in range(24))),
        doc("c1", "cache eviction"),
        doc("c2", "cache size"),
        doc("c3", "cache retry"),
        doc("q1", "queue depth"),
    ]
    config = BM25Config(k1=1.2, stemming=False, stopwords=False)  # the corpus is tuned for 1.2
    retriever = BM25Retriever(config)
    retriever.build(corpus)
    tokens = [retriever.analyze(chunk_text(c)) for c in corpus]
    query = retriever.analyze("cache miss")
    okapi = rank_bm25.BM25Okapi(tokens, k1=config.k1, b=config.b)
    assert okapi.idf["cache"] == pytest.approx(0.25 * okapi.average_idf)

    def order(scores: np.ndarray) -> list[str]:
        return [h.chunk.id for h in rank_hits(corpus, scores.tolist(), len(corpus))]

    ours = [h.chunk.id for h in retriever.search("cache miss", len(corpus))]
    assert ours[:2] == ["short", "long"]
    assert order(okapi.get_scores(query))[:2] == ["long", "short"]
    lucene = lucene_oracle(tokens, config.k1, config.b)
    assert order(lucene.get_scores(query)) == ours  # type: ignore[attr-defined]


def test_stemming_matches_word_forms_only_when_on() -> None:
    corpus = [doc("a", "Restarting the workers"), doc("b", "Workers restart nightly")]
    stemmed = BM25Retriever(BM25Config(stemming=True))
    stemmed.build(corpus)
    assert {h.chunk.id for h in stemmed.search("restarts", 5)} == {"a", "b"}
    plain = BM25Retriever(BM25Config(stemming=False))
    plain.build(corpus)
    assert plain.search("restarts", 5) == []
    assert [h.chunk.id for h in plain.search("restart", 5)] == ["b"]


def test_stopwords_are_ignored_only_when_on() -> None:
    corpus = [doc("a", "the cat"), doc("b", "a dog")]
    on = BM25Retriever(BM25Config(stopwords=True))
    on.build(corpus)
    assert on.search("the", 5) == []
    assert on.analyze("The cats are running") == ["cat", "run"]
    off = BM25Retriever(BM25Config(stopwords=False))
    off.build(corpus)
    assert [h.chunk.id for h in off.search("the", 5)] == ["a"]


def test_title_and_heading_are_indexed() -> None:
    corpus = [doc("a", "Body text only.", title="Kubernetes", heading="Ingress"), doc("b", "x")]
    retriever = BM25Retriever()
    retriever.build(corpus)
    assert [h.chunk.id for h in retriever.search("ingress", 5)] == ["a"]
    assert [h.chunk.id for h in retriever.search("kubernetes", 5)] == ["a"]


def test_b_zero_turns_length_normalisation_off() -> None:
    corpus = [doc("short", "alpha"), doc("long", "alpha " + "beta " * 20), doc("z", "gamma")]
    normalised = BM25Retriever(BM25Config(b=0.75))
    normalised.build(corpus)
    hits = normalised.search("alpha", 5)
    assert [h.chunk.id for h in hits] == ["short", "long"] and hits[0].score > hits[1].score
    flat = BM25Retriever(BM25Config(b=0.0))
    flat.build(corpus)
    a, b = flat.search("alpha", 5)
    assert a.score == b.score and [a.chunk.id, b.chunk.id] == ["long", "short"]  # tie: by id


def test_k1_changes_term_frequency_saturation() -> None:
    corpus = [doc("once", "alpha beta"), doc("thrice", "alpha alpha alpha"), doc("z", "gamma")]
    scores = {}
    for k1 in (0.5, 3.0):
        retriever = BM25Retriever(BM25Config(k1=k1, b=0.0))
        retriever.build(corpus)
        hits = {h.chunk.id: h.score for h in retriever.search("alpha", 5)}
        scores[k1] = hits["thrice"] / hits["once"]
    assert scores[3.0] > scores[0.5] > 1.0


def test_corpus_of_only_stopwords_searches_to_nothing(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build([doc("a", "the and of"), doc("b", "")])
    assert retriever.search("the", 3) == [] and retriever.search("anything", 3) == []
    retriever.save(tmp_path)
    loaded = BM25Retriever()
    loaded.load(tmp_path, [doc("a", "the and of"), doc("b", "")])
    assert loaded.search("anything", 3) == []


def test_only_positive_scores_are_returned() -> None:
    retriever = BM25Retriever()
    retriever.build(SERVICES)
    hits = retriever.search("vpn", 10)
    assert [h.chunk.id for h in hits] == ["d5"] and hits[0].score > 0


def test_load_checks_the_settings(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build(SERVICES)
    retriever.save(tmp_path)
    with pytest.raises(IndexError_, match=r"k1.*rag index"):
        BM25Retriever(BM25Config(k1=2.0)).load(tmp_path, SERVICES)


def test_load_names_the_first_differing_chunk(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build(SERVICES)
    retriever.save(tmp_path)
    swapped = [SERVICES[1], SERVICES[0], *SERVICES[2:]]
    with pytest.raises(IndexError_, match=r"at position 0 saved 'd0', given 'd1'.*run `rag index`"):
        BM25Retriever().load(tmp_path, swapped)


def test_load_from_a_missing_or_corrupt_folder_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(IndexError_, match=r"missing or unreadable.*rag index"):
        BM25Retriever().load(tmp_path / "nowhere", SERVICES)
    retriever = BM25Retriever()
    retriever.build(SERVICES)
    retriever.save(tmp_path)
    (tmp_path / "params.index.json").write_text("{not json")
    with pytest.raises(IndexError_, match=r"corrupt.*rag index"):
        BM25Retriever().load(tmp_path, SERVICES)


def test_saved_files_are_bm25s_arrays_and_chunk_ids(tmp_path: Path) -> None:
    retriever = BM25Retriever()
    retriever.build(SERVICES)
    retriever.save(tmp_path)
    assert (tmp_path / "data.csc.index.npy").exists()
    assert (tmp_path / "vocab.index.json").exists()
    meta = json.loads((tmp_path / "chunk_ids.json").read_text())
    assert meta["chunk_ids"] == [c.id for c in SERVICES]


def test_fingerprint_names_what_the_index_depends_on() -> None:
    fp = BM25Retriever.from_config(Config()).fingerprint()
    assert fp["bm25s"] == "0.3.16"
    assert (fp["k1"], fp["b"], fp["stemming"], fp["stopwords"]) == ("1.5", "0.75", "english", "en")
    assert BM25Retriever(BM25Config(stemming=False)).fingerprint()["stemming"] == "off"
    assert BM25Retriever(BM25Config(b=0.5)).fingerprint() != fp


@pytest.mark.parametrize("seed", range(20))
def test_top_k_selection_matches_rank_hits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = rng.integers(-2, 6, size=n).astype(np.float32)  # many exact ties and non-positives
    ids = [f"c{int(x):03d}" for x in rng.permutation(n)]
    chunks = [doc(i, "") for i in ids]
    for k in (1, 3, 10, n + 1):
        picked = top_k_indices(scores, id_order(chunks), k).tolist()
        expected = [chunks.index(h.chunk) for h in rank_hits(chunks, scores.tolist(), k)]
        assert picked == expected
