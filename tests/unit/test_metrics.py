"""nDCG@k, recall@k and MRR@k checked by hand and against ranx on hand-made qrels."""

from __future__ import annotations

import math

import pytest

from rag.measure.eval.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k

QRELS: dict[str, dict[str, int]] = {
    "graded": {"d1": 2, "d2": 1, "d3": 1},  # graded, two equal grades (ties in the ideal list)
    "first-hit": {"d9": 1},
    "late-hit": {"d5": 1, "d6": 1},  # relevant docs at ranks 4 and 12
    "missing-from-run": {"d1": 1},  # counts 0
    "nothing-relevant": {"d1": 0, "d2": 0},  # judged but none relevant: counts 0
    "many-relevant": {f"m{i}": 1 for i in range(15)},  # more relevant than k: ideal is cut at k
    "judged-negative": {"d1": 1, "d4": 0},  # a judged 0 retrieved first gains nothing
}

RUN: dict[str, list[str]] = {
    "graded": ["d2", "d7", "d1", "d3"],
    "first-hit": ["d9", "d1"],
    "late-hit": ["x1", "x2", "x3", "d5"] + [f"y{i}" for i in range(7)] + ["d6"],
    "nothing-relevant": ["d1", "d2"],
    "many-relevant": [f"m{i}" for i in range(0, 15, 2)] + ["z"],
    "judged-negative": ["d4", "d1"],
    "not-in-qrels": ["d1"],  # ignored
}


def test_ndcg_by_hand() -> None:
    qrels = {"q": {"d1": 2, "d2": 1}}
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(qrels, {"q": ["d2", "d1"]}, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(qrels, {"q": ["d2", "d1"]}, 1) == pytest.approx(1 / 2)


def test_recall_and_mrr_by_hand() -> None:
    qrels = {"q": {"a": 1, "b": 1, "c": 1}, "r": {"z": 1}}
    run = {"q": ["x", "a", "y", "b"], "r": ["z"]}
    assert recall_at_k(qrels, run, 2) == pytest.approx((1 / 3 + 1) / 2)
    assert recall_at_k(qrels, run, 4) == pytest.approx((2 / 3 + 1) / 2)
    assert mrr_at_k(qrels, run, 10) == pytest.approx((1 / 2 + 1) / 2)
    assert mrr_at_k(qrels, run, 1) == pytest.approx((0 + 1) / 2)


def test_a_repeated_doc_counts_once_at_its_best_rank() -> None:
    qrels = {"q": {"a": 1, "b": 1}}
    assert recall_at_k(qrels, {"q": ["a", "a", "b"]}, 2) == 1.0
    assert ndcg_at_k(qrels, {"q": ["a", "a", "b"]}, 2) == pytest.approx(1.0)


def test_k_below_one_raises() -> None:
    with pytest.raises(ValueError, match=r"k must be at least 1\. Currently, k is 0"):
        ndcg_at_k(QRELS, RUN, 0)


def test_empty_qrels_score_zero() -> None:
    assert evaluate({}, RUN) == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


@pytest.mark.parametrize("k", [1, 3, 5, 10, 100])
def test_matches_ranx(k: int) -> None:
    ranx = pytest.importorskip("ranx")
    # ranx takes scores; give strictly falling ones so its order is our list order
    run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in RUN.items()}
    expected = ranx.evaluate(
        ranx.Qrels(QRELS),
        ranx.Run(run),
        [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"],
        make_comparable=True,
    )
    assert ndcg_at_k(QRELS, RUN, k) == pytest.approx(expected[f"ndcg@{k}"], abs=1e-12)
    assert recall_at_k(QRELS, RUN, k) == pytest.approx(expected[f"recall@{k}"], abs=1e-12)
    assert mrr_at_k(QRELS, RUN, k) == pytest.approx(expected[f"mrr@{k}"], abs=1e-12)


def test_evaluate_has_the_cli_keys() -> None:
    assert list(evaluate(QRELS, RUN)) == ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
