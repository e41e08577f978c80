"""The `rag compare` report opens offline in Chromium and its charts are drawn; the chat links it.

The report comes from a real `rag compare --report` run against FakeOpenAI; the browser context
is offline, so anything the page tried to fetch would fail (and the page must not need it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from rag.measure.report import write_report
from tests.conftest import SCREENSHOT_DIR
from tests.e2e.conftest import (
    VIEWPORT,
    ask,
    last_answer,
    open_chat,
    run_chainlit,
    screenshot,
)
from tests.fake_openai import FakeOpenAI
from tests.integration.test_cli import LLM, SLM, rag_env, run_rag
from tests.integration.test_compare import _model_reply, _qa
from tests.unit.test_report import result

pytestmark = [pytest.mark.browser]


def test_report_opens_offline_with_charts(
    browser: Browser, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.set_default(SLM, _model_reply)
    fake_openai.set_default(LLM, _model_reply)
    fake_openai.configure(LLM, first_token_delay_s=0.05, token_delay_s=0.01)  # two latency bands
    report = tmp_path / "report.html"
    proc = run_rag(
        ["compare", "--data", str(_qa(tmp_path / "qa")), "--split", "all", "--report", str(report)],
        rag_env(tmp_path, fake_openai.base_url, fake_openai.base_url),
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr

    context = browser.new_context(viewport=VIEWPORT, offline=True)
    requests: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())

        expect(page.locator("h1")).to_contain_text(f"{SLM} vs {LLM}")
        charts = page.locator("svg.chart")
        expect(charts).to_have_count(5)
        for i in range(5):
            box = charts.nth(i).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100, i
        dots = page.locator("svg.chart circle")
        assert dots.count() == 2 * 2 * 4  # (ttft + total) x 2 models x 4 questions
        box = dots.first.bounding_box()
        assert box is not None and box["width"] > 0
        bars = page.locator("svg.chart rect.bar")
        heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
        assert sum(h > 1 for h in heights) >= 6  # rubric and gold bars have a visible height
        expect(page.get_by_text("not measurable here").first).to_be_visible()
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "compare_report.png"), full_page=True)
    finally:
        context.close()
    assert [u for u in requests if not u.startswith("file://")] == []


@pytest.fixture(scope="module")
def app_with_report(
    tmp_path_factory: pytest.TempPathFactory, fake_models_url: str
) -> Iterator[str]:
    """The chat app whose data folder already holds a latest report (as `rag compare` leaves it)."""
    workdir = tmp_path_factory.mktemp("chainlit-report")
    write_report(result(), workdir / "data" / "reports" / "latest.html")
    with run_chainlit(workdir, fake_models_url) as url:
        yield url


@pytest.mark.e2e
def test_stats_and_compare_link_the_latest_report(page: Page, app_with_report: str) -> None:
    open_chat(page, app_with_report)

    ask(page, "/stats")
    link = last_answer(page).get_by_role("link", name="Small vs large model: the latest report")
    expect(link).to_have_attribute("href", "/reports/latest")
    ask(page, "/compare")
    expect(last_answer(page)).to_contain_text("Usage: /compare your question")
    expect(last_answer(page).get_by_role("link")).to_have_count(1)

    page.goto(app_with_report + "/reports/latest")
    expect(page.locator("h1")).to_contain_text("Small vs large")
    expect(page.locator("svg.chart")).to_have_count(5)
    screenshot(page, "compare_report_served.png")
