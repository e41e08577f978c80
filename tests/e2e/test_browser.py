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
from playwright.sync_api import Locator, Page, expect

from tests.conftest import SCREENSHOT_DIR

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUESTION = "How do we roll back a bad release?"
ANSWER_TIMEOUT_MS = 30_000
FOOTER = re.compile(r"lexical · .+ · total \d+\.\d s")

expect.set_options(timeout=ANSWER_TIMEOUT_MS)


def open_chat(page: Page, url: str) -> None:
    """Load the app and wait for on_chat_start's welcome before typing anything."""
    page.goto(url)
    welcome = page.locator('[data-step-type="assistant_message"]').first
    expect(welcome).to_contain_text("Welcome to the Docs Assistant")
    expect(page.locator("#chat-input")).to_be_editable()


def ask(page: Page, text: str) -> None:
    composer = page.locator("#chat-input")
    composer.fill(text)
    composer.press("Enter")


def last_answer(page: Page) -> Locator:
    return page.locator('[data-step-type="assistant_message"]').last


def assert_no_traceback(page: Page) -> None:
    body = page.locator("body").inner_text()
    assert "Traceback" not in body, body[-2000:]
    assert 'File "' not in body, body[-2000:]


def screenshot(page: Page, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / name), full_page=True)


def test_answer_streams_with_retrieve_step_source_panel_and_footer(
    page: Page, app_url: str
) -> None:
    open_chat(page, app_url)
    before = page.locator('[data-step-type="assistant_message"]').count()
    ask(page, QUESTION)
    expect(page.locator('[data-step-type="user_message"]')).to_contain_text(QUESTION)

    # Streaming: the answer shows text while its footer (written at Done) is not there yet.
    page.wait_for_function(
        """([before, footer]) => {
            const msgs = document.querySelectorAll('[data-step-type="assistant_message"]');
            if (msgs.length <= before) return false;
            const text = msgs[msgs.length - 1].innerText.trim();
            return text.length > 0 && !new RegExp(footer).test(text);
        }""",
        arg=[before, FOOTER.pattern],
        timeout=ANSWER_TIMEOUT_MS,
        polling=10,
    )

    answer = last_answer(page)
    expect(answer).to_contain_text(FOOTER)  # the metrics footer ends the answer
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

    # The answer cites [1] as a link; Chainlit opens the last side element by itself, so close
    # the panel first and check that the link opens it on the right document.
    link = answer.locator("a.element-link", has_text="[1]")
    expect(link).to_be_visible()
    screenshot(page, "chat_answer.png")
    title = page.locator("#side-view-title")
    if title.is_visible():
        title.get_by_role("button").click()
        expect(title).to_be_hidden()
    link.click()
    expect(title).to_have_text("[1]")
    content = page.locator("#side-view-content")
    expect(content).to_contain_text(path1)
    # The answer quotes passage [1] (the fake echoes its first sentence): it is in the panel.
    first_words = " ".join(answer.inner_text().split()[:4]).lstrip("•-* ")
    expect(content).to_contain_text(first_words)
    screenshot(page, "chat_source_panel.png")
    assert_no_traceback(page)


def test_whitespace_only_message_cannot_be_sent(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    page.locator("#chat-input").fill("   \n\t  ")
    # Chainlit's composer refuses blank messages itself: nothing reaches the server.
    expect(page.locator("#chat-submit")).to_be_disabled()
    page.locator("#chat-input").press("Enter")
    page.wait_for_timeout(500)
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(0)
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
