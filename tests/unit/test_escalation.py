"""The signal escalation policy: each signal, its threshold edges, the reasons, the registry."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

import pytest

from rag.config import EscalationConfig
from rag.errors import ConfigError
from rag.escalation import POLICIES, EscalationPolicy, SignalPolicy, build_policy, suggest_threshold
from rag.types import Chunk, Hit, Source

RUNBOOK = (
    "To roll back a release, run deploy.sh with the rollback flag. The rollback restores the "
    "previous container image and takes about five minutes. Check the health endpoint afterwards."
)
ONCALL = "The on-call engineer rotates every Monday at 09:00 and is paged through PagerDuty."
BILLING = "Invoices are generated on the first day of each month by the billing service."

GOOD_DRAFT = (
    "Run deploy.sh with the rollback flag; it restores the previous container image and takes "
    "about five minutes. Check the health endpoint afterwards [1]."
)


def hit(text: str, score: float, rank: int) -> Hit:
    chunk = Chunk(
        id=f"runbook.md#{rank}",
        doc_id="runbook.md",
        path="runbook.md",
        title="Runbook",
        heading="Runbook > Rollback",
        text=text,
        ordinal=rank,
    )
    return Hit(chunk=chunk, score=score, rank=rank)


def hits(*scores: float) -> list[Hit]:
    texts = [RUNBOOK, ONCALL, BILLING]
    return [hit(texts[i % 3], s, i + 1) for i, s in enumerate(scores)]


def sources(*scores: float) -> list[Source]:
    return [Source(n=h.rank, hit=h) for h in hits(*scores)]


# Thresholds these tests were written against (rag.yaml's calibrated values differ).
THRESHOLDS = {"lexical": 0.2, "bm25": 3.0, "embedding": 0.3, "hybrid": 0.35}


def policy(**overrides: Any) -> SignalPolicy:
    overrides.setdefault("weak_context", THRESHOLDS)
    overrides.setdefault("min_draft_chars", 120)
    return SignalPolicy.from_config(EscalationConfig(**overrides))


# ---- registry ----


def test_registry_keys_equal_the_config_literal() -> None:
    annotation = EscalationConfig.model_fields["policy"].annotation
    assert set(typing.get_args(annotation)) == set(POLICIES)


def test_every_registered_policy_builds_from_default_config_and_is_named_by_its_key() -> None:
    for key, factory in POLICIES.items():
        built: EscalationPolicy = factory(EscalationConfig())
        assert built.name == key


def test_build_policy_uses_the_configured_policy() -> None:
    assert isinstance(build_policy(EscalationConfig(policy="signals")), SignalPolicy)


def test_invalid_evasive_pattern_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"evasive_patterns: '\(unclosed'"):
        policy(evasive_patterns=("(unclosed",))


# ---- before_draft ----


def test_before_draft_context_ok_reason_and_signals() -> None:
    d = policy().before_draft("hybrid", hits(0.62, 0.40))
    assert (d.escalate, d.abstain, d.stage) == (False, False, "before")
    assert d.reason == "context ok: top hybrid score 0.62 ≥ 0.35"
    assert d.signals["retriever"] == "hybrid"
    assert d.signals["top_score"] == 0.62
    assert d.signals["second_score"] == 0.40
    assert d.signals["margin"] == pytest.approx(0.22)
    assert d.signals["threshold"] == 0.35


def test_before_draft_weak_context_abstains_by_default() -> None:
    d = policy().before_draft("hybrid", hits(0.21))
    assert (d.escalate, d.abstain, d.stage) == (False, True, "before")
    assert d.reason == (
        "abstained: top hybrid score 0.21 is below 0.35 (weak context) — "
        "the documents do not seem to cover this"
    )
    assert d.signals["second_score"] is None
    assert d.signals["margin"] is None


def test_before_draft_weak_context_escalates_when_configured() -> None:
    cfg = EscalationConfig(on_weak_context="escalate", weak_context={"bm25": 5.0})
    d = SignalPolicy(cfg).before_draft("bm25", hits(3.1, 2.0))
    assert (d.escalate, d.abstain) == (True, False)
    assert d.reason == "escalated before drafting: top bm25 score 3.1 is below 5.0 (weak context)"


def test_before_draft_exactly_at_threshold_is_not_weak() -> None:
    d = policy(weak_context={"bm25": 5.0}).before_draft("bm25", hits(5.0))
    assert not d.abstain and not d.escalate
    assert "≥ 5.0" in d.reason


def test_before_draft_just_below_threshold_is_weak_and_the_numbers_differ_in_print() -> None:
    d = policy(weak_context={"bm25": 5.0}).before_draft("bm25", hits(4.9999))
    assert d.abstain
    assert "top bm25 score 4.9999 is below 5.0" in d.reason


def test_before_draft_uses_the_best_score_even_if_hits_arrive_unsorted() -> None:
    d = policy().before_draft("hybrid", hits(0.2, 0.6))
    assert d.signals["top_score"] == 0.6
    assert not d.abstain


def test_before_draft_no_hits_is_weak_even_without_a_threshold() -> None:
    d = policy(weak_context={}).before_draft("bm25", [])
    assert d.abstain
    assert "the bm25 retriever found no passages (weak context)" in d.reason
    assert d.signals["top_score"] is None
    assert d.signals["hits"] == 0


def test_before_draft_retriever_without_threshold_is_never_weak_and_says_so() -> None:
    d = policy().before_draft("splade", hits(0.0001))
    assert not d.abstain and not d.escalate
    assert d.signals["threshold"] is None
    assert "no weak-context threshold is set for 'splade'" in d.reason
    assert "escalation.weak_context.splade" in d.reason


def test_thresholds_are_per_retriever() -> None:
    p = policy()
    assert not p.before_draft("bm25", hits(3.5)).abstain  # bm25 threshold 3.0
    assert p.before_draft("hybrid", hits(0.35)).abstain is False  # at the threshold
    assert p.before_draft("embedding", hits(0.29)).abstain


# ---- after_draft ----


def test_good_draft_is_kept_with_a_readable_reason() -> None:
    d = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), GOOD_DRAFT)
    assert (d.escalate, d.abstain, d.stage) == (False, False, "after")
    assert d.reason.startswith(f"kept the draft: {len(GOOD_DRAFT) - 4} characters, cites [1], ")
    assert "support 1.0 ≥ 0.5" in d.reason
    s = d.signals
    assert s["flags"] == []
    assert s["markers"] == [1]
    assert s["unknown_markers"] == []
    assert s["evasive"] is None
    assert s["citation_only"] is False
    assert s["support"] == 1.0
    assert s["chars"] == len(GOOD_DRAFT) - 4  # " [1]" is not counted


def test_short_draft_exactly_at_threshold_is_kept() -> None:
    draft = "rollback " * 13 + "restores [1]"  # 117 + 8 = 125 chars without the marker
    p = policy(min_draft_chars=len(draft) - 4)
    d = p.after_draft("hybrid", sources(0.7, 0.5), draft)
    assert "short" not in d.signals["flags"]
    assert d.signals["chars"] == p.cfg.min_draft_chars


def test_short_draft_one_below_threshold_escalates() -> None:
    draft = "rollback " * 13 + "restores [1]"
    p = policy(min_draft_chars=len(draft) - 4 + 1)
    d = p.after_draft("hybrid", sources(0.7, 0.5), draft)
    assert d.escalate
    assert d.signals["flags"] == ["short"]
    assert d.reason == (
        f"escalated: draft is {len(draft) - 4} characters, below {len(draft) - 3} (short draft)"
    )


def test_evasive_draft_escalates_and_quotes_the_phrase() -> None:
    draft = "The context does not mention how to restore the previous container image [1]. " * 2
    d = policy().after_draft("hybrid", sources(0.7, 0.5), draft)
    assert d.escalate
    assert "evasive" in d.signals["flags"]
    assert d.signals["evasive"] == "does not mention"
    assert 'draft says "does not mention" (evasive draft)' in d.reason


@pytest.mark.parametrize(
    "draft",
    [
        "I cannot answer that from the provided documents.",
        "This is NOT MENTIONED in the runbook.",
        "I don't know.",
        "There is no information about rollback.",
    ],
)
def test_evasive_patterns_are_case_insensitive_defaults(draft: str) -> None:
    d = policy().after_draft("hybrid", sources(0.7), draft)
    assert d.signals["evasive"] is not None


def test_evasive_patterns_come_from_config() -> None:
    p = policy(evasive_patterns=(r"\bno idea\b",))
    assert (
        p.after_draft("hybrid", sources(0.7), "No idea, sorry [1]").signals["evasive"] == "No idea"
    )
    assert p.after_draft("hybrid", sources(0.7), "I cannot answer [1]").signals["evasive"] is None


def test_uncited_draft_without_markers() -> None:
    draft = GOOD_DRAFT.replace(" [1]", "")
    d = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), draft)
    assert d.escalate
    assert d.signals["flags"] == ["uncited"]
    assert d.signals["markers"] == []
    assert d.reason == "escalated: draft cites none of the sources [1]–[3] (uncited draft)"


def test_uncited_draft_citing_a_source_that_was_not_retrieved() -> None:
    draft = GOOD_DRAFT.replace("[1]", "[1][4]")
    d = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), draft)
    assert d.escalate
    assert d.signals["flags"] == ["uncited"]
    assert d.signals["unknown_markers"] == [4]
    assert "draft cites [4] but only [1]–[3] were retrieved (uncited draft)" in d.reason


def test_uncited_reason_with_a_single_source() -> None:
    d = policy().after_draft("hybrid", sources(0.7), GOOD_DRAFT.replace("[1]", "[2]"))
    assert "draft cites [2] but only [1] was retrieved (uncited draft)" in d.reason


def test_short_and_uncited_are_listed_together() -> None:
    draft = "Run deploy.sh with the rollback flag [4]."  # 37 characters without the marker
    d = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), draft)
    assert d.signals["flags"] == ["short", "uncited"]
    assert d.reason == (
        "escalated: draft is 37 characters, below 120 (short draft); "
        "draft cites [4] but only [1]–[3] were retrieved (uncited draft)"
    )


def test_citation_only_draft() -> None:
    d = policy().after_draft("hybrid", sources(0.7, 0.5), " [2] ")
    assert d.escalate
    assert d.signals["citation_only"] is True
    assert d.signals["chars"] == 0
    assert d.signals["support"] == 0.0
    assert d.signals["flags"] == ["short", "citation_only", "unsupported"]
    assert 'draft is nothing but "[2]" (citation-only draft)' in d.reason


def test_unsupported_draft_measured_against_the_cited_passage() -> None:
    # The words are all in BILLING ([3]) but the draft cites the runbook ([1]).
    draft = (
        "Invoices are generated on the first day of each month by the billing service, "
        "which sends them automatically to every customer [1]."
    )
    d = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), draft)
    assert d.escalate
    assert d.signals["flags"] == ["unsupported"]
    assert d.signals["support"] < 0.5
    assert "of the draft's content words appear in the cited passages, below 0.5 (unsupported" in (
        d.reason
    )
    # Citing the right source fixes it.
    fixed = policy().after_draft("hybrid", sources(0.7, 0.5, 0.3), draft.replace("[1]", "[3]"))
    assert "unsupported" not in fixed.signals["flags"]


def test_support_falls_back_to_all_sources_when_none_cited_validly() -> None:
    draft = GOOD_DRAFT.replace("[1]", "[9]")
    d = policy().after_draft("hybrid", sources(0.7, 0.5), draft)
    assert d.signals["support"] == 1.0
    assert d.signals["flags"] == ["uncited"]


def test_support_counts_the_title_and_heading_the_model_was_shown() -> None:
    draft = GOOD_DRAFT.replace("Run", "Per the Runbook, run")
    d = policy().after_draft("hybrid", sources(0.7), draft)
    assert d.signals["support"] == 1.0


def test_support_exactly_at_min_support_is_kept_and_just_below_escalates() -> None:
    # content tokens: rollback, restores, unicorn, dragon -> support 0.5
    draft = "rollback restores unicorn dragon [1]"
    at = policy(min_draft_chars=0, min_support=0.5).after_draft("hybrid", sources(0.7), draft)
    assert at.signals["support"] == 0.5
    assert not at.escalate
    assert "support 0.5 ≥ 0.5" in at.reason
    above = policy(min_draft_chars=0, min_support=0.51).after_draft("hybrid", sources(0.7), draft)
    assert above.signals["flags"] == ["unsupported"]
    assert "only 0.5 of the draft's content words" in above.reason and "below 0.51" in above.reason


def test_ambiguous_context_only_when_min_margin_is_positive() -> None:
    off = policy().after_draft("hybrid", sources(0.70, 0.69), GOOD_DRAFT)
    assert off.signals["flags"] == []
    p = policy(min_margin={"hybrid": 0.05})
    on = p.after_draft("hybrid", sources(0.70, 0.69), GOOD_DRAFT)
    assert on.signals["flags"] == ["ambiguous"]
    assert on.signals["margin"] == pytest.approx(0.01)
    assert "top two hybrid scores differ by 0.01, below 0.05 (ambiguous context)" in on.reason


def test_ambiguous_margin_edge_and_single_source() -> None:
    p = policy(min_margin={"bm25": 1.0})
    assert p.after_draft("bm25", sources(6.0, 5.0), GOOD_DRAFT).signals["flags"] == []
    assert p.after_draft("bm25", sources(6.0, 5.5), GOOD_DRAFT).signals["flags"] == ["ambiguous"]
    assert p.after_draft("bm25", sources(6.0), GOOD_DRAFT).signals["flags"] == []
    # a retriever absent from min_margin has the signal off
    assert p.after_draft("hybrid", sources(0.7, 0.69), GOOD_DRAFT).signals["flags"] == []


def test_after_draft_signals_hold_every_value() -> None:
    d = policy().after_draft("bm25", sources(6.0, 2.0), "No.")
    expected_keys = {
        "retriever",
        "top_score",
        "second_score",
        "margin",
        "threshold",
        "chars",
        "evasive",
        "markers",
        "unknown_markers",
        "citation_only",
        "support",
        "flags",
    }
    assert expected_keys <= set(d.signals)
    assert d.signals["flags"] == ["short", "uncited", "unsupported"]


# ---- after_answer ----


def escalating() -> SignalPolicy:
    return policy(on_weak_context="escalate", weak_context={"bm25": 5.0})


def test_after_answer_abstains_when_weak_and_evasive() -> None:
    answer = "The documents do not mention the rollback time."
    d = escalating().after_answer("bm25", hits(3.1), answer)
    assert (d.abstain, d.escalate, d.stage) == (True, False, "after")
    assert d.reason.startswith("abstained: top bm25 score 3.1 is below 5.0 (weak context) and")
    assert '"do not mention" (evasive answer)' in d.reason
    assert d.reason.endswith("the documents do not seem to cover this")


def test_after_answer_abstains_when_weak_and_unsupported() -> None:
    answer = "Kubernetes operators reconcile custom resources through controllers."
    d = escalating().after_answer("bm25", hits(3.1, 1.0), answer)
    assert d.abstain
    assert d.signals["evasive"] is None
    assert d.signals["flags"] == ["weak_context", "unsupported"]
    assert (
        "of its content words appear in the retrieved passages, below 0.5 (unsupported answer)"
        in (d.reason)
    )


def test_after_answer_keeps_a_supported_answer_despite_weak_context() -> None:
    d = escalating().after_answer("bm25", hits(3.1), GOOD_DRAFT)
    assert not d.abstain
    assert d.reason.startswith("kept the answer despite weak context (top bm25 score 3.1 is below")


def test_after_answer_never_abstains_when_context_is_ok() -> None:
    d = escalating().after_answer("bm25", hits(5.0), "I don't know.")
    assert not d.abstain
    assert d.reason == "kept the answer: context ok (top bm25 score 5.0 ≥ 5.0)"


def test_after_answer_without_hits_abstains() -> None:
    d = escalating().after_answer("bm25", [], "Paris is the capital of France.")
    assert d.abstain
    assert "no passages" in d.reason


# ---- suggest_threshold ----


def test_suggest_threshold_separable() -> None:
    t, acc = suggest_threshold(answerable=[5.0, 6.0, 7.5], impossible=[1.0, 2.0, 3.0])
    assert t == 4.0
    assert acc == 1.0
    p = policy(weak_context={"bm25": t})
    assert all(p.before_draft("bm25", hits(s)).abstain for s in [1.0, 2.0, 3.0])
    assert not any(p.before_draft("bm25", hits(s)).abstain for s in [5.0, 6.0, 7.5])


def test_suggest_threshold_overlapping() -> None:
    answerable = [0.30, 0.50, 0.60, 0.70]
    impossible = [0.10, 0.20, 0.40, 0.55]
    t, acc = suggest_threshold(answerable, impossible)
    # t=0.25: impossible caught 2/4, answerable kept 4/4 -> 0.75
    # t=0.575: caught 4/4, kept 2/4 -> 0.75; t=0.45: caught 3/4, kept 3/4 -> 0.75
    # ties go to the lowest threshold
    assert t == pytest.approx(0.25)
    assert acc == 0.75


def test_suggest_threshold_balances_unequal_class_sizes() -> None:
    # Plain accuracy would never flag (10/11 right at t=1.0 vs 9/11 at t=3.5);
    # balanced accuracy weighs the lone impossible question as much as the ten answerable.
    t, acc = suggest_threshold([5.0] * 8 + [1.0, 1.5], [2.0])
    assert t == 3.5
    assert acc == pytest.approx((1.0 + 0.8) / 2)
    t2, acc2 = suggest_threshold([3.0] * 9, [1.0])
    assert (t2, acc2) == (2.0, 1.0)


def test_suggest_threshold_inverted_scores_suggest_a_threshold_that_never_fires() -> None:
    t, acc = suggest_threshold(answerable=[1.0, 2.0], impossible=[8.0, 9.0])
    assert (t, acc) == (1.0, 0.5)


def test_suggest_threshold_all_equal() -> None:
    assert suggest_threshold([0.5, 0.5], [0.5]) == (0.5, 0.5)


def test_suggest_threshold_is_deterministic_regardless_of_order() -> None:
    a, i = [0.9, 0.3, 0.7, 0.5], [0.2, 0.6, 0.4]
    assert suggest_threshold(a, i) == suggest_threshold(sorted(a), sorted(i, reverse=True))


@pytest.mark.parametrize(
    ("answerable", "impossible", "message"),
    [
        ([], [1.0], "answerable list is empty"),
        ([1.0], [], "impossible list is empty"),
        ([float("nan")], [1.0], "answerable scores must be finite"),
        ([1.0], [float("inf")], "impossible scores must be finite"),
    ],
)
def test_suggest_threshold_rejects_bad_input(
    answerable: Sequence[float], impossible: Sequence[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        suggest_threshold(answerable, impossible)
