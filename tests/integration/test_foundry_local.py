"""Foundry Local for real: the SDK's runtime (foundry-local-sdk 2.x) on SmolLM2 converted from
the GGUF we ship (`rag models build --foundry`, cached under .rag/models/foundry).

Offline, the SDK reads an empty model catalog served on loopback (tests/foundry_catalog.py):
models come from its local catalog, where the converted folder is registered. Its web service
serves catalog models only, so over HTTP the real service is exercised for endpoint discovery,
listing and its "no such model" answer; a chat over HTTP runs against the fake server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import Config, load_config
from rag.errors import ModelError
from rag.models import CallRecord, FoundryLocalModel, make_chat_model
from rag.models.artifacts import smollm2_path
from rag.models.embedded import ServerSpec, serve
from rag.models.foundry import FoundryRuntime, served_models
from tests.fake_openai import FakeOpenAI, closed_port_url, free_port
from tests.foundry_support import SMOL, EmptyCatalog, converted_smollm2

pytestmark = [pytest.mark.slow, pytest.mark.foundry]

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def smol_foundry(repo_root: Path) -> Path:
    return converted_smollm2(repo_root)


@pytest.fixture(scope="module")
def catalog() -> Iterator[EmptyCatalog]:
    with EmptyCatalog() as cat:
        yield cat


@pytest.fixture(scope="module")
def sdk_env(
    smol_foundry: Path,
    catalog: EmptyCatalog,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """RAG__ overrides that put the small model on Foundry Local in process, offline."""
    return {
        "RAG__DATA_DIR": str(repo_root / ".rag"),
        "RAG__MODELS__SLM__PROVIDER": "foundry-local",
        "RAG__MODELS__SLM__MODEL": SMOL,
        "RAG__MODELS__SLM__MAX_TOKENS": "48",
        "RAG__MODELS__SLM__CONTEXT_WINDOW": "2048",
        "RAG__MODELS__FOUNDRY__RUNTIME": "in-process",
        "RAG__MODELS__FOUNDRY__CATALOG_URL": catalog.url,
        "RAG__MODELS__FOUNDRY__APP_DIR": str(tmp_path_factory.mktemp("foundry-app")),
        "RAG__MODELS__TIMEOUTS__RETRIES": "0",
    }


def _cfg(env: dict[str, str], **extra: str) -> Config:
    return load_config(None, environ={**env, **extra})


def _run(model: FoundryLocalModel, messages: list[dict[str, str]]) -> tuple[list[str], CallRecord]:
    record = CallRecord(model=model.name)

    async def go() -> list[str]:
        return [piece async for piece in model.stream(messages, record)]  # type: ignore[arg-type]

    return asyncio.run(go()), record


# ---- the SDK in process: the ChatModel contract ----


def test_in_process_streams_text_with_usage_and_timings(sdk_env: dict[str, str]) -> None:
    model = make_chat_model(_cfg(sdk_env), "slm")
    assert isinstance(model, FoundryLocalModel) and model.runtime_kind == "in-process"
    pieces, record = _run(model, QUESTION)
    assert len(pieces) > 1 and "".join(pieces) == record.text and record.text.strip()
    assert "paris" in record.text.lower()
    assert record.finished and not record.estimated
    assert record.prompt_tokens > 5 and 0 < record.completion_tokens <= 48
    assert 0 < record.ttft_ms <= record.total_ms
    assert model.model_id == f"{SMOL}:1"  # the id it is registered under in the local catalog


def test_in_process_max_tokens_and_seeded_repeat(sdk_env: dict[str, str]) -> None:
    model = make_chat_model(_cfg(sdk_env), "slm")
    record = CallRecord(model=model.name)

    async def go() -> str:
        async for _ in model.stream(QUESTION, record, max_tokens=4, temperature=0.0):  # type: ignore[arg-type]
            pass
        return record.text

    asyncio.run(go())
    assert record.completion_tokens <= 4 and record.finished  # length counts as finished


def test_unknown_alias_names_it_and_lists_the_models_there_are(sdk_env: dict[str, str]) -> None:
    model = make_chat_model(_cfg(sdk_env, RAG__MODELS__SLM__MODEL="phi-4-mini"), "slm")
    with pytest.raises(ModelError, match="no model 'phi-4-mini'") as info:
        _run(model, QUESTION)  # type: ignore[arg-type]
    assert info.value.kind == "unknown_model"
    assert SMOL in str(info.value) and "rag models build --foundry" in str(info.value)


def test_first_token_timeout_is_a_model_error(sdk_env: dict[str, str]) -> None:
    cfg = _cfg(sdk_env, RAG__MODELS__TIMEOUTS__FIRST_TOKEN_S="0.001")
    with pytest.raises(ModelError, match="timed out") as info:
        _run(make_chat_model(cfg, "slm"), QUESTION)  # type: ignore[arg-type]
    assert info.value.kind == "timeout"


def test_alias_lookup_against_the_real_sdk(sdk_env: dict[str, str], repo_root: Path) -> None:
    cfg = _cfg(sdk_env)
    runtime = FoundryRuntime.get(cfg.data_dir, cfg.models.foundry)
    by_alias = runtime.find(SMOL)
    assert by_alias.id == f"{SMOL}:1" and by_alias.alias == SMOL
    assert Path(by_alias.get_path()) == (repo_root / ".rag/models/foundry" / SMOL).resolve()
    assert runtime.find(f"{SMOL}:1").id == by_alias.id  # a model id works as well as an alias
    assert SMOL in runtime.available()


# ---- the service over HTTP ----


def test_endpoint_discovery_starts_the_sdk_web_service(sdk_env: dict[str, str]) -> None:
    """No base_url, runtime service: the SDK's manager starts its web service and says where."""
    cfg = _cfg(sdk_env, RAG__MODELS__FOUNDRY__RUNTIME="service")
    model = make_chat_model(cfg, "slm")
    assert isinstance(model, FoundryLocalModel) and model.runtime_kind == "service"
    with pytest.raises(ModelError) as info:
        _run(model, QUESTION)  # type: ignore[arg-type]
    # The real service answered: it serves catalog models only, and the catalog here is empty.
    assert info.value.kind == "unknown_model", info.value
    assert model.base_url is not None and model.base_url.startswith("http://127.0.0.1:")
    assert served_models(model.base_url) == []
    assert f"serves no model {SMOL!r}" in str(info.value) and "foundry model run" in str(info.value)


def test_service_not_running_says_how_to_start_it(sdk_env: dict[str, str]) -> None:
    cfg = _cfg(
        sdk_env, FOUNDRY_LOCAL_ENDPOINT=closed_port_url(), RAG__MODELS__FOUNDRY__RUNTIME="auto"
    )
    model = make_chat_model(cfg, "slm")
    assert isinstance(model, FoundryLocalModel) and model.runtime_kind == "service"
    with pytest.raises(ModelError, match="Foundry Local is not running at") as info:
        _run(model, QUESTION)  # type: ignore[arg-type]
    assert info.value.kind == "refused" and "foundry model run" in str(info.value)


def test_http_resolves_the_alias_to_the_served_id(sdk_env: dict[str, str]) -> None:
    """A chat over HTTP (the fake server stands in for the service's chat endpoint)."""
    served = "Phi-4-mini-instruct-generic-cpu:4"
    with FakeOpenAI() as fake:
        fake.script(served, ["Paris is the capital of France [1]."])
        fake.script("qwen2.5-0.5b-instruct-generic-cpu:3", ["unused"])
        cfg = _cfg(
            sdk_env,
            FOUNDRY_LOCAL_ENDPOINT=fake.url,
            RAG__MODELS__SLM__MODEL="phi-4-mini",
            RAG__MODELS__FOUNDRY__RUNTIME="auto",
        )
        model = make_chat_model(cfg, "slm")
        pieces, _ = _run(model, QUESTION)  # type: ignore[arg-type]
        assert "".join(pieces) == "Paris is the capital of France [1]."
        assert [r.model for r in fake.requests] == [served]
        assert model.model_id == served and model.base_url == fake.base_url


# ---- the app on Foundry Local ----


def _data_dir(tmp_path: Path, repo_root: Path) -> Path:
    """A fresh data dir (index built anew) whose models/ is the repo's, converted model included."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to((repo_root / ".rag" / "models").resolve())
    return data


def _ask(env: dict[str, str], repo_root: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", "--json", *args],
        cwd=repo_root, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def test_rag_ask_json_on_foundry_local(
    sdk_env: dict[str, str], repo_root: Path, tmp_path: Path
) -> None:
    env = {
        **sdk_env,
        "RAG__DATA_DIR": str(_data_dir(tmp_path, repo_root)),
        "RAG__RETRIEVAL__RETRIEVER": "bm25",
        "RAG__RETRIEVAL__TOP_K": "3",
    }
    out = _ask(env, repo_root, "--mode", "never", "How many days of annual leave do employees get?")
    assert out["model"] == SMOL and out["models"] == [SMOL]
    assert isinstance(out["answer"], str) and out["answer"].strip()
    assert out["sources"]
    timings = out["timings"]
    assert isinstance(timings, dict) and 0 < timings["ttft_ms"] <= timings["total_ms"]
    draft = timings["stages"]["draft"]
    assert draft["model"] == SMOL and draft["completion_tokens"] > 0
    assert not draft["tokens_estimated"]  # the SDK reported usage


@pytest.fixture(scope="module")
def llama_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerSpec]:
    """The embedded llama.cpp server on the SmolLM2 GGUF, as the large model."""
    spec = ServerSpec("llm", "smollm2-135m-gguf", smollm2_path(), free_port(), 2048, 2)
    with serve([spec], tmp_path_factory.mktemp("llama-logs"), progress=lambda _m: None) as specs:
        yield specs[0]


def test_cascade_foundry_small_llama_cpp_large(
    sdk_env: dict[str, str], llama_llm: ServerSpec, repo_root: Path, tmp_path: Path
) -> None:
    env = {
        **sdk_env,
        "RAG__DATA_DIR": str(_data_dir(tmp_path, repo_root)),
        "RAG__RETRIEVAL__RETRIEVER": "bm25",
        "RAG__RETRIEVAL__TOP_K": "3",
        "RAG__MODELS__LLM__PROVIDER": "embedded",
        "RAG__MODELS__LLM__BASE_URL": llama_llm.base_url,
        "RAG__MODELS__LLM__MODEL": llama_llm.alias,
        "RAG__MODELS__LLM__MAX_TOKENS": "48",
        "RAG__MODELS__LLM__CONTEXT_WINDOW": "2048",
        # The hand-set signals: escalate every draft (no draft is this long) and never abstain
        # on weak context.
        "RAG__ESCALATION__POLICY": "signals",
        "RAG__ESCALATION__MIN_DRAFT_CHARS": "100000",
        "RAG__ESCALATION__WEAK_CONTEXT__BM25": "0",
    }
    out = _ask(env, repo_root, "--mode", "auto", "How many days of annual leave do employees get?")
    assert out["escalated"] is True and "short draft" in str(out["reason"])
    assert out["models"] == [SMOL, llama_llm.alias] and out["model"] == llama_llm.alias
    stages = out["timings"]["stages"]  # type: ignore[index]
    assert stages["draft"]["model"] == SMOL and stages["draft"]["completion_tokens"] > 0
    assert (
        stages["answer"]["model"] == llama_llm.alias and stages["answer"]["completion_tokens"] > 0
    )
    assert isinstance(out["answer"], str) and out["answer"].strip()
