"""Context sufficiency: comparable features and a logistic model fitted by Newton's method."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from rag.config import LogisticParams
from rag.sufficiency import (
    FEATURES,
    features,
    fit_logistic,
    predict,
    sentence_dense,
    typed_gap,
)
from rag.termstats import TermStats, terms
from rag.types import Chunk, Hit

DOCS = [
    "On-call escalation: page the secondary after 15 minutes, then the engineering manager.",
    "The VPN uses WireGuard; request a profile in the IT portal.",
    "Hotel expenses are capped at 160 EUR per night in Berlin.",
    "Code reviews need one approval from a code owner.",
]


def chunks() -> list[Chunk]:
    return [Chunk(f"c{i}", f"d{i}", f"d{i}.md", f"Doc {i}", "", t, 0) for i, t in enumerate(DOCS)]


def hits_for(indices: list[int]) -> list[Hit]:
    cs = chunks()
    return [Hit(cs[i], 1.0, r) for r, i in enumerate(indices, 1)]


def test_terms_are_stemmed_content_words() -> None:
    assert terms("The reviews of the codes") == ["review", "code"]


def test_covered_question_scores_higher_than_an_off_topic_one() -> None:
    stats = TermStats(chunks())
    covered = features("What is the on-call escalation policy?", hits_for([0, 1]), stats)
    off = features("What is the capital of France?", hits_for([2, 3]), stats)
    assert covered["coverage_idf"] is not None and off["coverage_idf"] is not None
    assert covered["coverage_idf"] > off["coverage_idf"]
    assert off["unknown"] == pytest.approx(1.0)  # "capital" and "france" are in no chunk
    assert covered["unknown"] < 0.5
    assert set(covered) == set(FEATURES)


def test_short_and_long_questions_are_comparable() -> None:
    stats = TermStats(chunks())
    short = features("VPN setup?", hits_for([1]), stats)
    long = features(
        "How do I request a WireGuard VPN profile in the IT portal?", hits_for([1]), stats
    )
    assert short["coverage_idf"] is not None and 0.2 < short["coverage_idf"] < 0.5  # no "setup"
    assert long["coverage_idf"] == pytest.approx(1.0)


def test_no_words_at_all() -> None:
    f = features("?!", hits_for([0]), TermStats(chunks()))
    assert f["coverage_idf"] == 0.0 and f["unknown"] == 1.0 and f["typed_gap"] is None


def test_typed_gap_asks_whether_the_question_meets_a_number() -> None:
    """A question that wants a number is answered by a sentence holding the question's words
    and a number; a near miss finds its words only in sentences without one."""
    stats = TermStats(chunks())
    hotel = "How much can I spend on a hotel in Berlin per night?"
    assert typed_gap(hotel, hits_for([2]), stats.weights(terms(hotel))) == pytest.approx(0.0)
    # "how long" wants a number; the VPN passage names the VPN but states no duration
    near = "How long is a VPN profile valid?"
    gap = typed_gap(near, hits_for([1]), stats.weights(terms(near)))
    assert gap is not None and gap > 0.3  # "vpn" and "profile" meet, with no number
    # the same words, not asking for a number: unknown, not confident either way
    what = "What is a VPN profile?"
    assert typed_gap(what, hits_for([1]), stats.weights(terms(what))) is None
    assert features(near, hits_for([1]), stats)["typed_gap"] == pytest.approx(gap)
    # digits in an identifier or tag do not make a question ask for a number
    tagged = "How do we set up the VPN profile? [ref s00-q1]"
    assert typed_gap(tagged, hits_for([1]), stats.weights(terms(tagged))) is None


def overlap(question: str, parts: Sequence[str]) -> list[float]:
    """A stand-in for the embedding model's cosines: the Jaccard overlap of stemmed words."""
    q = set(terms(question))
    return [len(q & set(terms(p))) / max(1, len(q | set(terms(p)))) for p in parts]


def test_sent_dense_is_the_best_sentence_of_the_two_best_passages() -> None:
    two = Chunk("c9", "d9", "d9.md", "Doc 9", "", "Nothing here. Hotel expenses are capped.", 0)
    hotel = "Are hotel expenses capped?"
    best = sentence_dense(hotel, [Hit(chunks()[1], 1.0, 1), Hit(two, 0.9, 2)], overlap)
    # the second passage's second sentence, not the passage as a whole
    assert best == pytest.approx(overlap(hotel, ["Hotel expenses are capped."])[0])
    assert best is not None and best > overlap(hotel, [two.text])[0]
    # the third passage is not read: the answer would have to be ranked that low
    third = [Hit(chunks()[1], 1.0, 1), Hit(chunks()[3], 0.9, 2), Hit(two, 0.8, 3)]
    assert sentence_dense(hotel, third, overlap) == pytest.approx(0.0)
    # without an embedding model it is unknown, and the features say so
    assert sentence_dense(hotel, third, None) is None
    assert features(hotel, third, TermStats(chunks()))["sent_dense"] is None
    with_model = features(hotel, [Hit(two, 1.0, 1)], TermStats(chunks()), similarity=overlap)
    assert with_model["sent_dense"] == pytest.approx(best)


def test_fit_recovers_a_separating_direction_and_predicts_probabilities() -> None:
    rng = random.Random(3)
    rows, labels = [], []
    for _ in range(200):
        y = rng.random() < 0.5
        rows.append({"a": rng.gauss(1.0 if y else -1.0, 0.7), "b": rng.gauss(0, 1), "c": None})
        labels.append(y)
    params = fit_logistic(rows, labels, ["a", "b", "c"])
    assert params.weights["a"] > 1.0
    assert abs(params.weights["b"]) < 0.5
    assert params.weights["c"] == 0.0  # missing everywhere
    assert predict({"a": 2.0, "b": 0.0}, params) > 0.9
    assert predict({"a": -2.0, "b": 0.0}, params) < 0.1
    accuracy = sum((predict(r, params) >= 0.5) == y for r, y in zip(rows, labels, strict=True))
    assert accuracy / len(rows) > 0.85


def test_predict_treats_missing_as_the_mean() -> None:
    params = LogisticParams(bias=0.3, weights={"a": 2.0}, means={"a": 5.0}, scales={"a": 2.0})
    assert predict({"a": None}, params) == pytest.approx(1 / (1 + math.exp(-0.3)))
    assert predict({}, params) == pytest.approx(1 / (1 + math.exp(-0.3)))
    assert predict({"a": 7.0}, params) == pytest.approx(1 / (1 + math.exp(-2.3)))


def test_fit_refuses_one_class() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_logistic([{"a": 1.0}, {"a": 2.0}], [True, True], ["a"])
