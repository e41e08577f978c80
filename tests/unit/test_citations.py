"""Citation markers, the lexical support score and SQuAD-style answer scoring."""

from __future__ import annotations

import pytest

from rag.citations import (
    STOPWORDS,
    attach_citations,
    check_citations,
    contains_gold,
    content_tokens,
    find_markers,
    is_citation_only,
    normalize_answer,
    strip_markers,
    support_score,
    token_f1,
)
from rag.types import Chunk, Citation, Hit, Source


def source(n: int, text: str = "text") -> Source:
    chunk = Chunk(
        id=f"doc.md#{n}",
        doc_id="doc.md",
        path="doc.md",
        title="Doc",
        heading="H",
        text=text,
        ordinal=n,
    )
    return Source(n=n, hit=Hit(chunk=chunk, score=1.0 / n, rank=n))


# ---- find_markers ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Roll back with the script [1].", [1]),
        ("See [2] and then [1].", [2, 1]),
        ("Both agree [1][3].", [1, 3]),
        ("Both agree [1, 3] and [1,3].", [1, 3]),
        ("Spaces inside [ 2 ] and [ 4 , 5 ]", [2, 4, 5]),
        ("Repeat [2] then [2] then [1]", [2, 1]),
        ("Multi-digit [12] works", [12]),
        ("No markers here.", []),
        ("", []),
    ],
)
def test_find_markers_parses_forms_in_order_of_first_appearance(
    text: str, expected: list[int]
) -> None:
    assert find_markers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a checkbox [x]",
        "version [10.2]",
        "footnote [^1]",
        "index [0]",
        "amount [1,000]",
        "[]",
        "range [1-3]",
        "[a, 1]",
    ],
)
def test_find_markers_ignores_things_that_are_not_markers(text: str) -> None:
    assert find_markers(text) == []


def test_strip_markers_removes_markers_and_the_blank_before_them() -> None:
    assert strip_markers("Takes 5 minutes [1].") == "Takes 5 minutes."
    assert strip_markers("Run it [1][2], then wait [3, 4].") == "Run it, then wait."
    assert strip_markers("[2] Start here") == " Start here"


def test_strip_markers_keeps_non_markers() -> None:
    text = "Tick [x] in version [10.2] at arr[0]."
    assert strip_markers(text) == text


def test_check_citations_maps_markers_to_sources_or_none() -> None:
    sources = [source(1), source(2), source(3)]
    assert check_citations("A [3] and B [5] and C [1].", sources) == (
        Citation(n=3, source=sources[2]),
        Citation(n=5, source=None),
        Citation(n=1, source=sources[0]),
    )
    assert check_citations("No markers.", sources) == ()


def test_check_citations_uses_the_source_number_not_the_position() -> None:
    sources = [source(4), source(7)]
    (citation,) = check_citations("See [7].", sources)
    assert citation.source is sources[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[2]", True),
        ("  [2].  ", True),
        ("[1][3]", True),
        ("[1, 2]\n", True),
        ("([2])", True),
        ("See [2]", False),
        ("5 [2]", False),
        ("", False),
        (" . ", False),
        ("[x]", False),
    ],
)
def test_is_citation_only(text: str, expected: bool) -> None:
    assert is_citation_only(text) is expected


# ---- support_score ----


def test_stopword_set_is_small_english_list() -> None:
    assert 140 <= len(STOPWORDS) <= 200
    assert {"the", "is", "and", "don't"} <= STOPWORDS


def test_content_tokens_lowercase_keep_numbers_drop_stopwords_and_markers() -> None:
    text = "The Rollback takes 2.5 minutes on port 8080 [1] and doesn’t need root."
    assert content_tokens(text) == [
        "rollback",
        "takes",
        "2.5",
        "minutes",
        "port",
        "8080",
        "need",
        "root",
    ]


def test_support_score_is_one_when_every_content_word_is_in_the_passages() -> None:
    passages = ["To roll back, run deploy.sh --rollback.", "It takes 5 minutes."]
    assert support_score("Run deploy.sh to roll back; it takes 5 minutes [1][2].", passages) == 1.0


def test_support_score_is_the_fraction_of_distinct_content_tokens_found() -> None:
    # content tokens: rollback, takes, 5, minutes -> 2 of 4 are in the passage
    assert support_score("The rollback takes 5 minutes.", ["A rollback takes an hour."]) == 0.5


def test_support_score_counts_distinct_tokens_so_repetition_does_not_inflate() -> None:
    passage = ["rollback"]
    assert support_score("rollback rollback rollback unicorn", passage) == 0.5


def test_support_score_is_case_insensitive_and_uses_the_union_of_passages() -> None:
    assert support_score("ALPHA beta", ["alpha", "Beta"]) == 1.0


def test_support_score_is_zero_without_content_tokens_or_passages() -> None:
    assert support_score("", ["anything"]) == 0.0
    assert support_score("[1]", ["anything"]) == 0.0
    assert support_score("It is what it is.", ["it is what it is"]) == 0.0
    assert support_score("rollback", []) == 0.0


def test_support_score_ignores_marker_numbers() -> None:
    # "[3]" must not count as the content token "3", which the passage lacks
    assert support_score("rollback [3]", ["rollback"]) == 1.0


# ---- SQuAD-style scoring ----


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Cat sat.", "cat sat"),
        ("  an   Apple,  a pear!  ", "apple pear"),
        ("Theory of the anthem", "theory of anthem"),
        ("5 minutes (approx.)", "5 minutes approx"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_token_f1_known_examples() -> None:
    assert token_f1("The cat sat", "cat sat") == 1.0
    assert token_f1("cat", "dog") == 0.0
    # pred "cat sat on mat" vs gold "cat sat": precision 2/4, recall 2/2 -> F1 2/3
    assert token_f1("the cat sat on the mat", "cat sat") == pytest.approx(2 / 3)
    # repeated tokens count only as often as they occur in both
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)


def test_token_f1_empty_answers() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # both normalise to nothing
    assert token_f1("", "cat") == 0.0
    assert token_f1("cat", "") == 0.0


def test_contains_gold_matches_whole_normalised_words() -> None:
    assert contains_gold("Rollback takes about 5 minutes.", ["5 Minutes"])
    assert contains_gold("It is port 8080.", ["9090", "8080"])
    assert not contains_gold("It takes 15 minutes.", ["5 minutes"])
    assert not contains_gold("anything", [])
    assert not contains_gold("anything", ["", "the"])


def _two_sources() -> list[Source]:
    hotel = Chunk(
        "a", "d1", "travel.md", "Travel", "Hotels", "Hotels are capped at 160 EUR per night.", 0
    )
    laptop = Chunk(
        "b",
        "d2",
        "onboarding.md",
        "Onboarding",
        "Laptop",
        "New engineers get a MacBook Pro 14-inch.",
        0,
    )
    return [Source(1, Hit(hotel, 1.0, 1)), Source(2, Hit(laptop, 0.5, 2))]


def test_attach_citations_names_the_source_of_each_sentence() -> None:
    text = "Hotels are capped at 160 EUR per night. New engineers get a MacBook Pro!"
    assert attach_citations(text, _two_sources()) == (
        "Hotels are capped at 160 EUR per night [1]. New engineers get a MacBook Pro [2]!"
    )


def test_attach_citations_leaves_unsupported_sentences_and_model_citations_alone() -> None:
    sources = _two_sources()
    assert attach_citations("The moon is made of cheese.", sources) == "The moon is made of cheese."
    cited = "Hotels cost 160 EUR [2]."  # the model's own (even wrong) citing is kept as it is
    assert attach_citations(cited, sources) == cited
    assert attach_citations("160 EUR", sources) == "160 EUR [1]"  # no final punctuation
    assert attach_citations("", sources) == "" and attach_citations("Hotels.", []) == "Hotels."
    # half of the sentence's content words must be in one source: 1 of 3 is not enough
    assert attach_citations("Hotels in Paris glitter.", sources) == "Hotels in Paris glitter."
