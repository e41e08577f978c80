"""The chat's features in a real browser: settings, uploads, the Compare profile, resumed history.

Selectors (Chainlit 2.12): the settings panel opens from `#chat-settings-open-modal` as a dialog
whose selects are comboboxes with the widget's id (`#retriever`) and whose options are ARIA
options; the profile picker is `#chat-profiles`; the composer's file input is
`#upload-button-input`; the sidebar's thread list is `#thread-history`; "new chat" is
`#new-chat-button` and asks for confirmation in a dialog. Login fields are `#email`/`#password`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    LLM,
    SLM,
    PageRequests,
    ask,
    assert_no_traceback,
    last_answer,
    open_chat,
    screenshot,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

BM25_FOOTER = re.compile(r"bm25 · .+ · total \d+\.\d s")
ANY_FOOTER = re.compile(r"(lexical|bm25) · .+ · total \d+\.\d s")
HERON_DOC = (
    "# Project Heron\n\n"
    "Project Heron launches on 7 October with the new billing dashboard.\n\n"
    "The Heron pilot covers three regions and is owned by the payments team.\n"
)
HISTORY_QUESTION = "How do we roll back a bad release?"


def choose_retriever(page: Page, name: str) -> None:
    """Open the settings panel, pick retriever `name` and confirm; wait for the app's reply."""
    page.locator("#chat-settings-open-modal").click()
    panel = page.get_by_role("dialog")
    expect(panel).to_contain_text("Settings panel")
    panel.locator("#retriever").click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(panel.locator("#retriever")).to_have_text(name)
    screenshot(page, "settings.png")
    panel.get_by_role("button", name="Confirm").click()
    expect(panel).to_be_hidden()
    expect(last_answer(page)).to_contain_text(
        f"Settings applied to the next question: retriever {name}"
    )


def close_side_panel(page: Page) -> None:
    """Chainlit (>= 2.11) opens the source panel by itself when side elements arrive."""
    title = page.locator("#side-view-title")
    if title.is_visible():
        title.get_by_role("button").click()
        expect(title).to_be_hidden()


def test_retriever_chosen_in_settings_is_named_in_the_retrieve_step(
    page: Page, app_url: str
) -> None:
    open_chat(page, app_url)
    choose_retriever(page, "bm25")
    ask(page, "How do we roll back a bad release?")
    expect(last_answer(page)).to_contain_text(BM25_FOOTER)
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(bm25\)"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(lexical\)"))).to_have_count(0)
    assert_no_traceback(page)


def test_uploaded_file_is_indexed_and_answers_cite_it(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    page.locator("#upload-button-input").set_input_files(
        files=[{"name": "heron.md", "mimeType": "text/markdown", "buffer": HERON_DOC.encode()}]
    )
    page.locator("#chat-submit").click()  # the attachment alone: added, no question asked
    added = page.locator('[data-step-type="assistant_message"]', has_text="Added heron.md")
    expect(added).to_contain_text(re.compile(r"\d+ chunks? indexed"))

    ask(page, "When does Project Heron launch?")
    answer = last_answer(page)
    expect(answer).to_contain_text(ANY_FOOTER)
    # The fake model quotes passage [1]: the uploaded document ranked first for its own words.
    expect(answer).to_contain_text("Project Heron launches on 7 October")
    link = answer.locator("a.element-link", has_text="[1]")
    expect(link).to_be_visible()
    close_side_panel(page)
    link.click()
    expect(page.locator("#side-view-content")).to_contain_text("uploads/heron.md")
    expect(page.locator("aside")).to_be_in_viewport(ratio=1)
    screenshot(page, "upload.png")
    assert_no_traceback(page)


def test_compare_profile_shows_both_models_answers(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    page.locator("#chat-profiles").click()
    page.get_by_role("option", name="Compare").click()
    confirm = page.get_by_role("dialog").get_by_role("button", name="Confirm")
    if confirm.is_visible():  # switching profile starts a new chat; Chainlit may ask first
        confirm.click()
    expect(page.locator("#chat-profiles")).to_contain_text("Compare")
    expect(last_answer(page)).to_contain_text("Welcome to the Docs Assistant")

    ask(page, "How do we roll back a bad release?")
    answer = last_answer(page)
    expect(answer).to_contain_text(re.compile(r"total \d+\.\d s"))
    table = answer.locator("table")
    expect(table).to_be_visible()
    expect(table.locator("th", has_text=SLM)).to_be_visible()
    expect(table.locator("th", has_text=LLM)).to_be_visible()
    expect(table).to_contain_text("first token")
    # Both models streamed in their own "Compare · <model>" steps.
    expect(
        page.get_by_role("button", name=re.compile(rf"Compare · {re.escape(SLM)}"))
    ).to_be_visible()
    expect(
        page.get_by_role("button", name=re.compile(rf"Compare · {re.escape(LLM)}"))
    ).to_be_visible()
    # The table holds both answers (the fake gives both the same one); it is not repeated below.
    small_answer = " ".join(table.locator("td").nth(1).inner_text().split()[:6])
    assert small_answer and answer.inner_text().count(small_answer) == 2, answer.inner_text()
    close_side_panel(page)
    screenshot(page, "compare.png")
    assert_no_traceback(page)


def test_resumed_thread_shows_its_history_and_keeps_its_settings(
    page: Page, auth_app_url: str, page_requests: PageRequests
) -> None:
    sign_in(page, auth_app_url)
    choose_retriever(page, "bm25")
    ask(page, HISTORY_QUESTION)
    answer = last_answer(page)
    expect(answer).to_contain_text(BM25_FOOTER)
    first_words = " ".join(answer.inner_text().split()[:5]).lstrip("•-* ")
    expect(page).to_have_url(re.compile(r"/thread/[0-9a-f-]{36}$"))
    thread_url = page.url

    # A reload reopens the thread from the database: question, steps and answer are back.
    page.reload()
    expect(page.locator('[data-step-type="user_message"]')).to_contain_text(HISTORY_QUESTION)
    expect(last_answer(page)).to_contain_text(first_words)
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(bm25\)"))).to_be_visible()

    # Start a new chat, then open the thread again from the sidebar.
    page.locator("#new-chat-button").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(0)
    expect(last_answer(page)).to_contain_text("Welcome to the Docs Assistant")
    history = page.locator("#thread-history")
    history.get_by_text(HISTORY_QUESTION).first.click()
    expect(page).to_have_url(thread_url)
    expect(page.locator('[data-step-type="user_message"]')).to_contain_text(HISTORY_QUESTION)
    resumed = last_answer(page)
    expect(resumed).to_contain_text(first_words)
    expect(resumed).to_contain_text(BM25_FOOTER)
    # Its cited passage was stored too: [1] still opens the source.
    close_side_panel(page)
    resumed.locator("a.element-link", has_text="[1]").click()
    expect(page.locator("#side-view-title")).to_have_text("[1]")
    expect(page.locator("#side-view-content")).to_contain_text(first_words)
    expect(page.locator("aside")).to_be_in_viewport(ratio=1)
    screenshot(page, "history.png")

    # The resumed thread continues with the settings it was saved with (bm25, not lexical).
    ask(page, "Who approves production releases?")
    expect(page.locator('[data-step-type="user_message"]')).to_have_count(2)
    expect(last_answer(page)).to_contain_text(BM25_FOOTER)
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(bm25\)"))).to_have_count(2)
    assert page_requests.blocked == [], f"the page tried to reach: {page_requests.blocked}"
    assert_no_traceback(page)


def test_wrong_password_is_refused(page: Page, auth_app_url: str) -> None:
    page.goto(auth_app_url)
    page.locator("#email").fill("alice")
    page.locator("#password").fill("not-the-password")
    page.get_by_role("button", name="Sign In").click()
    expect(page.locator("#chat-input")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign In")).to_be_visible()
    expect(page.locator("body")).to_contain_text(re.compile(r"credentials|sign ?in|password", re.I))


OSPREY_DOC = (
    "# Project Osprey\n\n"
    "Project Osprey ships on 3 March to every customer region.\n\n"
    "<script>window.__pwned = 1</script>\n\n"
    '<img src="x" onerror="window.__pwned = 2">\n\n'
    "The Osprey rollout is owned by the platform team.\n"
)


def test_document_html_is_rendered_as_text_never_run(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    page.locator("#upload-button-input").set_input_files(
        files=[{"name": "osprey.md", "mimeType": "text/markdown", "buffer": OSPREY_DOC.encode()}]
    )
    page.locator("#chat-submit").click()
    added = page.locator('[data-step-type="assistant_message"]', has_text="Added osprey.md")
    expect(added).to_contain_text(re.compile(r"\d+ chunks? indexed"))
    ask(page, "When does Project Osprey ship?")
    answer = last_answer(page)
    expect(answer).to_contain_text(ANY_FOOTER)
    close_side_panel(page)
    answer.locator("a.element-link", has_text="[1]").click()
    side = page.locator("#side-view-content")
    expect(side).to_contain_text("uploads/osprey.md")
    expect(side).to_contain_text("Project Osprey ships on 3 March")
    # The passage's HTML is shown as text and never becomes DOM: no script or img, nothing ran.
    expect(side).to_contain_text("<script>window.__pwned = 1</script>")
    assert side.locator("script").count() == 0
    assert side.locator('img[src="x"]').count() == 0
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "html_as_text.png")
    assert_no_traceback(page)
