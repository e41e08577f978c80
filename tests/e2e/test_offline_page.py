"""The chat page loads nothing from outside this machine: no Google Fonts, no CDN, no trackers.

Two checks: the served HTML (and the CSS/JS it loads) names no remote resource the browser
would fetch, and a real page load plus a question makes only loopback requests.
"""

from __future__ import annotations

import json
import re
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import Page, WebSocket, expect

from tests.conftest import is_loopback_host
from tests.e2e.conftest import FOOTER, PageRequests, ask, last_answer, open_chat

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Hosts a Chainlit page has been known to pull from; none may appear in what the page loads.
REMOTE_HOSTS = (
    "fonts.googleapis.com",
    "fonts.gstatic.com",
    "cdn.jsdelivr.net",
    "unpkg.com",
    "cdnjs.cloudflare.com",
)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])(https?:)?//([^/'")\s]+)""", re.I)

# (tag, attribute) pairs whose URL the browser fetches or connects to while loading the page.
FETCHED = {
    ("link", "href"),
    ("script", "src"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("audio", "src"),
    ("video", "src"),
    ("embed", "src"),
    ("object", "data"),
}


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in FETCHED and value:
                self.urls.append((tag, value))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200, url
        return str(resp.read().decode("utf-8", errors="replace"))


def _remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) and not is_loopback_host(parts.hostname or "")


def test_served_html_and_assets_name_no_remote_resource(app_url: str) -> None:
    html = _get(f"{app_url}/")
    parser = _Resources()
    parser.feed(html)
    assert any(tag == "script" for tag, _ in parser.urls), "no <script> found: is this the app?"

    remote = [f"<{tag}> {url}" for tag, url in parser.urls if _remote(url)]
    assert remote == [], f"the page would load remote resources: {remote}"
    for host in REMOTE_HOSTS:
        assert host not in html, f"the page names {host}"

    for tag, url in parser.urls:
        if tag not in ("script", "link") or not url.endswith((".js", ".css")):
            continue
        text = _get(urljoin(f"{app_url}/", url))
        for host in REMOTE_HOSTS:
            assert host not in text, f"{url} references {host}"
        if url.endswith(".css"):
            hosts = {h for _, h in CSS_URL.findall(text) if not is_loopback_host(h.split(":")[0])}
            assert hosts == set(), f"{url} loads CSS resources from {sorted(hosts)}"


def test_page_only_talks_to_loopback_while_answering(
    page: Page, app_url: str, page_requests: PageRequests
) -> None:
    sockets: list[str] = []

    def on_websocket(ws: WebSocket) -> None:
        sockets.append(ws.url)

    page.on("websocket", on_websocket)
    open_chat(page, app_url)
    ask(page, "Who approves production releases?")
    answer = last_answer(page)
    expect(answer).to_contain_text(FOOTER)
    link = answer.locator("a.element-link").first
    if link.count():
        link.click()
        expect(page.locator("#side-view-content")).to_be_visible()
    page.wait_for_load_state("networkidle")

    assert page_requests.blocked == [], f"the page tried to reach: {page_requests.blocked}"
    assert any("/assets/" in url for url in page_requests.all), page_requests.all
    off_machine = [u for u in page_requests.all + sockets if _remote(u)]
    assert off_machine == [], off_machine


def test_playground_and_its_in_browser_engine_name_no_remote_resource(app_url: str) -> None:
    html = _get(f"{app_url}/playground")
    parser = _Resources()
    parser.feed(html)
    scripts = [url for tag, url in parser.urls if tag == "script"]
    assert scripts, "no <script> found on /playground"
    assert [u for _, u in parser.urls if _remote(u)] == []
    # The first-party code, including the module the page imports for the in-browser engine.
    for url in [*scripts, "/public/playground-local.js", "/public/playground-minilm.js"]:
        text = _get(urljoin(f"{app_url}/", url))
        for host in REMOTE_HOSTS:
            assert host not in text, f"{url} references {host}"
    # wllama's bundle names a CDN for its "compat" build; the page must switch that off.
    local = _get(f"{app_url}/public/playground-local.js")
    assert "setCompat(null)" in local
    manifest = json.loads(_get(f"{app_url}/playground/engines"))
    urls = [manifest["wllama"]["module"], manifest["wllama"]["wasm"]]
    embedder = manifest["embedder"]  # the MiniLM passage scorer on onnxruntime-web
    urls += [embedder[k] for k in ("module", "wasm_prefix", "model", "vocab") if embedder[k]]
    for url in urls + [m["url"] for m in manifest["models"]]:
        assert not _remote(url) and not url.startswith("//"), url
    # onnxruntime-web fetches its glue and .wasm from wasmPaths, which the page sets to the app.
    assert "wasmPaths = url(this.spec.wasm_prefix)" in _get(
        f"{app_url}/public/playground-minilm.js"
    )
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs"):
        text = _get(f"{app_url}/playground/assets/ort/{name}")
        for host in REMOTE_HOSTS:
            assert host not in text, f"{name} references {host}"


def test_playground_only_talks_to_loopback_when_the_browser_engine_is_picked(
    page: Page, app_url: str, page_requests: PageRequests
) -> None:
    page.goto(f"{app_url}/playground")
    page.locator("label[for=role-browser]").click()
    expect(page.locator("#browser-backend")).not_to_be_empty()
    page.wait_for_load_state("networkidle")
    assert page_requests.blocked == [], f"the page tried to reach: {page_requests.blocked}"
    assert any(u.endswith("/playground/engines") for u in page_requests.all), page_requests.all
    off_machine = [u for u in page_requests.all if _remote(u)]
    assert off_machine == [], off_machine
