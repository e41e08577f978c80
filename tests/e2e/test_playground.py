"""The streaming playground at /playground: tokens appear as they arrive, each run is charted.

The page is public/playground.html (+ playground.js), served by app.py ahead of Chainlit's
catch-all route; it POSTs to /playground/stream and reads server-sent events. Selectors:
`#prompt`, `#reference`, the model toggle's labels `label[for=role-slm|role-llm]`, `#run`,
`#output`, `#status`, and the chart `#chart` (one `circle.total` per run).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import is_loopback_host
from tests.e2e.conftest import LLM, SLM, USERS, PageRequests, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PROMPT = "When does Project Kestrel launch?"
REFERENCE = (
    "Project Kestrel launches on 3 March from the Lisbon office. "
    "It replaces the old ticket tool for the support team."
)
ECHO = "Project Kestrel launches on 3 March from the Lisbon office. [1]"  # the fake's reply

# Records each distinct length the output had while the run streamed.
WATCH_OUTPUT = """() => {
    const out = document.getElementById('output');
    const lengths = window.__lengths = [];
    new MutationObserver(() => {
        const n = out.textContent.length;
        if (n && !lengths.includes(n)) lengths.push(n);
    }).observe(out, {subtree: true, childList: true, characterData: true});
}"""


def test_playground_streams_tokens_and_charts_each_run(
    page: Page, app_url: str, page_requests: PageRequests
) -> None:
    page.goto(f"{app_url}/playground")
    expect(page.get_by_role("heading", name="Streaming playground")).to_be_visible()
    expect(page.locator("#chart circle")).to_have_count(0)
    page.locator("#prompt").fill(PROMPT)
    page.locator("#reference").fill(REFERENCE)
    page.evaluate(WATCH_OUTPUT)

    page.locator("#run").click()  # the small model is selected by default
    expect(page.locator("#output")).to_have_text(ECHO)
    lengths = page.evaluate("window.__lengths")
    assert len(lengths) >= 3, f"the answer did not stream token by token: {lengths}"
    status = page.locator("#status")
    expect(status).to_contain_text(SLM)
    expect(status).to_contain_text("first token")
    expect(status).to_contain_text("answered from the reference text")
    points = page.locator("#chart circle.total")
    expect(points).to_have_count(1)
    expect(points.first).to_have_attribute("data-model", SLM)
    expect(page.locator("#chart .ttft")).to_have_count(1)

    page.locator("label[for=role-llm]").click()
    expect(page.locator("#role-llm")).to_be_checked()
    page.locator("#run").click()
    expect(points).to_have_count(2)
    expect(points.nth(1)).to_have_attribute("data-model", LLM)
    expect(page.locator("#output")).to_have_text(ECHO)
    expect(page.locator("#legend")).to_contain_text(SLM)
    expect(page.locator("#legend")).to_contain_text(LLM)
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    screenshot(page, "playground.png")

    # Everything came from this server: no CDN, no fonts, no chart library from elsewhere.
    assert page_requests.blocked == [], f"the page tried to reach: {page_requests.blocked}"
    assert all(
        is_loopback_host(urlsplit(u).hostname or "") for u in page_requests.all if "//" in u
    ), page_requests.all


def test_playground_shows_a_clear_error_for_an_oversized_reference(
    page: Page, app_url: str
) -> None:
    page.goto(f"{app_url}/playground")
    page.locator("#prompt").fill(PROMPT)
    page.locator("#reference").fill("word " * 20_000)
    page.locator("#run").click()
    status = page.locator("#status")
    expect(status).to_contain_text("Paste only the relevant part")
    expect(status).to_have_class("error")
    expect(page.locator("#chart circle")).to_have_count(0)


def _post_stream(url: str, body: object, opener: urllib.request.OpenerDirector) -> list[dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/playground/stream", data=data, headers={"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = resp.read().decode()
    return [json.loads(b[len("data: ") :]) for b in text.split("\n\n") if b.startswith("data: ")]


def test_playground_stream_needs_sign_in_when_sign_in_is_on(auth_app_url: str) -> None:
    anonymous = urllib.request.build_opener()
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post_stream(auth_app_url, {"role": "slm", "prompt": PROMPT}, anonymous)
    assert refused.value.code == 401

    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urlencode({"username": "alice", "password": USERS["alice"]}).encode()
    with opener.open(f"{auth_app_url}/login", data=form, timeout=10) as resp:
        assert resp.status == 200
    events = _post_stream(auth_app_url, {"role": "llm", "prompt": PROMPT}, opener)
    assert [e["type"] for e in events][-1] == "done", events
    assert events[-1]["model"] == LLM
    assert all(e["type"] == "token" for e in events[:-1]) and len(events) > 2
