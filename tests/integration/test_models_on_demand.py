"""Models on demand: the CLI starts the embedded models it needs, or stops naming the one it lacks.

An evaluation never scores retrieval-only fallbacks: with no model, it exits non-zero naming
the model and its URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.fake_openai import FakeOpenAI, Fault, free_port
from tests.proc_tree import port_free

SMOL = "smollm2-135m-instruct"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG__")}
    env.update(
        {
            "RAG__DATA_DIR": str(tmp_path / "data"),
            "RAG__RETRIEVAL__RETRIEVER": "bm25",
            "RAG__MODELS__TIMEOUTS__CONNECT_S": "2",
            "RAG__MODELS__TIMEOUTS__RETRIES": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **extra,
        }
    )
    return env


def _rag(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_eval_answers_with_no_model_server_exits_naming_the_model(tmp_path: Path) -> None:
    slm_port, llm_port = free_port(), free_port()  # nothing listens there
    env = _env(
        tmp_path,
        RAG__MODELS__EMBEDDED__SLM_PORT=str(slm_port),
        RAG__MODELS__EMBEDDED__LLM_PORT=str(llm_port),
    )

    proc = _rag(["eval", "answers", "--limit", "2", "--no-start-models", "--json"], env)

    assert proc.returncode == 1
    assert "qwen2.5-coder-0.5b-instruct" in proc.stderr
    assert f"http://127.0.0.1:{slm_port}/v1" in proc.stderr
    assert "--no-start-models" in proc.stderr  # says how to fix it
    assert proc.stdout == ""  # no rows: nothing was scored


def test_eval_answers_never_scores_retrieval_only_fallbacks(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # The server answers /models (so it looks up) but every chat request fails.
    fake_openai.set_default("tiny-slm", Fault.status(503))
    env = _env(
        tmp_path,
        RAG__MODELS__SLM__PROVIDER="openai-compatible",
        RAG__MODELS__SLM__MODEL="tiny-slm",
        RAG__MODELS__SLM__BASE_URL=fake_openai.base_url,
        RAG__MODELS__LLM__PROVIDER="openai-compatible",
        RAG__MODELS__LLM__MODEL="tiny-slm",
        RAG__MODELS__LLM__BASE_URL=fake_openai.base_url,
    )

    proc = _rag(["eval", "answers", "--limit", "2", "--mode", "never", "--json"], env)

    assert proc.returncode == 1
    assert "does not score retrieval-only answers" in proc.stderr
    assert f"tiny-slm at {fake_openai.base_url}" in proc.stderr
    assert proc.stdout == ""
    assert fake_openai.requests_for("tiny-slm")  # it did try the model


@pytest.mark.slow
def test_eval_answers_starts_the_tiny_model_for_its_duration_and_stops_it(tmp_path: Path) -> None:
    from rag.models.artifacts import smollm2_path

    try:
        smollm2_path()
    except Exception as exc:  # installed by `make install`
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    port = free_port()
    env = _env(
        tmp_path,
        RAG__MODELS__SLM__MODEL=SMOL,
        RAG__MODELS__SLM__CONTEXT_WINDOW="2048",
        RAG__MODELS__SLM__MAX_TOKENS="32",
        RAG__MODELS__EMBEDDED__SLM_FILE=SMOL,
        RAG__MODELS__EMBEDDED__SLM_PORT=str(port),
        RAG__MODELS__EMBEDDED__N_CTX="2048",
        RAG__MODELS__TIMEOUTS__RETRIES="1",
        RAG__RETRIEVAL__TOP_K="2",
    )

    proc = _rag(["eval", "answers", "--limit", "2", "--mode", "never", "--json"], env, 300)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"slm: starting llama.cpp server for {SMOL} on http://127.0.0.1:{port}/v1" in proc.stderr
    assert "started for this command and stopped when it ends" in proc.stderr
    assert f"stopping the llama.cpp server(s) started for this command: {SMOL}" in proc.stderr
    row = json.loads(proc.stdout.splitlines()[0])
    assert row["mode"] == "never" and row["n"] == 2
    assert port_free(port)  # the server went with the command
