"""One browser test on a real model: llama.cpp's server on SmolLM2-135M behind the chat."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from rag.measure.fake_openai import free_port
from rag.models.artifacts import smollm2_path
from rag.models.embedded import ServerSpec, serve
from tests.e2e.conftest import (
    ask,
    assert_no_traceback,
    last_answer,
    open_chat,
    run_chainlit,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]
SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def real_app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        gguf = smollm2_path()
    except Exception as exc:  # installed by `make install`; say so rather than fail obscurely
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    spec = ServerSpec("slm", SMOL, gguf, free_port(), 2048, 2)
    workdir: Path = tmp_path_factory.mktemp("real-model")
    with serve([spec], workdir / "logs", progress=lambda _m: None):
        env = {
            "RAG__MODELS__SLM__MODEL": SMOL,
            "RAG__MODELS__LLM__MODEL": SMOL,
            "RAG__MODELS__SLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__LLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__SLM__MAX_TOKENS": "48",
            "RAG__RETRIEVAL__TOP_K": "3",
            "RAG__ESCALATION__MODE": "never",
        }
        with run_chainlit(workdir, spec.base_url, retriever="bm25", extra_env=env) as url:
            yield url


def test_real_small_model_streams_a_grounded_answer(page: Page, real_app_url: str) -> None:
    open_chat(page, real_app_url)
    ask(page, "How many vacation days do employees in the Netherlands get?")
    answer = last_answer(page)
    expect(answer).to_contain_text(
        re.compile(rf"bm25 · {SMOL} · .+ · total \d+\.\d s"), timeout=120_000
    )
    expect(page.get_by_role("button", name=re.compile(r"Retrieve \(bm25\)"))).to_be_visible()
    screenshot(page, "real_model.png")
    assert_no_traceback(page)
