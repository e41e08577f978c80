"""Context compression: keep the sentences of the retrieved passages that matter for the question.

On a laptop CPU most of an answer's time goes into the model reading its prompt, and most of
the prompt is passages. Each passage is cut into sentences (list items and table rows count as
sentences, with their numbers); a sentence scores the IDF of the question's terms it holds, plus,
when the retriever embeds text, a share of the question's IDF total for its cosine to the
question (an answer in other words: "Who can help with my Pleo card?" is answered by a name), and
the best ones are kept with their neighbours, best passages first, within a token budget. A
question word that the passage's title or heading already holds counts for half inside that
passage: it tells which passage, not which sentence. A kept section heading brings the lines
under it instead of neighbours, in every passage. Short passages go in whole. Titles and
headings stay: ``format_source`` prints them for every passage, so an opening line that repeats
them is dropped. Gaps are marked with "…" so the model knows text was left out. A question
whose words are mostly the top passage's title and heading asks about that document as a
whole: its words choose no sentence, so nothing is cut (``context.broad_share``). Nor is
anything cut when no sentence of the two best passages scores a fair share of the question's
weight (``context.whole_below``): the answer is then in other words than the question's, and
which sentences hold it would be a guess.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from rag.config import ContextConfig
from rag.models.openai_compat import estimate_tokens
from rag.termstats import TermStats, terms
from rag.text import SENTENCE_END
from rag.types import Hit

_GAP = " … "
_WRAP = 60  # a line at least this long that ends mid-sentence was wrapped
_ENDS = (".", "!", "?", ":", ";", "|")
# What kind of answer the question wants (classic QA answer typing): a sentence of that kind
# gets a share of the question's weight on top of its word matches, because the answer's own
# words ("25 minutes", `make doctor`) are rarely the question's.
WANTS_NUMBER = re.compile(
    r"\b(how (long|many|much|often|fast|soon|big|large|old|early|late)|when|what time|"
    r"which (date|day|year|month)|what (date|day|year|month|percentage|rate|limit|amount|size)|"
    r"until|deadline|limit|cap|maximum|minimum|max|min)\b",
    re.IGNORECASE,
)
_WANTS_COMMAND = re.compile(r"\b(command|run|type|script|cli|flag)\b", re.IGNORECASE)
HAS_NUMBER = re.compile(r"\d")
_HAS_CODE = re.compile(r"`[^`]+`|\$ \w|--\w")
TYPE_BONUS = 0.35
TOP_PASSAGE_SENTENCES = 3
# A question word already in the passage's title or heading (printed above every passage) says
# which passage, not which sentence: inside that passage it counts this much.
TITLE_TERM_WEIGHT = 0.5
_HEADING_CHARS = 60
# Whether selection is guesswork is judged on the two best passages (``context.whole_below``).
_SURE_RANKS = 2

_ITEM = re.compile(r"^([-*•+>|]|\d+[.)]\s)")
# Plain-text tables: columns are separated by runs of spaces ("Payments    payments-gateway
# Payments Primary"), under a ruler of dashes. A row is a sentence of its own, not a wrapped
# line to run on into the next one; a ruler says nothing and is left out.
_COLUMNS = re.compile(r"\S {2,}\S")
_RULER = re.compile(r"[-=+|: ]*-{3,}[-=+|: ]*")
# A table row is kept whole even when a cell holds two sentences ("T+0      Primary on call is
# paged. Acknowledge within 5 minutes."): a column gap, not two spaces after a full stop.
_ROW = re.compile(r"[^\s.!?:;] {2,}\S")
# A list item's number or letter is not a sentence: "1. Platform primary on call." is one.
_ENUMERATOR = re.compile(r"(\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)]")


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences; list items and table rows (whole) are sentences of their own.

    A long line that does not end a sentence runs on into the next one (PDF text is wrapped
    at the page width), unless the next line starts a list item or is a table row (columns
    apart by two or more spaces); a ruler line of dashes is dropped.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            lines.append("")
            continue
        if _RULER.fullmatch(line):
            continue
        prev = lines[-1] if lines else ""
        if (
            prev
            and len(prev) >= _WRAP
            and not prev.endswith(_ENDS)
            and not _ITEM.match(line)
            and not _COLUMNS.search(line)
        ):
            lines[-1] = f"{prev} {line}"
        else:
            lines.append(line)
    out: list[str] = []
    for line in lines:
        if _ROW.search(line):
            out.append(line)
            continue
        carry = ""
        for raw_part in SENTENCE_END.split(line):
            part = raw_part.strip()
            if not part:
                continue
            if _ENUMERATOR.fullmatch(part):
                carry = f"{carry}{part} "
                continue
            out.append(carry + part)
            carry = ""
        if carry:
            out.append(carry.strip())
    return out


Similarity = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class Compressed:
    """The hits with their text cut down, and what it saved (estimated tokens)."""

    hits: tuple[Hit, ...]
    tokens_before: int
    tokens_after: int


@dataclass
class _Passage:
    hit: Hit
    parts: list[str]
    cost: list[int]
    score: list[float]
    keep: set[int]


def _rank_weight(rank: int) -> float:
    """Better-ranked passages win ties: the retriever's order is evidence too."""
    return 1.0 / rank


def compress(
    question: str,
    hits: Sequence[Hit],
    stats: TermStats,
    cfg: ContextConfig,
    similarity: Similarity | None = None,
) -> Compressed:
    """Hits whose text holds only the question's best sentences (with neighbours) within budget."""
    weights = stats.weights(terms(question))
    total = sum(weights.values())
    before = sum(estimate_tokens(h.chunk.text) for h in hits)
    if hits and total > 0 and cfg.broad_share <= 1:
        # "What is the on-call escalation policy?": when the top passage's title and heading
        # already hold most of the question's weight, the question asks what the document
        # says as a whole and its words choose no sentence ("Compensation for on-call shifts
        # is described in the Employee Handbook" won, and the models answered from it).
        named = _named(hits[0])
        if sum(w for t, w in weights.items() if t in named) >= cfg.broad_share * total:
            return Compressed(tuple(hits), before, before)
    bonus = TYPE_BONUS * total
    # A number in the question is compared with the text's numbers: "who approves 1,800
    # euros?" is answered by the row "EUR 500.01 to EUR 2,500  Your department head".
    asks_number = WANTS_NUMBER.search(question) or HAS_NUMBER.search(question)
    asks_command = _WANTS_COMMAND.search(question)
    wants = [p for asked, p in ((asks_number, HAS_NUMBER), (asks_command, _HAS_CODE)) if asked]
    budget = cfg.budget_tokens
    passages: list[_Passage] = []
    whole: set[int] = set()
    for i, hit in enumerate(hits):
        parts = _without_title(sentences(hit.chunk.text), hit)
        cost = [estimate_tokens(p) + 1 for p in parts]
        named = _named(hit)
        inside = {t: w * (TITLE_TERM_WEIGHT if t in named else 1.0) for t, w in weights.items()}
        score = [
            sum(inside.get(t, 0.0) for t in set(terms(p)))
            + (bonus if any(w.search(p) for w in wants) else 0.0)
            for p in parts
        ]
        passages.append(_Passage(hit, parts, cost, score, set()))
        if sum(cost) <= cfg.whole_passage_tokens:
            whole.add(i)
    if similarity is not None and cfg.dense_weight > 0:
        # Only passages that get cut are scored: a whole passage's sentences are never chosen.
        scored = [p for i, p in enumerate(passages) if i not in whole]
        flat = [s for p in scored for s in p.parts]
        sims = iter(similarity(question, flat) if flat else [])
        for p in scored:
            for j in range(len(p.parts)):
                p.score[j] += cfg.dense_weight * total * max(0.0, next(sims) - cfg.dense_floor)
    if _guesswork(passages, whole, total, cfg.whole_below):
        return Compressed(tuple(hits), before, before)
    used = sum(sum(passages[i].cost) for i in whole)

    def take(p: _Passage, j: int) -> bool:
        nonlocal used
        if j in p.keep:
            return True
        if used + p.cost[j] > budget:
            return False
        p.keep.add(j)
        used += p.cost[j]
        return True

    def take_with_neighbours(p: _Passage, j: int) -> None:
        if take(p, j):
            # A heading's neighbours are the lines under it: "3. ESCALATION TIMES" is
            # answered by what follows, not by the end of the section before.
            back = ahead = cfg.neighbours
            if _is_heading(p.parts[j]):
                back, ahead = 0, 2 * cfg.neighbours
            for d in range(1, max(back, ahead) + 1):
                for nb, wanted in ((j - d, d <= back), (j + d, d <= ahead)):
                    if wanted and 0 <= nb < len(p.parts):
                        take(p, nb)

    cut = [p for i, p in enumerate(passages) if i not in whole and p.parts]
    # Every passage first gets its best sentence (or its first, when nothing matches: a
    # paraphrased question can miss every word of the passage that answers it); the best
    # ranked passage, which holds the answer most often, gets its best three. The two best
    # passages get neighbours too, and so does a heading anywhere: alone it says nothing.
    for p in cut:
        order = sorted(range(len(p.parts)), key=lambda j: (-p.score[j], j))
        for j in order[: TOP_PASSAGE_SENTENCES if p.hit.rank == 1 else 1]:
            if p.hit.rank <= 2 or _is_heading(p.parts[j]):
                take_with_neighbours(p, j)  # a heading alone says nothing: its lines come too
            else:
                take(p, j)
    # Then the rest, best sentences first across passages.
    ranked = sorted(
        ((p.score[j] * _rank_weight(p.hit.rank), -p.hit.rank, -j, k, j)
         for k, p in enumerate(cut) for j in range(len(p.parts)) if p.score[j] > 0),
        reverse=True,
    )  # fmt: skip
    for _s, _r, _j, k, j in ranked:
        take_with_neighbours(cut[k], j)

    out: list[Hit] = []
    for i, p in enumerate(passages):
        if i in whole or not p.parts or len(p.keep) == len(p.parts):
            out.append(p.hit)
            continue
        if not p.keep:
            continue  # the budget ran out before this passage: leave it out
        text = _join(p.parts, sorted(p.keep))
        out.append(replace(p.hit, chunk=replace(p.hit.chunk, text=text)))
    if cfg.merge_documents:
        out = merge_documents(out)
    after = sum(estimate_tokens(h.chunk.text) for h in out)
    return Compressed(tuple(out), before, after)


def _guesswork(passages: Sequence[_Passage], whole: set[int], total: float, share: float) -> bool:
    """True when no sentence of the two best passages that would be cut scores ``share`` of the
    question's weight: nothing in them matches the question well, so which sentences hold the
    answer is a guess (a paraphrase: "get my clothes washed" answered by "Laundry")."""
    best = [
        max(p.score, default=0.0)
        for i, p in enumerate(passages)
        if i not in whole and p.hit.rank <= _SURE_RANKS
    ]
    return bool(best) and max(best) < share * total


def merge_documents(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per document, at its best passage's place, holding its passages in rank order.

    Every source prints its title and wrapper; passages of one document printed once each cost
    that again and again (about 20 tokens a source). The source keeps its best passage's
    heading; a passage under another heading than the one before it starts with that heading on
    a line of its own, and "…" marks a jump to a passage that does not follow the one before.
    Off by default (``context.merge_documents``): on dev it saved 24 prompt tokens (p50) but the
    small model's answers lost 2.8 points (5.5 in document order; README).
    """
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.chunk.doc_id, []).append(hit)
    out: list[Hit] = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        text = group[0].chunk.text
        for prev, cur in itertools.pairwise(group):
            c = cur.chunk
            follows = c.ordinal == prev.chunk.ordinal + 1
            marked = text.endswith(_GAP.strip()) or c.text.startswith(_GAP.strip())
            joint = "\n" if follows or marked else f"\n{_GAP.strip()}\n"
            head = f"{c.heading}:\n" if c.heading and c.heading != prev.chunk.heading else ""
            text += joint + head + c.text
        best = group[0]  # groups keep the retriever's order: the first is the best ranked
        out.append(replace(best, chunk=replace(best.chunk, text=text)))
    return out


def _named(hit: Hit) -> set[str]:
    """The terms of the passage's title and heading (printed above it in the prompt)."""
    return set(terms(f"{hit.chunk.title}\n{hit.chunk.heading}"))


def _without_title(parts: list[str], hit: Hit) -> list[str]:
    """The sentences, less an opening line that repeats the title or heading (shown anyway)."""
    names = {n.casefold() for n in (hit.chunk.title, hit.chunk.heading) if n}
    if parts and parts[0].casefold() in names:
        return parts[1:]
    return parts


def _is_heading(sentence: str) -> bool:
    """A short line without closing punctuation: a section title ("3. ESCALATION TIMES")."""
    return len(sentence) <= _HEADING_CHARS and not sentence.endswith((*_ENDS, ","))


def _join(parts: Sequence[str], kept: Sequence[int]) -> str:
    """Kept sentences in document order; "…" where sentences were left out."""
    text = _GAP.lstrip() if kept[0] > 0 else ""
    for a, b in zip(kept, [*kept[1:], None], strict=True):
        text += parts[a]
        if b is None:
            text += _GAP.rstrip() if a < len(parts) - 1 else ""
        else:
            text += "\n" if b == a + 1 else _GAP
    return text
