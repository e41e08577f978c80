"""webui/render.py: what answers, steps and the comparison table look like, without a browser."""

from rag.types import (
    Chunk,
    Citation,
    Done,
    Hit,
    Metrics,
    Notice,
    Retrieved,
    Source,
    StageFinished,
    Sufficiency,
    Usage,
)
from webui import render

RUNBOOK = Chunk(
    id="runbooks/payments.md#0",
    doc_id="runbooks/payments.md",
    path="runbooks/payments.md",
    title="Payments gateway",
    heading="Paging > Escalation",
    text="Page the secondary after 15 minutes.",
    ordinal=0,
)
POLICY = Chunk(
    id="policies/expenses.md#2",
    doc_id="policies/expenses.md",
    path="policies/expenses.md",
    title="Expense policy",
    heading="",
    text="Meals up to 40 EUR per day.",
    ordinal=2,
)
SMALL = Usage("small", ttft_ms=120.0, total_ms=1500.0, prompt_tokens=300, completion_tokens=21,
              tokens_estimated=False)  # fmt: skip
LARGE = Usage("large", ttft_ms=8.25, total_ms=4200.0, prompt_tokens=310, completion_tokens=41,
              tokens_estimated=False)  # fmt: skip


def done(
    answer: str = "Page the secondary [1].",
    citations: tuple[Citation, ...] = (),
    *,
    escalated: bool = False,
    incomplete: bool = False,
    stages: tuple[tuple[str, Usage], ...] = (("draft", SMALL),),
) -> Done:
    metrics = Metrics(
        retriever="bm25",
        models=("small",),
        prep_ms=1.0,
        retrieval_ms=3.456,
        total_ms=1612.0,
        stages=stages,
        escalated=escalated,
        reason="",
        cost=0.0,
        incomplete=incomplete,
    )
    return Done(answer, "small", (), citations, metrics)


def test_hits_markdown_lists_passages_with_heading_path_and_score() -> None:
    ev = Retrieved("bm25", (Hit(RUNBOOK, 7.25, 1), Hit(POLICY, 1.5, 2)), 2.04)
    assert render.hits_markdown(ev) == (
        "**bm25** · 2 passages · 2.0 ms\n\n"
        "1. Payments gateway › Paging > Escalation — `runbooks/payments.md` (score 7.250)\n"
        "2. Expense policy — `policies/expenses.md` (score 1.500)"
    )


def test_hits_markdown_says_when_nothing_was_found() -> None:
    assert render.hits_markdown(Retrieved("lexical", (), 0.3)) == (
        "**lexical** found nothing relevant (0.3 ms)."
    )


def test_ms_keeps_a_decimal_only_below_ten() -> None:
    assert (render.ms(8.25), render.ms(120.4), render.ms(10.0)) == ("8.2 ms", "120 ms", "10 ms")


def test_notice_marks_warnings_and_information() -> None:
    assert render.notice(Notice("fell back to bm25", "warning")) == "⚠️ fell back to bm25"
    assert render.notice(Notice("index updated")) == "ℹ️ index updated"


def test_footer_has_retriever_model_timings_and_escalation() -> None:
    assert render.footer(done()) == (
        "*bm25 · small · retrieval 3.5 ms · first token 120 ms · 14.5 tok/s · total 1.6 s*"
    )
    escalated = done(escalated=True, stages=())
    assert render.footer(escalated) == "*bm25 · small · retrieval 3.5 ms · total 1.6 s · escalated*"


def test_stage_output_marks_a_cut_answer_and_a_failure() -> None:
    assert render.stage_output(StageFinished("draft", SMALL, "Partial", incomplete=True)) == (
        "Partial\n\n*(cut off)*"
    )
    assert render.stage_output(StageFinished("draft", SMALL, "")) is None


def test_compare_table_puts_both_models_side_by_side_in_safe_cells() -> None:
    table = render.compare_table(
        [
            StageFinished("compare", SMALL, "1. Page | the\nsecondary"),
            StageFinished("compare", LARGE, ""),
        ]
    )
    assert table.splitlines() == [
        "| | **small** | **large** |",
        "|---|---|---|",
        "| answer | Page \\| the secondary | *(failed)* |",
        "| first token | 120 ms | 8.2 ms |",
        "| total | 1.5 s | 4.2 s |",
        "| tokens (prompt / answer) | 300 / 21 | 310 / 41 |",
        "| tokens/s | 14.5 | 9.5 |",
    ]
    assert render.compare_table([]) == ""


def test_cited_passages_one_panel_per_verified_marker() -> None:
    one = Source(1, Hit(RUNBOOK, 7.0, 1))
    two = Source(2, Hit(POLICY, 1.0, 2))
    cites = (Citation(1, one), Citation(3, None), Citation(1, one), Citation(2, two))
    panels = render.cited_passages(done(citations=cites))
    assert [p.name for p in panels] == ["[1]", "[2]"]
    assert panels[0].content == (
        "**[1] Payments gateway**\n\n*Path:* `runbooks/payments.md`\n\n"
        "*Section:* Paging > Escalation\n\n---\n\nPage the secondary after 15 minutes."
    )
    assert "*Section:*" not in panels[1].content


def test_answer_content_flags_unverified_markers_and_incomplete_answers() -> None:
    one = Source(1, Hit(RUNBOOK, 7.0, 1))
    content = render.answer_content(
        done(citations=(Citation(1, one), Citation(4, None), Citation(2, None)), incomplete=True),
        [],
    )
    parts = content.split("\n\n")
    assert parts[0] == "Page the secondary [1]."
    assert parts[1] == "⚠️ Unverified citation [2], [4]: no such passage was retrieved."
    assert parts[2] == render.INCOMPLETE
    assert parts[3].startswith("*bm25 · small")


def test_answer_content_in_compare_mode_shows_the_table_not_the_answer() -> None:
    compared = [StageFinished("compare", SMALL, "A"), StageFinished("compare", LARGE, "B")]
    content = render.answer_content(done("B"), compared)
    assert content.startswith("| | **small** | **large** |")
    assert "\n\nB\n\n" not in content
    failed = [StageFinished("compare", SMALL, ""), StageFinished("compare", LARGE, "")]
    assert "\n\nSorry, no answer.\n\n" in render.answer_content(done("Sorry, no answer."), failed)


def test_hits_markdown_shows_the_context_sufficiency() -> None:
    hit = Hit(
        Chunk("c1", "d", "runbooks/oncall.txt", "On-call", "", "Page the secondary.", 0), 0.8, 1
    )
    ev = Retrieved("hybrid", (hit,), 4.0, Sufficiency({"coverage_idf": 0.75}, 0.82))
    assert render.hits_markdown(ev).endswith(
        "Context: context sufficiency 0.82; best passage holds 75% of the question's weight."
    )
    # a question that wants a number, whose words meet no sentence with one: said, with the gap
    near = Retrieved(
        "hybrid", (hit,), 4.0, Sufficiency({"coverage_idf": 0.9, "typed_gap": 0.4}, 0.5)
    )
    assert render.hits_markdown(near).endswith(
        "best passage holds 90% of the question's weight; the question asks for a number; the"
        " best sentence with one holds 40% less of its weight."
    )
