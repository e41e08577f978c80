"""When the small model's draft goes to the large model, and when the app abstains.

Every Decision carries the signal values behind it and a sentence a person understands,
e.g. "escalated before drafting: top bm25 score 3.1 is below 5.0 (weak context)".
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypedDict, Unpack

from rag.citations import find_markers, is_citation_only, strip_markers, support_score
from rag.config import EscalationConfig, per_retriever
from rag.errors import ConfigError
from rag.text import chunk_text
from rag.types import Decision, Hit, Source, Sufficiency, Usage

_COVER = "the documents do not seem to cover this"


class EscalationPolicy(Protocol):
    """Decide, from cheap signals, whether to escalate to the large model or abstain.

    The assistant asks at up to three points:

    * ``before_draft`` right after retrieval. Weak context either abstains (the app says the
      documents do not cover the question, without trusting a small model to refuse) or
      escalates straight to the large model, skipping the draft and its latency, depending
      on ``on_weak_context``.
    * ``after_draft`` once the small model has drafted from the numbered sources: escalate
      when the draft is short, evasive, uncited, only a marker, unsupported by the passages
      it cites, or the context is ambiguous.
    * ``after_answer`` when the large model answered because context was weak and
      ``on_weak_context`` is "escalate": abstain if that answer is still evasive or
      unsupported. The router judges every escalated answer here (made-up numbers and
      addresses, the asked kind missing).

    While that answer streams, ``answer_gate`` may hold back what ``after_answer`` would
    reject, so it never shows before the verdict (None: the answer streams as it comes).

    Scores are only comparable within one retriever, so every method takes the retriever's
    name to pick its threshold. Methods are pure: same inputs, same Decision. ``signals``
    always holds the measured values, ``reason`` names each firing signal with its value
    and threshold.
    """

    name: str

    def before_draft(
        self, retriever: str, hits: Sequence[Hit], **evidence: Unpack[Evidence]
    ) -> Decision: ...

    def after_draft(
        self, retriever: str, sources: Sequence[Source], draft: str, **evidence: Unpack[Evidence]
    ) -> Decision: ...

    def after_answer(
        self, retriever: str, hits: Sequence[Hit], answer: str, **evidence: Unpack[Evidence]
    ) -> Decision: ...

    def answer_gate(self, question: str, passages: Sequence[Source]) -> AnswerGate | None: ...


class AnswerGate(Protocol):
    """What of the large model's answer may be shown while it streams, before
    ``after_answer`` has judged it: ``feed`` returns the part of each piece to show now,
    ``rest`` what was held back (shown once the answer is kept, dropped if it is not)."""

    def feed(self, piece: str) -> str: ...

    def rest(self) -> str: ...


class Evidence(TypedDict, total=False):
    """What a policy may weigh beyond the passages and the text; a policy reads what it needs.

    ``sufficiency``: the context's scored sufficiency (None: not scored). ``usage``: the draft's
    call record, with the model's token log-probabilities when the provider returns them.
    ``question``: what was asked (the router compares the draft with it). ``passages``: the
    sources the large model read, as packed into its prompt (the router checks its answer's
    numbers against them). ``weights``: the question's terms and their IDF in the index in use
    (the router finds which passage sentence the draft comes from and how well it matches).
    """

    sufficiency: Sufficiency | None
    usage: Usage | None
    question: str
    passages: Sequence[Source]
    weights: Mapping[str, float]


class PolicyBase:
    """What every policy shares: its config, and ``from_config`` for the registry."""

    def __init__(self, cfg: EscalationConfig) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: EscalationConfig) -> Self:
        """A policy with the thresholds, patterns and fitted parameters of ``cfg``."""
        return cls(cfg)

    def after_answer(
        self, retriever: str, hits: Sequence[Hit], answer: str, **evidence: Unpack[Evidence]
    ) -> Decision:
        """Keep the large model's answer: a policy that does not judge it shows it as it is."""
        return Decision(False, "after", "kept the large model's answer", {"retriever": retriever})

    def answer_gate(self, question: str, passages: Sequence[Source]) -> AnswerGate | None:
        """None: a policy that does not judge the answer's words lets it stream as it comes."""
        return None


@dataclass(frozen=True)
class _Context:
    """The retrieval signals: top score, the margin to the next one, the threshold."""

    retriever: str
    count: int
    top: float | None
    second: float | None
    threshold: float | None

    @property
    def margin(self) -> float | None:
        if self.top is None or self.second is None:
            return None
        return self.top - self.second

    @property
    def weak(self) -> bool:
        if self.top is None:
            return True
        return self.threshold is not None and self.top < self.threshold

    def signals(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever,
            "hits": self.count,
            "top_score": self.top,
            "second_score": self.second,
            "margin": self.margin,
            "threshold": self.threshold,
            "weak_context": self.weak,
        }

    def describe(self) -> str:
        """Why the context is weak, e.g. "top bm25 score 3.1 is below 5.0"."""
        if self.top is None:
            return f"the {self.retriever} retriever found no passages"
        if self.threshold is None:
            return f"top {self.retriever} score {_fmt(self.top)}"
        top, threshold = _fmt_pair(self.top, self.threshold)
        relation = "is below" if self.top < self.threshold else "≥"
        return f"top {self.retriever} score {top} {relation} {threshold}"

    def ok_reason(self) -> str:
        """Why context that is not weak passed, and how to set a threshold when none is set."""
        reason = f"context ok: {self.describe()}"
        if self.threshold is None:
            reason += (
                f"; no weak-context threshold is set for {self.retriever!r}, so context is never "
                f"judged weak (set escalation.weak_context.{self.retriever} in rag.yaml)"
            )
        return reason


class SignalPolicy(PolicyBase):
    """Escalate or abstain on thresholded signals from retrieval and the draft."""

    name: str = "signals"

    def __init__(self, cfg: EscalationConfig) -> None:
        super().__init__(cfg)
        self._evasive: list[re.Pattern[str]] = []
        for pattern in cfg.evasive_patterns:
            try:
                self._evasive.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(
                    f"escalation.evasive_patterns: {pattern!r} is not a valid regular "
                    f"expression ({exc}); fix or remove it in rag.yaml"
                ) from None

    def before_draft(
        self, retriever: str, hits: Sequence[Hit], **evidence: Unpack[Evidence]
    ) -> Decision:
        """Abstain or escalate without drafting when the context is weak; else go on."""
        scores = sorted((hit.score for hit in hits), reverse=True)
        ctx = self._context(retriever, scores)
        signals = ctx.signals()
        if ctx.weak:
            if self.cfg.on_weak_context == "abstain":
                reason = f"abstained: {ctx.describe()} (weak context) — {_COVER}"
                return Decision(False, "before", reason, signals, abstain=True)
            reason = f"escalated before drafting: {ctx.describe()} (weak context)"
            return Decision(True, "before", reason, signals)
        return Decision(False, "before", ctx.ok_reason(), signals)

    def after_draft(
        self, retriever: str, sources: Sequence[Source], draft: str, **evidence: Unpack[Evidence]
    ) -> Decision:
        """Escalate when any draft signal fires; the reason lists each one that did."""
        cfg = self.cfg
        chars = len(strip_markers(draft).strip())
        evasive = self.evasive_match(draft)
        markers = find_markers(draft)
        known = sorted({source.n for source in sources})
        unknown = [n for n in markers if n not in known]
        citation_only = is_citation_only(draft)
        cited = [source for source in sources if source.n in markers]
        support = support_score(draft, [_passage(s.hit) for s in cited or sources])
        scores = sorted((source.hit.score for source in sources), reverse=True)
        ctx = self._context(retriever, scores)
        min_margin = per_retriever(cfg.min_margin, retriever) or 0.0
        margin = ctx.margin

        parts: dict[str, str] = {}
        if chars < cfg.min_draft_chars:
            parts["short"] = (
                f"draft is {chars} characters, below {cfg.min_draft_chars} (short draft)"
            )
        if evasive is not None:
            parts["evasive"] = f'draft says "{evasive}" (evasive draft)'
        if not markers:
            listed = f"sources {_fmt_numbers(known)}" if known else "numbered sources"
            parts["uncited"] = f"draft cites none of the {listed} (uncited draft)"
        elif unknown:
            if not known:
                retrieved = "no sources were retrieved"
            else:
                verb = "was" if len(known) == 1 else "were"
                retrieved = f"only {_fmt_numbers(known)} {verb} retrieved"
            parts["uncited"] = (
                f"draft cites {_fmt_numbers(unknown)} but {retrieved} (uncited draft)"
            )
        if citation_only:
            parts["citation_only"] = f'draft is nothing but "{draft.strip()}" (citation-only draft)'
        elif cfg.marker_first and _MARKER_FIRST.match(draft):
            # The prompt asks for the sentence, then its citation; small models that lead with
            # "[1]" are pasting source fragments rather than answering.
            parts["marker_first"] = (
                "draft starts with a citation instead of an answer (misformatted draft)"
            )
        if support < cfg.min_support:
            where = "cited" if cited else "retrieved"
            shown, limit = _fmt_pair(support, cfg.min_support)
            parts["unsupported"] = (
                f"only {shown} of the draft's content words appear in the {where} passages, "
                f"below {limit} (unsupported draft)"
            )
        if min_margin > 0 and margin is not None and margin < min_margin:
            shown, limit = _fmt_pair(margin, min_margin)
            parts["ambiguous"] = (
                f"top two {retriever} scores differ by {shown}, below {limit} (ambiguous context)"
            )

        signals: dict[str, Any] = {
            **ctx.signals(),
            "chars": chars,
            "min_draft_chars": cfg.min_draft_chars,
            "evasive": evasive,
            "markers": markers,
            "unknown_markers": unknown,
            "citation_only": citation_only,
            "support": support,
            "min_support": cfg.min_support,
            "min_margin": min_margin,
            "flags": list(parts),
        }
        if parts:
            return Decision(True, "after", "escalated: " + "; ".join(parts.values()), signals)
        shown, limit = _fmt_pair(support, cfg.min_support)
        reason = (
            f"kept the draft: {chars} characters, cites {_fmt_numbers(markers, ranges=False)}, "
            f"support {shown} ≥ {limit}"
        )
        return Decision(False, "after", reason, signals)

    def after_answer(
        self, retriever: str, hits: Sequence[Hit], answer: str, **evidence: Unpack[Evidence]
    ) -> Decision:
        """Abstain when context is weak and the large model's answer is evasive or unsupported.

        Support is measured against every hit's passage: the hits carry no source numbers.
        """
        scores = sorted((hit.score for hit in hits), reverse=True)
        ctx = self._context(retriever, scores)
        evasive = self.evasive_match(answer)
        support = support_score(answer, [_passage(hit) for hit in hits])
        parts: dict[str, str] = {}
        if evasive is not None:
            parts["evasive"] = f'the answer says "{evasive}" (evasive answer)'
        if support < self.cfg.min_support:
            shown, limit = _fmt_pair(support, self.cfg.min_support)
            parts["unsupported"] = (
                f"only {shown} of its content words appear in the retrieved passages, "
                f"below {limit} (unsupported answer)"
            )
        signals: dict[str, Any] = {
            **ctx.signals(),
            "chars": len(strip_markers(answer).strip()),
            "evasive": evasive,
            "support": support,
            "min_support": self.cfg.min_support,
            "flags": (["weak_context"] if ctx.weak else []) + list(parts),
        }
        if not ctx.weak:
            return Decision(
                False, "after", f"kept the answer: context ok ({ctx.describe()})", signals
            )
        if parts:
            reason = (
                f"abstained: {ctx.describe()} (weak context) and "
                f"{' and '.join(parts.values())} — {_COVER}"
            )
            return Decision(False, "after", reason, signals, abstain=True)
        shown, limit = _fmt_pair(support, self.cfg.min_support)
        reason = (
            f"kept the answer despite weak context ({ctx.describe()}): it is not evasive "
            f"and its support {shown} ≥ {limit}"
        )
        return Decision(False, "after", reason, signals)

    def _context(self, retriever: str, scores: Sequence[float]) -> _Context:
        return _Context(
            retriever=retriever,
            count=len(scores),
            top=scores[0] if scores else None,
            second=scores[1] if len(scores) > 1 else None,
            threshold=per_retriever(self.cfg.weak_context, retriever),
        )

    def evasive_match(self, text: str) -> str | None:
        for pattern in self._evasive:
            match = pattern.search(text)
            if match:
                return match.group(0)
        return None


def _router(cfg: EscalationConfig) -> EscalationPolicy:
    from rag.router import RouterPolicy  # the router builds on SignalPolicy: import it lazily

    return RouterPolicy.from_config(cfg)


POLICIES: dict[str, Callable[[EscalationConfig], EscalationPolicy]] = {
    "router": _router,
    "signals": SignalPolicy.from_config,
}


def build_policy(cfg: EscalationConfig) -> EscalationPolicy:
    """The policy named by ``cfg.policy``."""
    try:
        factory = POLICIES[cfg.policy]
    except KeyError:
        raise ConfigError(
            f"escalation.policy {cfg.policy!r} is unknown; choose from {', '.join(POLICIES)}"
        ) from None
    return factory(cfg)


_MARKER_FIRST = re.compile(r"^\s*\[\d+(?:\s*,\s*\d+)*\]")


def suggest_threshold(
    answerable: Sequence[float], impossible: Sequence[float]
) -> tuple[float, float]:
    """The weak-context threshold t maximising balanced accuracy of "score < t ⇒ impossible".

    Candidates are the midpoints between adjacent distinct scores, plus the lowest score
    (a threshold that never fires, balanced accuracy 0.5) so that a signal that does not
    separate the two sets is not forced on. Ties go to the lowest threshold: it abstains
    least. Returns (threshold, balanced_accuracy). Raises ValueError when a list is empty
    or a score is not finite.
    """
    if not answerable:
        raise ValueError("suggest_threshold needs answerable scores: the answerable list is empty")
    if not impossible:
        raise ValueError("suggest_threshold needs impossible scores: the impossible list is empty")
    for label, values in (("answerable", answerable), ("impossible", impossible)):
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{label} scores must be finite numbers; got {bad[0]!r}")
    distinct = sorted(set(answerable) | set(impossible))
    candidates = [distinct[0]] + [(a + b) / 2 for a, b in itertools.pairwise(distinct)]
    best_t, best_acc = candidates[0], -1.0
    for t in candidates:
        caught = sum(1 for s in impossible if s < t) / len(impossible)
        kept = sum(1 for s in answerable if s >= t) / len(answerable)
        acc = (caught + kept) / 2
        if acc > best_acc:
            best_t, best_acc = t, acc
    return best_t, best_acc


def _passage(hit: Hit) -> str:
    """What the model saw of a hit: title and heading count as support as well as the text."""
    return chunk_text(hit.chunk)


def _fmt(x: float, digits: int = 2) -> str:
    """A score for people: "3.1", "5.0", "0.35"."""
    text = f"{x:.{digits}f}"
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    return text


def _fmt_pair(value: float, limit: float) -> tuple[str, str]:
    """Both numbers, with enough digits that different numbers never print the same."""
    for digits in range(2, 7):
        shown, bound = _fmt(value, digits), _fmt(limit, digits)
        if shown != bound or value == limit:
            break
    return shown, bound


def _fmt_numbers(numbers: Sequence[int], *, ranges: bool = True) -> str:
    """Source numbers as markers: "[1]–[3]" for a run of three or more, else "[1], [4]"."""
    if not numbers:
        return "nothing"
    if ranges and len(numbers) >= 3 and list(numbers) == list(range(numbers[0], numbers[-1] + 1)):
        return f"[{numbers[0]}]–[{numbers[-1]}]"
    return ", ".join(f"[{n}]" for n in numbers)
