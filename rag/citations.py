"""Pure functions over citation markers ([1], [1][3], [1, 3]) and answer text.

Also the cheap lexical support score the escalation policy uses, and SQuAD-style answer
normalisation, token F1 and containment for the answer evaluation.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

from rag.text import (  # one English stopword list for the whole package
    SENTENCE_END,
    STOPWORDS,
    chunk_text,
)
from rag.types import Citation, Source

# A marker is "[" n ("," n)* "]" with n a number from 1 without leading zeros; "[10.2]",
# "[x]", "[^1]", "[0]" and "[1,000]" are not markers. The leading blank is matched so that
# stripping "done [1]." gives "done.".
_MARKER = re.compile(r"([ \t]*)\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
# Decimal numbers stay whole ("2.5", "1,000"); words keep inner apostrophes ("don't").
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def find_markers(text: str) -> list[int]:
    """Citation numbers in ``text`` ([1], [1][3], [1, 3]) in order of first appearance, deduped."""
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(text):
        for n in _numbers(match) or ():
            seen.setdefault(n, None)
    return list(seen)


def _numbers(match: re.Match[str]) -> list[int] | None:
    """The numbers of a marker match, or None when it is not a marker after all ("[0]")."""
    parts = [part.strip() for part in match.group(2).split(",")]
    if any(part.startswith("0") for part in parts):
        return None
    return [int(part) for part in parts]


def _drop_marker(match: re.Match[str]) -> str:
    return match.group(0) if _numbers(match) is None else ""


def marker_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text``'s citation markers are (start, end), the ones ``strip_markers`` removes."""
    return [m.span() for m in _MARKER.finditer(text) if _numbers(m) is not None]


def strip_markers(text: str) -> str:
    """``text`` with every citation marker (and the blank just before it) removed."""
    return _MARKER.sub(_drop_marker, text)


def check_citations(text: str, sources: Sequence[Source]) -> tuple[Citation, ...]:
    """One Citation per marker in ``text``; its source is None when no source has that number."""
    by_n = {source.n: source for source in sources}
    return tuple(Citation(n=n, source=by_n.get(n)) for n in find_markers(text))


def is_citation_only(text: str) -> bool:
    """True when ``text`` holds at least one marker and otherwise only punctuation and blanks."""
    if not find_markers(text):
        return False
    return not any(ch.isalnum() for ch in strip_markers(text))


def content_tokens(text: str) -> list[str]:
    """Lowercased word and number tokens of ``text`` without markers or stopwords."""
    plain = strip_markers(text).translate(_APOSTROPHES).casefold()
    return [tok for tok in _TOKEN.findall(plain) if tok not in STOPWORDS]


def support_score(text: str, passages: Sequence[str]) -> float:
    """Share of the draft's distinct content tokens found in ``passages``, in [0, 1].

    Distinct tokens, so a draft that repeats one supported word cannot inflate its score.
    A draft with no content tokens at all (empty, only markers or stopwords) scores 0.0:
    it says nothing the passages could support.
    """
    draft = set(content_tokens(text))
    if not draft:
        return 0.0
    known: set[str] = set()
    for passage in passages:
        known.update(content_tokens(passage))
    return len(draft & known) / len(draft)


# ---- SQuAD-style answer evaluation ----

_TRAILING = re.compile(r"[.!?:;]*\s*$")
ATTACH_MIN_SUPPORT = 0.5


def attach_citations(
    text: str, sources: Sequence[Source], min_support: float = ATTACH_MIN_SUPPORT
) -> str:
    """``text`` with a marker after each sentence, naming the source that supports it best.

    Small models asked to cite answer with marker lists ("[1] [2] [3]") or pasted source
    titles instead of the fact; asked for the fact alone they answer (see README). So the
    app attributes: a sentence gets " [n]" for the source holding the largest share of its
    content words, when that share is at least ``min_support``. Text that already holds a
    marker is the model's own citing and is returned as it is; so is a sentence no source
    supports (the router reads that as an uncited draft).
    """
    if not text.strip() or not sources or find_markers(text):
        return text
    words = [(source.n, set(content_tokens(chunk_text(source.chunk)))) for source in sources]
    out: list[str] = []
    for sentence in SENTENCE_END.split(text.strip()):
        mine = set(content_tokens(sentence))
        best_n, best = 0, 0.0
        for n, known in words:
            share = len(mine & known) / len(mine) if mine else 0.0
            if share > best:
                best_n, best = n, share
        if best_n and best >= min_support:
            end = _TRAILING.search(sentence)
            cut = end.start() if end else len(sentence)
            tail = sentence[cut:].strip()
            sentence = f"{sentence[:cut]} [{best_n}]{tail}"
        out.append(sentence)
    return " ".join(out)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, and collapse whitespace (SQuAD)."""
    lowered = s.lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", no_punct).split())


def token_f1(pred: str, gold: str) -> float:
    """SQuAD token F1 between normalised ``pred`` and ``gold``; two empty answers score 1.0."""
    pred_tokens = normalize_answer(pred).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def contains_gold(pred: str, golds: Iterable[str]) -> bool:
    """True when a non-empty normalised gold answer occurs in normalised ``pred`` as whole words."""
    padded = f" {normalize_answer(pred)} "
    for gold in golds:
        norm = normalize_answer(gold)
        if norm and f" {norm} " in padded:
            return True
    return False
