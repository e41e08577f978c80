"""The `rag` command in a subprocess, against FakeOpenAI and the mini corpus.

Exit codes: 0 ok, 2 bad usage / configuration / input, 1 runtime failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.assistant import build_assistant
from rag.cli import done_to_json
from rag.config import load_config
from rag.errors import ConfigError
from rag.measure.fake_openai import FakeOpenAI, closed_port_url
from rag.models.openai_compat import OpenAICompatModel
from rag.types import Done

CORPUS = Path(__file__).resolve().parents[1] / "data" / "mini_corpus"
SLM, LLM = "tiny-slm", "big-llm"
Q_MEALS = "How much are meal expenses reimbursed per day?"
SHORT_DRAFT = "Up to 45 euros [1]."
LLM_ANSWER = "Meal expenses are reimbursed up to 45 euros per day of business travel [1]."
_RAG = Path(sys.executable).with_name("rag")
RAG = [str(_RAG)] if _RAG.exists() else [sys.executable, "-m", "rag.cli"]


def rag_env(tmp_path: Path, slm_url: str, llm_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG__")}
    env.update(
        {
            "RAG__DATA_DIR": str(tmp_path / "data"),
            "RAG__CORPUS__PATH": str(CORPUS),
            "RAG__RETRIEVAL__RETRIEVER": "lexical",
            "RAG__MODELS__SLM__PROVIDER": "openai-compatible",
            "RAG__MODELS__SLM__MODEL": SLM,
            "RAG__MODELS__SLM__BASE_URL": slm_url,
            "RAG__MODELS__LLM__PROVIDER": "openai-compatible",
            "RAG__MODELS__LLM__MODEL": LLM,
            "RAG__MODELS__LLM__BASE_URL": llm_url,
            "RAG__MODELS__TIMEOUTS__CONNECT_S": "2",
            "RAG__MODELS__TIMEOUTS__FIRST_TOKEN_S": "10",
            "RAG__MODELS__TIMEOUTS__TOTAL_S": "20",
            "RAG__MODELS__TIMEOUTS__RETRIES": "0",
            # the hand-set signals escalate the fake's short draft; the router is tested apart
            "RAG__ESCALATION__POLICY": "signals",
        }
    )
    env.update(extra)
    return env


def run_rag(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*RAG, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.set_default(SLM, SHORT_DRAFT)  # short: auto mode escalates
    fake_openai.set_default(LLM, LLM_ANSWER)
    return fake_openai


@pytest.fixture
def env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return rag_env(tmp_path, fake.base_url, fake.base_url)


# -- index ----------------------------------------------------------------------------------


def test_index_builds_then_loads(env: dict[str, str], tmp_path: Path) -> None:
    first = run_rag(["index"], env, tmp_path)
    second = run_rag(["index"], env, tmp_path)

    assert first.returncode == 0, first.stderr
    assert "built the lexical index" in first.stdout
    assert "9 chunks from 7 documents" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "loaded the lexical index: 9 chunks from 7 documents" in second.stdout
    assert (tmp_path / "data" / "index" / "lexical" / "manifest.json").is_file()


# -- ask ------------------------------------------------------------------------------------


def test_ask_json_prints_one_object(fake: FakeOpenAI, env: dict[str, str], tmp_path: Path) -> None:
    proc = run_rag(["ask", "--json", Q_MEALS], env, tmp_path)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert {"answer", "sources", "model", "timings", "tokens"} <= set(out)
    assert out["question"] == Q_MEALS
    assert out["answer"] == LLM_ANSWER
    assert out["model"] == LLM
    assert out["models"] == [SLM, LLM]
    assert out["escalated"] is True
    assert "short draft" in out["reason"]
    assert out["retriever"] == "lexical"
    first = out["sources"][0]
    assert {"id", "n", "path", "title", "score", "cited"} <= set(first)
    assert (first["id"], first["n"], first["path"]) == ("expenses.md#Meals#0", 1, "expenses.md")
    assert first["title"] == "Travel and Expenses Policy"
    assert first["cited"] is True
    assert all(isinstance(s["score"], float) and s["score"] > 0 for s in out["sources"])
    timings = out["timings"]
    assert {"retrieval_ms", "ttft_ms", "total_ms", "prep_ms"} <= set(timings)
    assert all(timings[k] >= 0 for k in ("retrieval_ms", "ttft_ms", "prep_ms"))
    assert timings["total_ms"] > timings["ttft_ms"] > 0
    assert set(timings["stages"]) == {"draft", "answer"}
    assert out["tokens"]["prompt"] > 0 and out["tokens"]["completion"] > 0
    assert len(fake.requests_for(SLM)) == len(fake.requests_for(LLM)) == 1


def test_ask_streams_the_answer_and_lists_sources(
    fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    args = ["ask", "--mode", "always", "--seed", "7", "--temperature", "0", Q_MEALS]

    proc = run_rag(args, env, tmp_path)

    assert proc.returncode == 0, proc.stderr
    answer, _, rest = proc.stdout.partition("Sources:")
    assert answer.strip() == LLM_ANSWER
    assert "*[1] expenses.md — Meals" in rest
    assert "[2] expenses.md — Receipts" in rest
    assert "[retrieve] lexical" in proc.stderr
    assert f"[answer] {LLM}" in proc.stderr
    assert fake.requests_for(SLM) == []
    body = fake.requests_for(LLM)[0].body
    assert (body["seed"], body["temperature"]) == (7, 0)


@pytest.mark.parametrize(
    ("question", "message"),
    [("", "The message is empty"), ("q" * 50_000, "50,000 characters")],
    ids=["empty", "too-long"],
)
def test_ask_bad_question_exits_2(
    fake: FakeOpenAI, env: dict[str, str], tmp_path: Path, question: str, message: str
) -> None:
    proc = run_rag(["ask", question], env, tmp_path)

    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.startswith("rag: ")
    assert proc.stdout == ""
    assert fake.requests == []


def test_ask_with_every_model_server_down_exits_1_with_passages(tmp_path: Path) -> None:
    env = rag_env(tmp_path, closed_port_url(), closed_port_url())

    proc = run_rag(["ask", Q_MEALS], env, tmp_path)

    assert proc.returncode == 1
    assert "No model could answer" in proc.stderr
    assert "cannot reach model server" in proc.stderr
    assert "No model is reachable" in proc.stdout
    assert "> Acme reimburses meal expenses up to 45 euros per day" in proc.stdout
    assert "Sources:" in proc.stdout


def test_ask_json_ttft_is_the_first_streamed_token(env: dict[str, str]) -> None:
    async def ask() -> Done:
        assistant = build_assistant(load_config(None, env))
        events = [ev async for ev in assistant.ask(Q_MEALS)]
        for model in (assistant.slm, assistant.llm):
            if isinstance(model, OpenAICompatModel):
                await model.aclose()
        assert isinstance(events[-1], Done)
        return events[-1]

    timings = done_to_json(asyncio.run(ask()), Q_MEALS)["timings"]

    assert set(timings["stages"]) == {"draft", "answer"}
    assert timings["ttft_ms"] == timings["stages"]["draft"]["ttft_ms"]


def test_ask_json_reports_that_the_large_model_was_down(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = rag_env(tmp_path, fake.base_url, closed_port_url())

    proc = run_rag(["ask", "--json", Q_MEALS], env, tmp_path)

    assert json.loads(proc.stdout)["answer"] == SHORT_DRAFT
    assert "large model is unavailable" in proc.stdout + proc.stderr


# -- configuration and usage errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("retrieval:\n  top_k: [\n", ["bad.yaml is not valid YAML", "line 3"]),
        ("retrieval:\n  top_k: many\n", ["retrieval.top_k", "valid integer", "'many'"]),
        ("retrieval:\n  colour: blue\n", ["retrieval.colour", "Extra inputs are not permitted"]),
        ("- just\n- a list\n", ["must be a mapping of sections"]),
    ],
    ids=["syntax", "bad-value", "unknown-key", "not-a-mapping"],
)
def test_bad_config_file_exits_2_naming_the_problem(
    tmp_path: Path, yaml_text: str, expected: list[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(yaml_text, encoding="utf-8")
    env = rag_env(tmp_path, closed_port_url(), closed_port_url())

    proc = run_rag(["--config", "bad.yaml", "ask", Q_MEALS], env, tmp_path)

    assert proc.returncode == 2
    for text in expected:
        assert text in proc.stderr
    assert proc.stdout == ""


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    env = rag_env(tmp_path, closed_port_url(), closed_port_url())

    proc = run_rag(["--config", "nope.yaml", "index"], env, tmp_path)

    assert proc.returncode == 2
    assert "config file nope.yaml does not exist" in proc.stderr


def test_unknown_retriever_flag_exits_2(tmp_path: Path) -> None:
    env = rag_env(tmp_path, closed_port_url(), closed_port_url())

    proc = run_rag(["ask", "--retriever", "nope", Q_MEALS], env, tmp_path)

    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert "lexical" in proc.stderr and "hybrid" in proc.stderr


@pytest.mark.parametrize(
    "flags",
    [["--top-k", "0"], ["--top-k", "-1"], ["--temperature", "5"]],
    ids=["top-k-0", "top-k-negative", "temperature-5"],
)
def test_out_of_range_flags_exit_2(env: dict[str, str], tmp_path: Path, flags: list[str]) -> None:
    proc = run_rag(["ask", *flags, Q_MEALS], env, tmp_path)

    assert proc.returncode == 2
    assert flags[0] in proc.stderr


def test_unknown_mode_from_the_environment_exits_2_listing_choices(tmp_path: Path) -> None:
    env = rag_env(tmp_path, closed_port_url(), closed_port_url(), RAG__ESCALATION__MODE="sometimes")

    proc = run_rag(["ask", Q_MEALS], env, tmp_path)

    assert proc.returncode == 2
    assert "escalation.mode" in proc.stderr
    assert "'auto', 'never', 'always' or 'compare'" in proc.stderr
    assert "'sometimes'" in proc.stderr


def test_config_error_names_the_environment_once(tmp_path: Path) -> None:
    env = rag_env(tmp_path, closed_port_url(), closed_port_url(), RAG__ESCALATION__MODE="sometimes")

    with pytest.raises(ConfigError) as info:
        load_config(None, env)

    assert str(info.value).startswith("invalid configuration in defaults + environment (RAG__…):\n")
