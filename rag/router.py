"""The router policy: keep the small model's draft, escalate, or abstain — from fitted models.

Two logistic models, both fitted on the ``dev`` split by ``rag eval fit-router``:

* **sufficiency** (rag/sufficiency.py): how likely the retrieved passages answer the question;
* **draft**: how likely keeping the small model's draft is right — its features are the
  sufficiency, the draft's lexical support in the passages it cites, its length, whether it
  cites, whether it declines ("the sources do not mention…"), and the model's own token
  log-probabilities when the provider returns them (unknown otherwise, never "confident"),
  and whether the draft's words come from the best-ranked passage.

Three outcomes, each with a plain sentence and the numbers behind it: keep the draft when
P(draft right) ≥ ``keep_threshold``; abstain when sufficiency < ``abstain_below`` and the draft
is unsupported, declines or states a number no passage holds (the large model cannot answer
those either), or whatever the sufficiency when almost none of the draft's words are in the
passages (``outside_below``: it answers from the model's own knowledge); otherwise escalate. A
draft with such a made-up number is never kept.
With sufficiency below ``skip_below`` the app abstains before drafting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from rag.citations import content_tokens, marker_spans, strip_markers
from rag.compress import HAS_NUMBER, WANTS_NUMBER, sentences
from rag.config import EscalationConfig, RouterConfig
from rag.escalation import Evidence, PolicyBase, SignalPolicy
from rag.sufficiency import predict, weight_share
from rag.text import chunk_text, clip
from rag.types import Decision, Hit, Source, Sufficiency, Usage

DRAFT_FEATURES = (
    "sufficiency",
    "coverage_idf",
    "support",
    "chars",
    "cited",
    "declines",
    "declines_suff",
    "marker_first",
    "logprob_mean",
    "logprob_min",
    "title_share",
    "new_share",
    "number_missing",
    "cites_top",
    "answer_match",
)
_COVER = "the documents do not seem to cover this"
_QUOTE = 160  # characters of a withheld answer quoted in the reason


def draft_text_features(
    question: str | None,
    sources: Sequence[Source],
    draft: str,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float | None]:
    """What the draft's words say about it, beyond their support in the passages.

    * ``title_share``: share of the draft's content words found only in the titles and
      headings of the sources, not in their text — small models paste "Guide › 3. Setup"
      instead of answering, and such a draft is "supported" word for word;
    * ``new_share``: share of its content words the question does not hold — an answer adds
      something, a draft that restates the question does not (None without the question);
    * ``number_missing``: 1 when the question asks for a number (how long, when, how many…)
      and the draft holds no digit;
    * ``answer_match``: the share of the question's IDF weight (``weights``) held by the
      passage sentence the draft's words come from (most of them; a tie goes to the sentence
      that matches the question better), 0 when no sentence shares a word with the draft. A
      near miss is answered with a fact from a sentence about something else ("Joost's phone
      number is 09:30"): the draft is supported, by the wrong sentence. On dev, AUC 0.73 right
      vs wrong among answerable drafts, the best single draft signal (None without weights).
    """
    words = set(content_tokens(draft))
    body: set[str] = set()
    heads: set[str] = set()
    for s in sources:
        body.update(content_tokens(s.chunk.text))
        heads.update(content_tokens(f"{s.chunk.title} {s.chunk.heading}"))
    title_only = {w for w in words if w in heads and w not in body}
    feats: dict[str, float | None] = {
        "title_share": len(title_only) / len(words) if words else 0.0,
        "new_share": None,
        "number_missing": None,
    }
    if question is not None:
        asked = set(content_tokens(question))
        feats["new_share"] = len(words - asked) / len(words) if words else 0.0
        wants = bool(WANTS_NUMBER.search(question))
        feats["number_missing"] = 1.0 if wants and not HAS_NUMBER.search(draft) else 0.0
    feats["answer_match"] = None if weights is None else answer_match(words, sources, weights)
    return feats


def answer_match(words: set[str], sources: Sequence[Source], weights: Mapping[str, float]) -> float:
    """The question's share (IDF) in the sentence that holds most of the draft's ``words``."""
    total = sum(weights.values())
    if not words or total <= 0:
        return 0.0
    best: tuple[int, float] = (0, 0.0)
    for s in sources:
        for sentence in sentences(s.chunk.text):
            shared = len(words & set(content_tokens(sentence)))
            best = max(best, (shared, weight_share(sentence, weights, total)))
    return best[1] if best[0] else 0.0


_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        (
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
            "seventeen", "eighteen", "nineteen", "twenty",
        )
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90"}  # fmt: skip
_WORD = re.compile(r"[a-z]+")


def _digits(text: str) -> list[tuple[str, str]]:
    """Each number written in digits in ``text``: (as written, less thousands commas; normalised).

    Normalised: "1,870" = "1870", "09:30" = "9.30".
    """
    out = []
    for raw in _NUMBER.findall(_THOUSANDS.sub("", text)):
        out.append((raw, ".".join(p.lstrip("0") or "0" for p in re.split(r"[.,:]", raw))))
    return out


def _numbers(text: str) -> set[str]:
    """The normalised numbers of ``text``, number words included ("two" = "2")."""
    found = {norm for _raw, norm in _digits(text)}
    found.update(_NUMBER_WORDS[w] for w in _WORD.findall(text.casefold()) if w in _NUMBER_WORDS)
    return found


# What an answer writes that states no number: a source tag it echoes (<source n="2">), and
# the item numbers of a list it makes ("steps: 1. Log in. 2. Open …").
_SOURCE_TAG = re.compile(r"</?source\b[^>]*>", re.IGNORECASE)
_LIST_ITEM = re.compile(r"(?:^|(?<=[\s:(]))(\d{1,2})[.)](?=\s)", re.MULTILINE)


def _stated(text: str) -> str:
    """``text`` less its source tags and the item numbers of a list in it.

    A list is a run of items numbered 1, 2, 3… in order; a lone "1." (or "5." ending a
    sentence) is a number.
    """
    text = _SOURCE_TAG.sub(" ", text)
    items, expect = [], 1
    for m in _LIST_ITEM.finditer(text):
        if int(m.group(1)) == expect:
            items.append(m.span())
            expect += 1
    if expect <= 2:
        return text
    for start, end in reversed(items):
        text = text[:start] + " " + text[end:]
    return text


# Words that say the answer computed a number from another one ("twice the weekly working hours
# … which is 80 hours"): with one of them in the answer, that multiple of a known number is
# not made up. "N times" takes the number before it.
_MULTIPLIERS = {
    "twice": 2.0, "double": 2.0, "doubled": 2.0, "triple": 3.0, "tripled": 3.0,
    "half": 0.5, "halved": 0.5, "quarter": 0.25,
}  # fmt: skip
_TIMES = re.compile(r"\b(\d+|[a-z]+) times\b")


def _factors(text: str) -> set[float]:
    """The multipliers ``text`` names: "twice" = 2, "half" = 0.5, "three times" = 3."""
    low = text.casefold()
    found = {_MULTIPLIERS[w] for w in _WORD.findall(low) if w in _MULTIPLIERS}
    for n in _TIMES.findall(low):
        k = n if n.isdigit() else _NUMBER_WORDS.get(n)
        if k and int(k) > 1:
            found.add(float(k))
    return found


def _multiples(known: set[str], factors: set[float]) -> set[str]:
    """``known``'s plain numbers times each factor, normalised as ``_digits`` writes them."""
    out: set[str] = set()
    for norm in known:
        if norm.count(".") > 1:
            continue  # a version or a date, not a quantity
        for k in factors:
            value = float(norm) * k
            out.add(str(int(value)) if value.is_integer() else f"{value:g}")
    return out


def _read(question: str | None, sources: Sequence[Source]) -> list[str]:
    """What the model read: the question and every passage (title and heading included)."""
    return [question or "", *(chunk_text(s.chunk) for s in sources)]


def _known_numbers(texts: Sequence[str]) -> set[str]:
    """Every normalised number of ``texts`` (``_numbers``)."""
    return set().union(*(_numbers(t) for t in texts))


def made_up_numbers(question: str | None, sources: Sequence[Source], draft: str) -> list[str]:
    """Numbers the draft (or answer) states that neither the question nor any passage holds.

    Asked what the passages do not say, a 0.5B model answers with a number of its own
    ("Kubernetes 1.20", "Kafka 2.13.0"): a number that is in no passage is not from them.
    On dev, 5 of the 48 unanswerable questions' drafts held one and none of the 105
    answerable questions' drafts did. The large model does the same ("2 engineers work in
    the Payments team"): see ``RouterPolicy.after_answer``. A multiple of a known number is
    known when the answer names the multiplier ("twice the 40 weekly hours, 80 hours"). In
    order of appearance.
    """
    known = _known_numbers(_read(question, sources))
    stated = _stated(draft)
    known |= _multiples(known, _factors(stated))
    out: list[str] = []
    for raw, norm in _digits(stated):
        if norm not in known and raw not in out:
            out.append(raw)
    return out


# An e-mail, web or host address the answer gives must be one the passages (or the question)
# give: asked for a contact the documents do not name, the large model writes a plausible one
# ("Femke.dewit@kestrelledger.com").
_ADDRESS = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://[^\s)\]>\"'`]+"
    r"|\b(?:[\w-]+\.)+(?:com|org|net|io|dev|app|eu|nl|pt|de|uk|local|internal)\b(?:/[^\s)\]>\"'`]*)?",
    re.IGNORECASE,
)


def made_up_addresses(question: str | None, sources: Sequence[Source], answer: str) -> list[str]:
    """E-mail, web and host addresses ``answer`` gives that no passage (or the question) holds.

    On the 213 dev questions the answers of both models gave 13 addresses: 12 were in the
    passages (9 of them in right answers) and one was made up, an e-mail address for a
    person whose address the documents do not give (an unanswerable question). In order of
    appearance, compared without case.
    """
    known = "\n".join(_read(question, sources)).casefold()
    out: list[str] = []
    for found in _ADDRESS.findall(answer):
        address = _unknown_address(found, known)
        if address and address not in out:
            out.append(address)
    return out


def _unknown_address(found: str, known: str) -> str | None:
    """``found`` less trailing punctuation when ``known`` (case-folded text) lacks it, else None."""
    address = found.rstrip(".,;:!?")
    return None if address.casefold() in known else address


# Answer typing: a question that asks for a phone number, an e-mail address, a web address or
# a port is answered only by text that holds one. "Joost Verhoeven's phone number is in
# PagerDuty" (or "… is 09:30") does not answer it, whatever its support.
_ASKED: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = (
    (
        "a phone number",
        re.compile(r"\b(phone|telephone) number\b|\bnumber (to|should I|do I) call\b", re.I),
        # eight digits or more, or an international "+" and seven: a postcode ("1200-066
        # Lisboa", seven digits) or a time is not a phone number
        re.compile(r"\+\d(?:[ ()./-]*\d){6,}|\d(?:[ ()./-]*\d){7,}"),
    ),
    (
        "an e-mail address",
        re.compile(r"\be-?mail address\b|\bmail address\b|\b(which|what)\b[^?]*\bmailbox\b", re.I),
        re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),
    ),
    (
        "a web address",
        # "url", or a question that ends in the site it asks for ("…documentation website?")
        re.compile(r"\burls?\b|\bweb address\b|\b(website|web site|web page)\W*$", re.I),
        re.compile(
            r"https?://\S+|\b[\w-]+(\.[\w-]+)*\.(com|org|net|io|dev|app|eu|nl|pt|de|uk|local|internal)\b",
            re.I,
        ),
    ),
    (
        "a port",
        re.compile(r"\b(which|what) port\b|\bport number\b|\bon which port\b", re.I),
        re.compile(r"\b\d{2,5}\b"),
    ),
)


def missing_kind(question: str | None, answer: str) -> str | None:
    """What the question asks for ("a phone number") that ``answer`` does not hold, or None.

    On the 213 dev questions 8 ask for one of these kinds (4 of them unanswerable). Of the
    dev answers that lacked the asked kind, none was right: 5 of the 0.5B model's drafts and
    2 of the 1.5B model's answers, both to unanswerable questions.
    """
    for kind, asks, holds in _ASKED:
        if question and asks.search(question) and not holds.search(answer):
            return kind
    return None


# The end of a stream may be the start of a number ("1,6" of "1,600"), a marker ("[1, ") or a
# source tag: it is judged when the next piece completes it.
_UNFINISHED = re.compile(r"(?:\[[\d\s,]*|</?source[^>]*|\d+(?:[.,:]\d+)*[.,:]?)$", re.IGNORECASE)


class NumberGate:
    """Streams an answer, holding back everything from the first number or address no passage
    holds.

    The answer check (``RouterPolicy.after_answer``) reads the whole answer once it is
    complete; streamed as it comes, a made-up number or e-mail address would be on screen
    before the abstention replaced it. Through the gate it never shows: ``feed`` returns what
    may be shown now, whole words only (an address or a number is judged when its word ends),
    and ``rest`` what was held back, to show once the check has kept the answer. Citation
    markers and source tags are not numbers; a list item number the check would accept ("1.")
    may hold the rest back until the end, which only delays it.
    """

    def __init__(self, question: str | None, sources: Sequence[Source]) -> None:
        texts = _read(question, sources)
        self._known = _known_numbers(texts)
        self._known_text = "\n".join(texts).casefold()
        self._text = ""
        self._shown = 0
        self._held = False

    @property
    def holding(self) -> bool:
        """True once a number or an address no passage holds has been held back."""
        return self._held

    def feed(self, piece: str) -> str:
        """Take the next piece of the answer; return the text that may be shown now."""
        self._text += piece
        if self._held:
            return ""
        # whole words only, and not a marker or source tag still open at the end
        limit = max(self._text.rfind(" "), self._text.rfind("\n")) + 1
        unfinished = _UNFINISHED.search(self._text, 0, limit)
        if unfinished:
            limit = unfinished.start()
        if limit <= self._shown:
            return ""
        text = self._text[:limit]
        skip = [*marker_spans(text), *(m.span() for m in _SOURCE_TAG.finditer(text))]
        known = self._known | _multiples(self._known, _factors(text))
        bad = [
            m.start()
            for m in _NUMBER.finditer(text, self._shown)
            if not any(a <= m.start() < b for a, b in skip)
            and any(norm not in known for _raw, norm in _digits(m.group()))
        ]
        bad += [
            m.start()
            for m in _ADDRESS.finditer(text, self._shown)
            if _unknown_address(m.group(), self._known_text)
        ]
        if bad:
            self._held = True
            limit = min(bad)
        out = self._text[self._shown : limit]
        self._shown = limit
        return out

    def rest(self) -> str:
        """What was held back (all of it, once the stream has ended)."""
        out = self._text[self._shown :]
        self._shown = len(self._text)
        return out


def unsupported(signals: Mapping[str, Any], min_support: float) -> bool:
    """The draft is not backed by the passages: it declines, states a number none holds, or
    too few of its words are in the passage it cites (the router's signals, live or recorded)."""
    return (
        bool(signals.get("evasive"))
        or bool(signals.get("made_up_numbers"))
        or bool(signals.get("made_up_addresses"))
        or float(signals.get("support") or 0.0) < min_support
    )


# A draft needs this many content words before its support can say it came from elsewhere:
# "Yes." holds none and "Paris." one.
_OUTSIDE_MIN_WORDS = 2


def from_outside(signals: Mapping[str, Any], draft: str, below: float) -> bool:
    """True when the draft answers (does not decline) with words the passages almost all lack:
    its ``support`` (the share of its content words in the passages it cites, or in all of
    them when it cites none) is below ``below``, and it has two content words or more."""
    return (
        below > 0
        and not signals.get("evasive")
        and len(set(content_tokens(draft))) >= _OUTSIDE_MIN_WORDS
        and float(signals.get("support") or 0.0) < below
    )


def draft_features(
    signals: dict[str, Any],
    sufficiency: Sufficiency | None,
    usage: Usage | None,
    text: dict[str, float | None] | None = None,
) -> dict[str, float | None]:
    """Router features of a draft from the hand-set signal values, its usage and its words."""
    feats = sufficiency.features if sufficiency else {}
    text = text or {}
    return {
        "sufficiency": sufficiency.probability if sufficiency else None,
        "coverage_idf": feats.get("coverage_idf"),
        "support": float(signals.get("support", 0.0)),
        "chars": math.log1p(float(signals.get("chars", 0))),
        "cited": 1.0 if signals.get("markers") and not signals.get("unknown_markers") else 0.0,
        "declines": 1.0 if signals.get("evasive") else 0.0,
        "declines_suff": (1.0 if signals.get("evasive") else 0.0)
        * (sufficiency.probability or 0.0 if sufficiency else 0.0),
        "marker_first": 1.0 if "marker_first" in signals.get("flags", ()) else 0.0,
        "logprob_mean": usage.logprob_mean if usage else None,
        "logprob_min": usage.logprob_min if usage else None,
        "title_share": text.get("title_share"),
        "new_share": text.get("new_share"),
        "number_missing": text.get("number_missing"),
        # The app cites each sentence to the passage holding most of its words; a draft
        # taken from a lower-ranked passage is wrong more often (the best-ranked one holds
        # the answer most often): 5-fold CV on dev drafts, AUC 0.69 -> 0.72 with it.
        "cites_top": 1.0 if 1 in (signals.get("markers") or ()) else 0.0,
        "answer_match": text.get("answer_match"),
    }


class RouterPolicy(PolicyBase):
    """Keep / escalate / abstain from the fitted sufficiency and draft models."""

    name: str = "router"

    def __init__(self, cfg: EscalationConfig) -> None:
        super().__init__(cfg)
        self.router: RouterConfig = cfg.router
        self.signals = SignalPolicy(cfg)  # the hand-set signals are the router's inputs

    def before_draft(
        self, retriever: str, hits: Sequence[Hit], **evidence: Unpack[Evidence]
    ) -> Decision:
        """Abstain without drafting when the context almost surely does not hold the answer."""
        sufficiency = evidence.get("sufficiency")
        signals: dict[str, Any] = {"retriever": retriever, "hits": len(hits)}
        if sufficiency is None or sufficiency.probability is None:
            return Decision(False, "before", "context not scored", signals)
        p = sufficiency.probability
        signals.update(sufficiency=p, **{f"ctx_{k}": v for k, v in sufficiency.features.items()})
        limit = self.router.skip_below
        if not hits or p < limit:
            found = "no passages were found" if not hits else sufficiency.describe()
            reason = (
                f"abstained before drafting: context sufficiency {p:.2f} is below {limit:.2f} "
                f"({found}) — {_COVER}"
            )
            return Decision(False, "before", reason, signals, abstain=True)
        return Decision(False, "before", f"context ok: {sufficiency.describe()}", signals)

    def after_draft(
        self, retriever: str, sources: Sequence[Source], draft: str, **evidence: Unpack[Evidence]
    ) -> Decision:
        """Keep, escalate or abstain on P(draft right) and the context sufficiency."""
        sufficiency, usage = evidence.get("sufficiency"), evidence.get("usage")
        base = self.signals.after_draft(retriever, sources, draft)
        plain = strip_markers(draft)
        text = draft_text_features(
            evidence.get("question"), sources, plain, evidence.get("weights")
        )
        feats = draft_features(base.signals, sufficiency, usage, text)
        p_right = predict(feats, self.router.draft)
        suff = sufficiency.probability if sufficiency else None
        ctx_feats = {
            f"ctx_{k}": v for k, v in (sufficiency.features if sufficiency else {}).items()
        }
        numbers = made_up_numbers(evidence.get("question"), sources, plain)
        addresses = made_up_addresses(evidence.get("question"), sources, plain)
        made_up = numbers + addresses
        missing = missing_kind(evidence.get("question"), plain)
        signals: dict[str, Any] = {
            **base.signals,
            **ctx_feats,
            **feats,
            "made_up_numbers": numbers,
            "made_up_addresses": addresses,
            "missing_kind": missing,
            "p_draft_right": p_right,
        }
        keep = self.router.keep_threshold
        declines = bool(feats["declines"])
        backed = not unsupported(signals, self.cfg.min_support)
        if declines:
            why_draft = f'the draft says "{base.signals.get("evasive")}"'
        elif made_up:
            why_draft = f"the draft states {', '.join(made_up)}, which no passage holds"
        elif missing:
            why_draft = f"the question asks for {missing} and the draft gives none"
        else:
            why_draft = f"draft support {feats['support']:.2f}"
        ctx = f"context sufficiency {suff:.2f}" if suff is not None else "context not scored"
        if suff is not None and suff < self.router.abstain_below and not backed:
            reason = (
                f"abstained: {ctx} is below {self.router.abstain_below:.2f} and {why_draft} "
                f"(the draft is not backed by the passages) — {_COVER}"
            )
            return Decision(False, "after", reason, signals, abstain=True)
        if from_outside(signals, plain, self.router.outside_below):
            reason = (
                f"abstained: only {feats['support']:.0%} of the draft's words are in the "
                f"passages (below {self.router.outside_below:.0%}): the model answered from "
                f"its own knowledge, not from the documents ({ctx}) — {_COVER}"
            )
            return Decision(False, "after", reason, signals, abstain=True)
        if p_right >= keep and not made_up and not missing:
            reason = (
                f"kept the draft: the router puts the chance it is right at {p_right:.2f} "
                f"(≥ {keep:.2f}); {ctx}, {why_draft}"
            )
            return Decision(False, "after", reason, signals)
        if p_right >= keep:  # kept on its chance, but a made-up number or not the kind asked
            reason = f"escalated: {why_draft} (the router puts its chance at {p_right:.2f}; {ctx})"
        else:
            reason = (
                f"escalated: the router puts the chance the draft is right at {p_right:.2f}, "
                f"below {keep:.2f} ({ctx}, {why_draft})"
            )
        return Decision(True, "after", reason, signals)

    def answer_gate(self, question: str, passages: Sequence[Source]) -> NumberGate:
        """Hold back a number or address ``after_answer`` would reject, so it never shows."""
        return NumberGate(question, passages)

    def after_answer(
        self, retriever: str, hits: Sequence[Hit], answer: str, **evidence: Unpack[Evidence]
    ) -> Decision:
        """Abstain when the large model's answer states a number that no passage holds.

        Escalated questions the documents do not answer get a number of the large model's own
        as well ("There are 2 engineers working in the Payments team."). On the 213 dev
        questions its answer held one for 13 of the 68 unanswerable and none of the 145
        answerable (list item numbers and echoed source tags aside). ``passages`` in the
        evidence are the sources the model read; without them the numbers are not checked.
        So is an e-mail or web address no passage holds (``made_up_addresses``), and an answer
        that does not give the kind the question asks for (``missing_kind``: a phone number,
        an e-mail or web address, a port).
        """
        passages = evidence.get("passages")
        plain = strip_markers(answer)
        question = evidence.get("question")
        numbers = made_up_numbers(question, passages, plain) if passages else []
        addresses = made_up_addresses(question, passages, plain) if passages else []
        made_up = numbers + addresses
        missing = missing_kind(question, plain)
        signals: dict[str, Any] = {
            "retriever": retriever,
            "made_up_numbers": numbers,
            "made_up_addresses": addresses,
            "missing_kind": missing,
        }
        said = clip(" ".join(plain.split()), _QUOTE)
        if made_up:
            reason = (
                f"abstained: the large model's answer states {', '.join(made_up)}, which no "
                f'passage holds ("{said}") — {_COVER}'
            )
            return Decision(False, "after", reason, signals, abstain=True)
        if missing:
            reason = (
                f"abstained: the question asks for {missing} and the large model's answer "
                f'gives none ("{said}") — {_COVER}'
            )
            return Decision(False, "after", reason, signals, abstain=True)
        return Decision(False, "after", "kept the large model's answer", signals)
