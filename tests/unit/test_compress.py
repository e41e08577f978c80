"""Context compression: the question's sentences stay, with neighbours, within the budget."""

from __future__ import annotations

from collections.abc import Sequence

from rag.compress import compress, merge_documents, sentences
from rag.config import ContextConfig
from rag.models.openai_compat import estimate_tokens
from rag.termstats import TermStats
from rag.types import Chunk, Hit

FILLER = " ".join(f"Sentence {i} talks about office plants and the weather." for i in range(12))


def chunk(n: int, text: str, title: str = "Doc") -> Chunk:
    return Chunk(f"doc{n}#0", f"doc{n}", f"doc{n}.md", title, "Section", text, 0)


def hits_of(*texts: str) -> list[Hit]:
    return [Hit(chunk(i, t), 1.0 / (i + 1), i + 1) for i, t in enumerate(texts)]


def test_sentences_split_on_ends_and_lines() -> None:
    text = "First one. Second one? Third!\n- item one\n| a | b |\n\nLast 3.5 kg here."
    assert sentences(text) == [
        "First one.", "Second one?", "Third!", "- item one", "| a | b |", "Last 3.5 kg here.",
    ]  # fmt: skip


def test_keeps_the_answer_sentence_and_its_neighbours_and_marks_gaps() -> None:
    answer = "The VPN client is WireGuard and the config lives in the IT portal."
    text = f"{FILLER} Before the answer. {answer} After the answer. {FILLER}"
    hits = hits_of(text)
    # whole_below=0: these tests choose sentences even where the best one matches weakly
    cfg = ContextConfig(budget_tokens=80, whole_passage_tokens=10, neighbours=1, whole_below=0)
    out = compress("Which VPN client do we use?", hits, TermStats([h.chunk for h in hits]), cfg)
    kept = out.hits[0].chunk.text
    assert answer in kept
    assert "Before the answer." in kept and "After the answer." in kept
    assert " … " in kept and kept.endswith("…")  # left-out sentences are marked
    assert out.tokens_after < out.tokens_before
    assert estimate_tokens(kept) <= 80 + 10


def test_short_passages_go_in_whole_and_budget_limits_the_rest() -> None:
    short = "Parking is in the basement."
    hits = hits_of(short, FILLER + " The basement parking closes at 22:00.", FILLER)
    cfg = ContextConfig(budget_tokens=60, whole_passage_tokens=20, neighbours=0)
    out = compress(
        "When does the basement parking close?", hits, TermStats([h.chunk for h in hits]), cfg
    )
    assert out.hits[0].chunk.text == short
    assert "22:00" in out.hits[1].chunk.text
    total = sum(estimate_tokens(h.chunk.text) for h in out.hits)
    assert total <= 60 + 20
    assert [h.rank for h in out.hits] == sorted(h.rank for h in out.hits)


def test_a_passage_without_question_words_still_gets_its_first_sentence() -> None:
    hits = hits_of("Alpha beta gamma. Delta epsilon. " + FILLER)
    cfg = ContextConfig(budget_tokens=30, whole_passage_tokens=0, neighbours=0)
    out = compress("What is the refund window?", hits, TermStats([h.chunk for h in hits]), cfg)
    assert out.hits[0].chunk.text.startswith("Alpha beta gamma.")


def test_nothing_is_cut_when_everything_fits() -> None:
    hits = hits_of("One fact about refunds. Another fact about refunds.")
    cfg = ContextConfig(budget_tokens=500)
    out = compress("refunds?", hits, TermStats([h.chunk for h in hits]), cfg)
    assert out.hits == tuple(hits)


def test_a_number_in_the_question_keeps_the_rows_with_numbers() -> None:
    # The row that answers "1,800 euros" shares no word with the question, only a number.
    table = (
        "Approval limits for every expense claim submitted by employees.\n"
        "Amount Who approves\n"
        "Up to EUR 500 Your line manager\n"
        "EUR 500.01 to EUR 2,500 Your department head\n"
        + " ".join(f"The {c} plant by the window needs water." for c in ("red", "green", "blue"))
    )
    hits = hits_of(table)
    cfg = ContextConfig(budget_tokens=40, whole_passage_tokens=0, neighbours=0)
    stats = TermStats([h.chunk for h in hits])
    out = compress("Who has to approve an expense of 1,800 euros?", hits, stats, cfg)
    assert "EUR 500.01 to EUR 2,500 Your department head" in out.hits[0].chunk.text
    # Without a number in the question the same budget goes to the words it shares.
    plain = compress("Who has to approve an expense claim?", hits, stats, cfg)
    assert "EUR 500.01" not in plain.hits[0].chunk.text


def test_a_list_items_number_stays_with_its_sentence() -> None:
    text = (
        "1. Platform primary on call.\n2. Platform secondary after 10 minutes. Then rest.\na) one."
    )
    assert sentences(text) == [
        "1. Platform primary on call.", "2. Platform secondary after 10 minutes.", "Then rest.",
        "a) one.",
    ]  # fmt: skip
    assert sentences("Step 3. Do it.") == ["Step 3.", "Do it."]  # a word before it: a sentence


def test_a_heading_that_matches_brings_the_lines_under_it_not_before_it() -> None:
    # "3. ESCALATION TIMES" holds the question's words; the answer is the line below it.
    text = (
        f"{FILLER}\nWhen in doubt, pick the higher severity.\n3. ESCALATION TIMES\n"
        "T+0 Primary on call is paged.\nAcknowledge within 5 minutes.\n"
        f"T+10 min Secondary on call is paged.\n{FILLER}"
    )
    hits = hits_of(text)
    cfg = ContextConfig(budget_tokens=40, whole_passage_tokens=0, neighbours=1)
    out = compress("What are the escalation times?", hits, TermStats([h.chunk for h in hits]), cfg)
    kept = out.hits[0].chunk.text
    assert (
        "3. ESCALATION TIMES\nT+0 Primary on call is paged.\nAcknowledge within 5 minutes." in kept
    )
    assert "pick the higher severity" not in kept
    # A matching sentence that is not a heading keeps one neighbour on each side.
    plain = (
        compress("When is the primary paged?", hits, TermStats([h.chunk for h in hits]), cfg)
        .hits[0]
        .chunk.text
    )
    assert "3. ESCALATION TIMES\nT+0 Primary on call is paged.\nAcknowledge within" in plain


def test_an_opening_line_that_repeats_the_title_is_not_paid_for_twice() -> None:
    text = f"SUPPORT ESCALATION GUIDE\nWhen in doubt, ask in #support-escalations. {FILLER}"
    hit = Hit(chunk(0, text, title="SUPPORT ESCALATION GUIDE"), 1.0, 1)
    cfg = ContextConfig(budget_tokens=30, whole_passage_tokens=0, neighbours=1)
    out = compress("Where do I ask when in doubt?", [hit], TermStats([hit.chunk]), cfg)
    kept = out.hits[0].chunk.text
    assert kept.startswith("When in doubt, ask in #support-escalations.")  # no "…" before it
    assert "SUPPORT ESCALATION GUIDE" not in kept  # format_source prints the title


def test_plain_text_table_rows_are_sentences_and_rulers_are_dropped() -> None:
    text = (
        "Every product team is on call for the services it owns and for the shared parts\n"
        "\n"
        "  Rotation            Services                                   PagerDuty schedule\n"
        "  ------------------  -----------------------------------------  --------------------\n"
        "  Payments            payments-gateway                           Payments Primary\n"
        "  Platform            auth-service, notify-service               Platform Primary\n"
        "\n"
        "  SEV1  Customer-facing outage of a core function (sign-in, invoicing, payments),\n"
        "        OR payment processing failing for more than 5% of attempts.\n"
    )
    assert sentences(text) == [
        "Every product team is on call for the services it owns and for the shared parts",
        "Rotation            Services                                   PagerDuty schedule",
        "Payments            payments-gateway                           Payments Primary",
        "Platform            auth-service, notify-service               Platform Primary",
        # a wrapped cell still runs on: its next line has no columns
        "SEV1  Customer-facing outage of a core function (sign-in, invoicing, payments), "
        "OR payment processing failing for more than 5% of attempts.",
    ]


# An answer in other words than the question's, beside a sentence that shares its words.
LURE = "A lost card from the game cupboard is replaced at the reception desk."
IN_OTHER_WORDS = "Marloes Kuipers in Finance replaces stolen or missing Pleo cards."
ASKED = "Who do I ask about a lost company credit card?"


def test_a_sentence_similarity_keeps_an_answer_in_other_words() -> None:
    hits = hits_of(f"{FILLER} {LURE} {FILLER} {IN_OTHER_WORDS} {FILLER}")
    stats = TermStats([h.chunk for h in hits])
    cfg = ContextConfig(
        budget_tokens=30, whole_passage_tokens=0, neighbours=0, dense_weight=0.5, whole_below=0
    )
    seen: list[list[str]] = []

    def similarity(question: str, texts: Sequence[str]) -> list[float]:
        assert question == ASKED
        seen.append(list(texts))
        return [0.8 if t == IN_OTHER_WORDS else 0.3 for t in texts]

    kept = compress(ASKED, hits, stats, cfg, similarity).hits[0].chunk.text
    assert IN_OTHER_WORDS in kept and LURE not in kept
    assert len(seen) == 1 and IN_OTHER_WORDS in seen[0]  # one call for all the sentences
    # Words alone pick the lure; so does a floor above every cosine, or a weight of 0.
    for off in (
        cfg.model_copy(update={"dense_weight": 0.0}),
        cfg.model_copy(update={"dense_floor": 0.9}),
    ):
        words_only = compress(ASKED, hits, stats, off, similarity).hits[0].chunk.text
        assert LURE in words_only and IN_OTHER_WORDS not in words_only
    assert compress(ASKED, hits, stats, cfg).hits[0].chunk.text == words_only  # no similarity


def test_a_table_row_with_two_sentences_in_a_cell_stays_one_row() -> None:
    text = (
        "  T+0      Primary on call is paged. Acknowledge within 5 minutes.\n"
        "  T+10 min Secondary on call is paged.\n"
        "Plain text with two spaces after a stop.  It is still two sentences.\n"
    )
    assert sentences(text) == [
        "T+0      Primary on call is paged. Acknowledge within 5 minutes.",
        "T+10 min Secondary on call is paged.",
        "Plain text with two spaces after a stop.",
        "It is still two sentences.",
    ]


def test_words_of_the_title_count_for_less_inside_its_passage(monkeypatch) -> None:
    # The title is printed above the passage: "VPN" there says which passage, not which sentence.
    named = "The VPN was chosen in 2021 by the security team."
    answer = "Install WireGuard from the portal and import your profile."
    hit = Hit(chunk(0, f"{named} {FILLER} {answer} {FILLER}", title="VPN"), 1.0, 1)
    stats = TermStats([hit.chunk])
    cfg = ContextConfig(budget_tokens=30, whole_passage_tokens=0, neighbours=0, whole_below=0)

    def kept() -> str:
        return compress("How do I install the VPN?", [hit], stats, cfg).hits[0].chunk.text

    assert answer in kept() and named not in kept()
    monkeypatch.setattr("rag.compress.TITLE_TERM_WEIGHT", 1.0)  # title words count in full
    assert named in kept() and answer not in kept()


def test_a_heading_chosen_in_a_lower_ranked_passage_brings_its_lines() -> None:
    rows = "T+0 Primary on call is paged.\nT+10 min Secondary on call is paged."
    # The best passage has more matching sentences than the budget leaves room for.
    best = " ".join(f"Escalation times for expense claim {i} are set by Finance." for i in range(6))
    hits = hits_of(f"{best} {FILLER}", FILLER, f"{FILLER}\n3. ESCALATION TIMES\n{rows}\n{FILLER}")
    cfg = ContextConfig(budget_tokens=160, whole_passage_tokens=0, neighbours=1)
    out = compress("What are the escalation times?", hits, TermStats([h.chunk for h in hits]), cfg)
    third = next(h for h in out.hits if h.rank == 3).chunk.text
    assert f"3. ESCALATION TIMES\n{rows}" in third  # not the heading alone


def part(doc: str, ordinal: int, heading: str, text: str, rank: int) -> Hit:
    c = Chunk(f"{doc}#{ordinal}", doc, f"{doc}.md", doc.title(), heading, text, ordinal)
    return Hit(c, 1.0 / rank, rank)


def test_passages_of_one_document_share_one_source_in_rank_order() -> None:
    hits = [
        part("runbook", 4, "Rollback", "Run `make rollback`.", 1),
        part("faq", 0, "Billing", "Invoices go out monthly.", 2),
        part("runbook", 1, "Deploy", "… Deploys run at 10:00.", 3),
        part("runbook", 2, "Deploy", "Check the dashboard. …", 4),
    ]
    out = merge_documents(hits)
    assert [h.chunk.doc_id for h in out] == ["runbook", "faq"]  # at the best passage's place
    assert out[0].rank == 1 and out[0].chunk.heading == "Rollback"  # the best passage's
    # a heading that changes gets a line; the next passage of the document runs on
    assert out[0].chunk.text == (
        "Run `make rollback`.\nDeploy:\n… Deploys run at 10:00.\nCheck the dashboard. …"
    )
    assert out[1] == hits[1]


def test_a_jump_between_whole_passages_is_marked() -> None:
    hits = [part("doc", 3, "A", "Fourth.", 1), part("doc", 0, "A", "First.", 2)]
    assert merge_documents(hits)[0].chunk.text == "Fourth.\n…\nFirst."


def test_merging_is_off_unless_asked_for() -> None:
    hits = [part("doc", 0, "A", FILLER, 1), part("doc", 1, "A", FILLER, 2)]
    stats = TermStats([h.chunk for h in hits])
    off = compress("office plants?", hits, stats, ContextConfig(budget_tokens=150))
    on = compress(
        "office plants?", hits, stats, ContextConfig(budget_tokens=150, merge_documents=True)
    )
    assert len(on.hits) == 1 and len(off.hits) == 2


def test_a_question_about_the_top_document_as_a_whole_gets_its_passages_whole() -> None:
    # the title holds the question's words: they choose no sentence, so nothing is cut
    hits = [
        Hit(
            chunk(0, FILLER + " Page the secondary after 10 minutes.", "On-call escalation policy"),
            1,
            1,
        ),
        Hit(chunk(1, FILLER), 0.5, 2),
    ]
    stats = TermStats([h.chunk for h in hits])
    cfg = ContextConfig(budget_tokens=60, whole_passage_tokens=0, whole_below=0)
    out = compress("What is the on-call escalation policy?", hits, stats, cfg)
    assert [h.chunk.text for h in out.hits] == [h.chunk.text for h in hits]
    assert out.tokens_after == out.tokens_before
    # a question that also asks for something inside the document is compressed as before
    out = compress("Who is paged after 10 minutes of on-call escalation?", hits, stats, cfg)
    assert out.tokens_after < out.tokens_before
    never = cfg.model_copy(update={"broad_share": 1.01})
    out = compress("What is the on-call escalation policy?", hits, stats, never)
    assert out.tokens_after < out.tokens_before


def test_passages_go_in_whole_when_no_sentence_of_the_two_best_matches_well() -> None:
    # "Where do I get my clothes washed?" shares no word with "Laundry is on the third floor.":
    # choosing sentences by the question's words would be a guess, so nothing is cut.
    answer = "Laundry service is on the third floor, Tuesdays only."
    hits = hits_of(f"{FILLER} {answer} {FILLER}", FILLER)
    stats = TermStats([h.chunk for h in hits])
    cfg = ContextConfig(budget_tokens=60, whole_passage_tokens=0)
    out = compress("Where do I get my clothes washed?", hits, stats, cfg)
    assert [h.chunk.text for h in out.hits] == [h.chunk.text for h in hits]
    assert out.tokens_after == out.tokens_before
    # with the rule off, the budget cuts the same passages (and here loses the answer)
    off = compress(
        "Where do I get my clothes washed?", hits, stats, cfg.model_copy(update={"whole_below": 0})
    )
    assert off.tokens_after < off.tokens_before and answer not in off.hits[0].chunk.text
    # a question whose words a sentence holds is compressed as before, keeping that sentence
    asked = compress("Which floor is the laundry service on?", hits, stats, cfg)
    assert asked.tokens_after < asked.tokens_before and answer in asked.hits[0].chunk.text


def test_a_sentence_in_other_words_counts_as_a_match() -> None:
    # the cosine is part of a sentence's score: an answer close in meaning is not a guess
    answer = "Laundry service is on the third floor, Tuesdays only."
    hits = hits_of(f"{FILLER} {answer} {FILLER}", FILLER)
    stats = TermStats([h.chunk for h in hits])
    cfg = ContextConfig(budget_tokens=60, whole_passage_tokens=0, dense_weight=2.0)

    def similarity(question: str, texts: Sequence[str]) -> list[float]:
        return [0.9 if t == answer else 0.1 for t in texts]

    out = compress("Where do I get my clothes washed?", hits, stats, cfg, similarity)
    assert out.tokens_after < out.tokens_before and answer in out.hits[0].chunk.text
