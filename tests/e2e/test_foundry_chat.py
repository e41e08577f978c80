"""The chat on Foundry Local: the small model is SmolLM2 converted for ONNX Runtime GenAI and run
in process by foundry-local-sdk (no model server), answering a docs question in the browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    ask,
    assert_no_traceback,
    last_answer,
    open_chat,
    run_chainlit,
    screenshot,
)
from tests.fake_openai import closed_port_url
from tests.foundry_support import SMOL, EmptyCatalog, converted_smollm2

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.foundry]


@pytest.fixture(scope="module")
def foundry_app_url(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    converted_smollm2(repo_root)
    workdir = tmp_path_factory.mktemp("foundry-chat")
    (workdir / "data").mkdir()
    # The app's data dir is fresh (its index is built anew); the converted model is the repo's.
    (workdir / "data" / "models").symlink_to((repo_root / ".rag" / "models").resolve())
    with EmptyCatalog() as catalog:
        env = {
            "RAG__MODELS__SLM__PROVIDER": "foundry-local",
            "RAG__MODELS__SLM__MODEL": SMOL,
            "RAG__MODELS__SLM__BASE_URL": "",
            "RAG__MODELS__SLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__SLM__MAX_TOKENS": "48",
            # The large model too, so whichever the chat profile asks, Foundry Local answers.
            "RAG__MODELS__LLM__PROVIDER": "foundry-local",
            "RAG__MODELS__LLM__MODEL": SMOL,
            "RAG__MODELS__LLM__BASE_URL": "",
            "RAG__MODELS__LLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__LLM__MAX_TOKENS": "48",
            "RAG__MODELS__FOUNDRY__RUNTIME": "in-process",
            "RAG__MODELS__FOUNDRY__CATALOG_URL": catalog.url,
            "RAG__MODELS__FOUNDRY__APP_DIR": str(workdir / "foundry-app"),
            "RAG__RETRIEVAL__TOP_K": "3",
        }
        # No model server at all: nothing listens at the URL run_chainlit passes.
        with run_chainlit(workdir, closed_port_url(), retriever="bm25", extra_env=env) as url:
            yield url


def test_foundry_local_in_process_answers_a_docs_question(page: Page, foundry_app_url: str) -> None:
    open_chat(page, foundry_app_url)
    ask(page, "How many vacation days do employees in the Netherlands get?")
    answer = last_answer(page)
    expect(answer).to_contain_text(
        re.compile(rf"bm25 · {SMOL} · .+ · total \d+\.\d s"), timeout=120_000
    )
    expect(page.get_by_text(re.compile("unavailable|cannot reach"))).to_have_count(0)
    screenshot(page, "foundry_local_chat.png")
    assert_no_traceback(page)
