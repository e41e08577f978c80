"""VectorCache: an encoder's vectors kept by text, so a passage asked about again is not re-encoded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rag.retrieval.encoder import VectorCache
from tests.unit.retriever_contract import TrigramEncoder

SENTENCES = [
    "Primary on call is paged first.",
    "Acknowledge within five minutes.",
    "The secondary is paged after ten minutes.",
]


def test_cosines_are_the_encoders_and_kept_texts_are_not_encoded_again() -> None:
    encoder = TrigramEncoder()
    cache = VectorCache(encoder)
    question = "Who is paged first?"
    direct = encoder.encode([question, *SENTENCES])
    expected = direct[1:] @ direct[0]
    encoder.encoded.clear()

    assert cache.cosines(question, SENTENCES) == pytest.approx(expected.tolist(), abs=1e-6)
    assert encoder.encoded == [question, *SENTENCES]  # one batch, each text once
    encoder.encoded.clear()

    again = cache.cosines("When is the secondary paged?", [SENTENCES[2], SENTENCES[0]])
    assert encoder.encoded == ["When is the secondary paged?"]  # only the new text
    assert again[0] > again[1]
    assert (cache.hits, cache.misses) == (2, 5)
    assert cache.cosines("anything", []) == []


def test_repeated_texts_in_one_call_are_encoded_once_and_rows_keep_their_order() -> None:
    encoder = TrigramEncoder()
    cache = VectorCache(encoder)
    texts = [SENTENCES[0], SENTENCES[1], SENTENCES[0]]
    vectors = cache.vectors(texts)
    assert encoder.encoded == SENTENCES[:2]
    assert vectors.shape == (3, encoder.dim)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert cache.vectors([]).shape == (0, encoder.dim)


def test_the_least_recently_used_text_goes_first_when_full() -> None:
    encoder = TrigramEncoder()
    cache = VectorCache(encoder, size=2)
    cache.vectors(SENTENCES[:2])
    cache.vectors([SENTENCES[0]])  # used again: the second is now the oldest
    cache.vectors([SENTENCES[2]])
    assert len(cache) == 2
    encoder.encoded.clear()
    cache.vectors([SENTENCES[0], SENTENCES[2]])
    assert encoder.encoded == []
    cache.vectors([SENTENCES[1]])
    assert encoder.encoded == [SENTENCES[1]]
    with pytest.raises(ValueError, match="at least 1"):
        VectorCache(encoder, size=0)


def test_threads_share_one_cache_without_losing_vectors() -> None:
    encoder = TrigramEncoder()
    cache = VectorCache(encoder, size=50)
    texts = [f"Sentence number {i} about the pager rota." for i in range(80)]
    errors: list[BaseException] = []

    def ask(offset: int) -> None:
        try:
            for i in range(40):
                window = texts[(offset + i) % 60 : (offset + i) % 60 + 20]
                got = cache.cosines(texts[offset], window)
                want = encoder.encode([texts[offset], *window])
                assert got == pytest.approx((want[1:] @ want[0]).tolist(), abs=1e-6)
        except BaseException as e:  # collected, asserted below
            errors.append(e)

    workers = [threading.Thread(target=ask, args=(k * 7,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert len(cache) <= 50
