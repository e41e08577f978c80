"""The answer check in a real browser: a made-up number in the large model's answer never shows.

The app runs with the fitted router (its parameters given inline, as in the integration tests)
against the fake model server: the small model drafts a sentence no passage backs, so the draft
is escalated, and the large model answers with a number that no passage holds. The answer
streams through the policy's gate, so the words before the number show while it streams, the
number never does, and the abstention that replaces the answer names it as withheld.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    LLM,
    SLM,
    TOKEN_DELAY_S,
    ask,
    assert_no_traceback,
    last_answer,
    open_chat,
    run_chainlit,
    run_fake_openai,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUESTION = "How do we roll back a bad release?"
MADE_UP = "4817"
LEAD = "A rollback must be approved by"
ANSWER = f"{LEAD} {MADE_UP} reviewers before the release manager reverts it [1]."
UNBACKED_DRAFT = "Lunch is free every Friday in the rooftop canteen for everybody."
ABSTAINED = "The documents do not seem to cover this question"

ROUTER_ENV = {
    "RAG__ESCALATION__POLICY": "router",
    "RAG__ESCALATION__ROUTER__SUFFICIENCY": (
        "{bias: 0.0, weights: {coverage_idf: 4.0}, means: {coverage_idf: 0.5}, "
        "scales: {coverage_idf: 0.25}}"
    ),
    "RAG__ESCALATION__ROUTER__DRAFT": (
        "{bias: 0.0, weights: {support: 4.0, chars: 2.0}, means: {support: 0.6, chars: 3.5}, "
        "scales: {support: 0.2, chars: 0.5}}"
    ),
    "RAG__ESCALATION__ROUTER__SKIP_BELOW": "0.05",
    "RAG__ESCALATION__ROUTER__ABSTAIN_BELOW": "0.3",
    "RAG__ESCALATION__ROUTER__KEEP_THRESHOLD": "0.5",
    # the draft has no word in the passages; escalate it rather than abstain (outside_below)
    "RAG__ESCALATION__ROUTER__OUTSIDE_BELOW": "0",
}

# Every distinct text the newest answer message shows, from the moment it appears.
WATCH_ANSWER = """() => {
    const seen = document.querySelectorAll('[data-step-type="assistant_message"]').length;
    const texts = window.__answerTexts = [];
    const record = () => {
        const all = document.querySelectorAll('[data-step-type="assistant_message"]');
        for (const el of [...all].slice(seen)) {
            const box = el.querySelector('.message-content');
            const text = box ? box.innerText.trim() : '';
            if (text && !texts.includes(text)) texts.push(text);
        }
    };
    new MutationObserver(record).observe(
        document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def router_app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    slow = {"token_delay_s": TOKEN_DELAY_S * 3}
    script = {
        "models": {
            SLM: {"default": UNBACKED_DRAFT, **slow},
            LLM: {"default": ANSWER, **slow},
        }
    }
    with (
        run_fake_openai(tmp_path_factory.mktemp("fake-openai-router"), script) as models,
        run_chainlit(
            tmp_path_factory.mktemp("chainlit-router"), models, extra_env=ROUTER_ENV
        ) as url,
    ):
        yield url


def test_a_made_up_number_never_streams_and_the_abstention_names_it(
    page: Page, router_app_url: str
) -> None:
    open_chat(page, router_app_url)
    page.evaluate(WATCH_ANSWER)
    ask(page, QUESTION)
    answer = last_answer(page)
    expect(answer).to_contain_text(ABSTAINED, timeout=60_000)
    expect(answer).to_contain_text(f"states {MADE_UP}, which no passage holds")

    texts: list[str] = page.evaluate("window.__answerTexts")
    streamed = [t for t in texts if ABSTAINED not in t]
    # the answer did stream (the words before the number), and never showed the number
    assert any(t.startswith(LEAD) for t in streamed), texts
    assert not [t for t in streamed if MADE_UP in t], texts
    assert_no_traceback(page)
