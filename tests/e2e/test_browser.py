"""The chat in a real browser: streamed answer, Retrieve step, clickable sources, footer, errors.

Selectors come from Chainlit 2.12's DOM: the composer is the textarea `#chat-input` (Enter
sends; `#chat-submit` is disabled while it holds only whitespace), messages and steps are
`[data-step-type=...]` blocks, a step's header is a button named "Used <step name>", element
references in a message are `a.element-link`, and the side panel is `#side-view-title` /
`#side-view-content`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    FOOTER,
    ask,
    assert_no_traceback,
    last_answer,
    open_chat,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUESTION = "How do we roll back a bad release?"

# Records the distinct text lengths that the draft step's body and the answer show before the
# answer gets its metrics footer: two or more mean the user watched the text grow.
WATCH_STREAMING = """footer => {
    const seen = document.querySelectorAll('.step').length;
    const lengths = window.__streamed = {llm: [], assistant_message: []};
    const record = () => {
        for (const el of [...document.querySelectorAll('.step')].slice(seen)) {
            const kind = el.dataset.stepType;
            if (!(kind in lengths)) continue;
            const box = el.querySelector(kind === 'llm' ? '[role=region]' : '.message-content');
            const text = box ? box.innerText.trim() : '';
            if (text && !new RegExp(footer).test(text) && !lengths[kind].includes(text.length))
                lengths[kind].push(text.length);
        }
    };
    new MutationObserver(record).observe(
        document.body, {subtree: true, childList: true, characterData: true});
}"""


def watch_streaming(page: Page) -> None:
    page.evaluate(WATCH_STREAMING, FOOTER.pattern)


def test_answer_streams_with_retrieve_step_source_panel_and_footer(
    page: Page, app_url: str
) -> None:
    open_chat(page, app_url)
    watch_streaming(page)
    ask(page, QUESTION)
    expect(page.locator('[data-step-type="user_message"]')).to_contain_text(QUESTION)

    answer = last_answer(page)
    expect(answer).to_contain_text(FOOTER)  # the metrics footer ends the answer
    # Both streamed where the user sees them: the draft in its (open) step, then the answer,
    # since the fake's one-sentence draft is short enough for the policy to escalate.
    streamed = page.evaluate("window.__streamed")
    assert len(streamed["llm"]) >= 2, f"the draft step never showed a partial draft: {streamed}"
    assert len(streamed["assistant_message"]) >= 2, f"the answer did not stream: {streamed}"
    expect(page.get_by_role("button", name=re.compile(r"Escalate"))).to_be_visible()
    expect(answer.locator(".italic", has_text=FOOTER)).to_be_visible()
    assert len(answer.inner_text().strip()) > 40

    # The Retrieve step names the retriever and lists the hits with their paths.
    retrieve = page.get_by_role("button", name=re.compile(r"Retrieve \(lexical\)"))
    expect(retrieve).to_be_visible()
    retrieve.click()
    hits = page.locator('[data-step-type="retrieval"] li')
    expect(hits.first).to_be_visible()
    path1 = hits.first.locator("code").first.inner_text().strip()
    assert re.fullmatch(r"[\w./-]+\.(md|txt|html|pdf)", path1), path1
    retrieve.click()  # fold it again for the screenshots
    expect(hits.first).to_be_hidden()

    # The answer cites [1] as a link. Chainlit (>= 2.11) opens the side panel by itself when
    # side elements arrive, so close it first and check that the link opens the right document.
    link = answer.locator("a.element-link", has_text="[1]")
    expect(link).to_be_visible()
    title = page.locator("#side-view-title")
    if title.is_visible():
        title.get_by_role("button").click()
        expect(title).to_be_hidden()
    screenshot(page, "chat_answer.png")
    link.click()
    expect(title).to_have_text("[1]")
    content = page.locator("#side-view-content")
    expect(content).to_contain_text(path1)
    # The answer quotes passage [1] (the fake echoes its first sentence): it is in the panel.
    first_words = " ".join(answer.inner_text().split()[:4]).lstrip("•-* ")
    expect(content).to_contain_text(first_words)
    expect(page.locator("aside")).to_be_in_viewport(ratio=1)  # done sliding in
    screenshot(page, "chat_source_panel.png")
    assert_no_traceback(page)


def test_blank_message_is_blocked_or_refused(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    composer = page.locator("#chat-input")
    composer.fill("   \n\t  ")
    # Chainlit's composer refuses whitespace-only messages itself: nothing reaches the server.
    expect(page.locator("#chat-submit")).to_be_disabled()
    composer.press("Enter")
    page.wait_for_timeout(500)
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(0)
    # Control characters pass the composer's check; the assistant refuses them as empty.
    ask(page, "\x07\x07 \x07")
    expect(last_answer(page)).to_contain_text("The message is empty")
    expect(page.get_by_role("button", name=re.compile(r"Retrieve"))).to_have_count(0)
    assert_no_traceback(page)


def test_50k_character_message_gets_a_clear_refusal(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    ask(page, "word " * 10_000)  # a 50,000-character paste
    refusal = last_answer(page)
    expect(refusal).to_contain_text("50,000 characters long")
    expect(refusal).to_contain_text("limit is 8,000")
    expect(page.get_by_role("button", name=re.compile(r"Retrieve"))).to_have_count(0)
    # The chat still works afterwards.
    ask(page, QUESTION)
    expect(last_answer(page)).to_contain_text(FOOTER)
    assert_no_traceback(page)


def test_model_servers_down_shows_a_clear_message(page: Page, app_url_models_down: str) -> None:
    open_chat(page, app_url_models_down)
    ask(page, QUESTION)
    messages = page.locator('[data-step-type="assistant_message"]')
    expect(messages.filter(has_text="cannot reach model server").first).to_be_visible()
    expect(messages.filter(has_text="No model could answer")).to_have_count(1)
    # Retrieval still worked, and the user is told so rather than shown an error page.
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(lexical\)"))).to_be_visible()
    expect(last_answer(page)).to_contain_text("No model is reachable")
    screenshot(page, "chat_models_down.png")
    assert_no_traceback(page)
