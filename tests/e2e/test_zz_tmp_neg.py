import pytest
from playwright.sync_api import Page, expect
from tests.e2e.conftest import open_chat
pytestmark = [pytest.mark.browser, pytest.mark.e2e]
def test_fails(page: Page, app_url: str) -> None:
    open_chat(page, app_url)
    expect(page.locator("#nope")).to_be_visible(timeout=1000)
