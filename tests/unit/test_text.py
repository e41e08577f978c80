"""One chunk_text for every index: the text changed shape for bm25/lexical, their terms did not."""

import pytest

from rag.config import BM25Config
from rag.retrieval.bm25 import Analyzer
from rag.text import chunk_text, content_words
from rag.types import Chunk


def chunk(title: str, heading: str, text: str) -> Chunk:
    return Chunk(
        id="d#0", doc_id="d", title=title, heading=heading, text=text, path="d.md", ordinal=0
    )


CHUNKS = [
    chunk("On-call runbook", "Paging › Escalation", "Page the secondary after 15 minutes."),
    chunk("Expense policy", "", "Meals are reimbursed up to 40 EUR per day."),
    chunk("", "", "Only a body, no title."),
]


def test_parts_one_per_line_empty_parts_left_out() -> None:
    assert chunk_text(CHUNKS[0]) == (
        "On-call runbook\nPaging › Escalation\nPage the secondary after 15 minutes."
    )
    assert chunk_text(CHUNKS[1]) == "Expense policy\nMeals are reimbursed up to 40 EUR per day."
    assert chunk_text(CHUNKS[2]) == "Only a body, no title."


@pytest.mark.parametrize("c", CHUNKS)
def test_bm25_and_lexical_see_the_terms_of_the_old_spelling(c: Chunk) -> None:
    old_bm25 = f"{c.title}\n{c.heading}\n{c.text}"  # bm25.py, milvus.py, escalation.py
    old_lexical = f"{c.title} {c.heading} {c.text}"  # lexical.py
    analyzer = Analyzer(BM25Config())
    assert analyzer.analyze(chunk_text(c)) == analyzer.analyze(old_bm25)
    assert content_words(chunk_text(c)) == content_words(old_lexical)
