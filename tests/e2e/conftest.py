"""Real servers for browser tests: the fake OpenAI server, `chainlit run app.py`, Debian's Chromium.

Each test gets a fresh browser context whose requests to anything but loopback are aborted and
recorded in `page_requests.blocked`, so a page that tries to reach the internet is caught, not
left waiting on DNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from rag.measure.fake_openai import closed_port_url, free_port
from rag.procs import log_tail
from tests.conftest import REPO_ROOT, SCREENSHOT_DIR, is_loopback_host

CHROMIUM = Path(os.environ.get("RAG_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SLM = "qwen2.5-coder-0.5b-instruct"
LLM = "qwen2.5-coder-1.5b-instruct"
TOKEN_DELAY_S = 0.02  # slow enough that streaming is visible, fast enough for a quick suite
START_TIMEOUT_S = 90.0
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
ANSWER_TIMEOUT_MS = 30_000
FOOTER = re.compile(r"lexical · .+ · total \d+\.\d s")  # app.py's metrics line

expect.set_options(timeout=ANSWER_TIMEOUT_MS)


SERVER_LOGS: list[Path] = []  # logs of the servers started this session, newest last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tails of the server logs to a failing browser test's report."""
    report = yield
    if report.failed and report.when == "call" and item.get_closest_marker("browser"):
        for log in SERVER_LOGS:
            report.sections.append((f"server log {log.parent.name}/{log.name}", log_tail(log, 25)))
    return report


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_http_200(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{what} exited with code {proc.returncode}; log tail:\n{log_tail(log, 40)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.25)
    _stop(proc)
    pytest.fail(
        f"{what} did not answer HTTP 200 on {url} within {START_TIMEOUT_S:g} s ({last}); "
        f"log tail:\n{log_tail(log, 40)}"
    )


@contextlib.contextmanager
def run_fake_openai(workdir: Path, script: Mapping[str, object]) -> Iterator[str]:
    """Run `python -m rag.measure.fake_openai` with `script`; yields its /v1 base URL."""
    script_path = workdir / "fake_openai_script.json"
    script_path.write_text(json.dumps(script), encoding="utf-8")
    log = workdir / "fake_openai.log"
    SERVER_LOGS.append(log)
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rag.measure.fake_openai",
                "--port",
                str(port),
                "--script",
                script_path,
            ],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http_200(f"http://127.0.0.1:{port}/v1/models", proc, log, "the fake OpenAI server")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


@contextlib.contextmanager
def run_chainlit(
    workdir: Path,
    models_base_url: str,
    retriever: str = "lexical",
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run `chainlit run app.py --headless` on a free loopback port; yields the app's URL.

    The app works on a copy of docs_corpus under `workdir` (uploads land there, never in the
    repository) and keeps its index and chat history in `workdir`/data. Sign-in is off unless
    `extra_env` sets CHAINLIT_AUTH_SECRET and RAG_USERS.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    if not corpus.exists():
        shutil.copytree(REPO_ROOT / "docs_corpus", corpus, ignore=shutil.ignore_patterns("uploads"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("CHAINLIT_AUTH_SECRET", "RAG_USERS")},
        "RAG__MODELS__SLM__BASE_URL": models_base_url,
        "RAG__MODELS__LLM__BASE_URL": models_base_url,
        "RAG__MODELS__SLM__MODEL": SLM,
        "RAG__MODELS__LLM__MODEL": LLM,
        "RAG__DATA_DIR": str(workdir / "data"),
        "RAG__CORPUS__PATH": str(corpus),
        "RAG__CORPUS__UPLOADS_DIR": str(corpus / "uploads"),
        "RAG__RETRIEVAL__RETRIEVER": retriever,
        # The fake's one-sentence drafts count as short whatever rag.yaml's tuning says, so the
        # Cascade profile escalates and the answer streams (test_browser.py relies on both):
        # the hand-set signals policy, whose short-draft threshold the tests set here.
        "RAG__ESCALATION__POLICY": "signals",
        "RAG__ESCALATION__MIN_DRAFT_CHARS": "120",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log = workdir / "chainlit.log"
    SERVER_LOGS.append(log)
    cmd = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http_200(f"{url}/", proc, log, "chainlit")
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def fake_models_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both models answer "@echo-context" (first sentence of passage [1] + " [1]"), streamed."""
    spec = {"default": "@echo-context", "token_delay_s": TOKEN_DELAY_S}
    script = {"models": {SLM: spec, LLM: spec}}
    with run_fake_openai(tmp_path_factory.mktemp("fake-openai"), script) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory, fake_models_url: str) -> Iterator[str]:
    """The chat app served by chainlit, its models pointed at the fake server."""
    with run_chainlit(tmp_path_factory.mktemp("chainlit"), fake_models_url) as url:
        yield url


# The accounts of the signed-in app (RAG_USERS); the secret signs its session tokens.
USERS = {"alice": "correct-horse", "bob": "battery-staple"}
AUTH_SECRET = "e2e-test-secret-not-for-production-0123456789abcdef"


@pytest.fixture(scope="session")
def auth_app_url(tmp_path_factory: pytest.TempPathFactory, fake_models_url: str) -> Iterator[str]:
    """The chat app with sign-in on (CHAINLIT_AUTH_SECRET + RAG_USERS), so history is listed."""
    users = ",".join(f"{name}:{password}" for name, password in USERS.items())
    env = {"CHAINLIT_AUTH_SECRET": AUTH_SECRET, "RAG_USERS": users}
    with run_chainlit(
        tmp_path_factory.mktemp("chainlit-auth"), fake_models_url, extra_env=env
    ) as url:
        yield url


@pytest.fixture(scope="session")
def app_url_models_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second chat app whose model servers refuse connections (nothing listens there)."""
    with run_chainlit(tmp_path_factory.mktemp("chainlit-down"), closed_port_url()) as url:
        yield url


class _SharedBrowser:
    """One Chromium for a run of consecutive browser tests, stopped as soon as the run ends.

    Playwright's sync API keeps an asyncio loop running in the main thread while it is started,
    and every `asyncio.run()` in a later test (unit, integration, load tests) then fails with
    "cannot be called from a running event loop". So it is not a session fixture: the teardown
    hook below stops it when the next test needs no browser, and it starts again on demand.
    """

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def get(self) -> Browser:
        if self._browser is None or not self._browser.is_connected():
            self.close()
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        browser, playwright = self._browser, self._playwright
        self._browser = self._playwright = None
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()
        if playwright is not None:
            with contextlib.suppress(Exception):
                playwright.stop()


_SHARED_BROWSER = _SharedBrowser()


@pytest.fixture
def browser() -> Browser:
    """Debian's Chromium (never `playwright install`), shared by consecutive browser tests."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found; install it with `make system-deps` (apt chromium)")
    return _SHARED_BROWSER.get()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """After the fixtures' teardown: stop Chromium unless the next test uses it too."""
    try:
        return (yield)
    finally:
        if nextitem is None or "browser" not in getattr(nextitem, "fixturenames", ()):
            _SHARED_BROWSER.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _SHARED_BROWSER.close()


@dataclass
class PageRequests:
    """Every URL the page requested, and those aborted for leaving loopback."""

    all: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or is_loopback_host(parts.hostname or "")


@pytest.fixture
def page_requests() -> PageRequests:
    """The requests of this test's `page` (filled while the test runs)."""
    return PageRequests()


@pytest.fixture
def page(browser: Browser, page_requests: PageRequests) -> Iterator[Page]:
    """A page in a fresh browser context; requests that leave loopback are aborted and recorded."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)

    def block(route: Route) -> None:
        page_requests.blocked.append(route.request.url)
        route.abort("internetdisconnected")

    context.route(lambda url: not _is_local(url), block)
    pg = context.new_page()
    pg.on("request", lambda request: page_requests.all.append(request.url))
    yield pg
    context.close()


# -- page helpers (Chainlit 2.12's DOM) -----------------------------------------------------------


def open_chat(page: Page, url: str) -> None:
    """Load the app and wait for on_chat_start's welcome before typing anything."""
    page.goto(url)
    welcome = page.locator('[data-step-type="assistant_message"]').first
    expect(welcome).to_contain_text("Welcome to the Docs Assistant")
    expect(page.locator("#chat-input")).to_be_editable()


def sign_in(page: Page, url: str, user: str = "alice") -> None:
    """Sign in on Chainlit's login page and wait for the chat's welcome."""
    page.goto(url)
    page.locator("#email").fill(user)
    page.locator("#password").fill(USERS[user])
    page.get_by_role("button", name="Sign In").click()
    expect(page.locator('[data-step-type="assistant_message"]').first).to_contain_text(
        "Welcome to the Docs Assistant"
    )
    expect(page.locator("#chat-input")).to_be_editable()


def ask(page: Page, text: str) -> None:
    """Put `text` in the composer (a textarea) and send it with Enter."""
    composer = page.locator("#chat-input")
    composer.fill(text)
    composer.press("Enter")


def last_answer(page: Page) -> Locator:
    """The newest assistant message (answers, notices and refusals are all messages)."""
    return page.locator('[data-step-type="assistant_message"]').last


def assert_no_traceback(page: Page) -> None:
    """The user never sees a Python traceback."""
    body = page.locator("body").inner_text()
    assert "Traceback" not in body, body[-2000:]
    assert not re.search(r'File ".+", line \d+', body), body[-2000:]


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot to artifacts/screenshots/<name>."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / name), full_page=True)
