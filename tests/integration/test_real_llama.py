"""The embedded default for real: llama.cpp's server on SmolLM2-135M, driven through `rag ask`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import load_config
from rag.errors import ModelError
from rag.measure.fake_openai import free_port
from rag.models import CallRecord, make_chat_model
from rag.models.artifacts import smollm2_path
from rag.models.embedded import ServerSpec, serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerSpec]:
    try:
        gguf = smollm2_path()
    except Exception as exc:  # the package is part of `make install`; say so instead of failing
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    spec = ServerSpec("slm", "smollm2-135m-instruct", gguf, free_port(), 2048, 2)
    with serve([spec], tmp_path_factory.mktemp("logs"), progress=lambda _m: None) as specs:
        yield specs[0]


def _env(spec: ServerSpec, repo_root: Path, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAG__MODELS__SLM__BASE_URL": spec.base_url,
            "RAG__MODELS__SLM__MODEL": spec.alias,
            "RAG__MODELS__SLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__SLM__MAX_TOKENS": "48",
            "RAG__MODELS__LLM__BASE_URL": spec.base_url,
            "RAG__MODELS__LLM__MODEL": spec.alias,
            "RAG__MODELS__LLM__CONTEXT_WINDOW": "2048",
            "RAG__MODELS__LLM__MAX_TOKENS": "48",
            "RAG__RETRIEVAL__RETRIEVER": "bm25",
            "RAG__RETRIEVAL__TOP_K": "3",
            "RAG__DATA_DIR": str(data),
        }
    )
    return env


def test_rag_ask_json_streams_a_real_answer(
    smol_server: ServerSpec, repo_root: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", "--json", "--mode", "never",
         "How many days of annual leave do employees get?"],
        cwd=repo_root, env=_env(smol_server, repo_root, tmp_path / "data"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["model"] == "smollm2-135m-instruct"
    assert out["answer"].strip()
    assert out["sources"] and {"id", "path", "title", "score"} <= set(out["sources"][0])
    t = out["timings"]
    assert 0 < t["ttft_ms"] <= t["total_ms"] and t["retrieval_ms"] >= 0
    assert out["tokens"]["completion"] > 0


def test_killing_the_server_mid_answer_keeps_the_partial_text(tmp_path: Path) -> None:
    try:
        gguf = smollm2_path()
    except Exception as exc:
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    spec = ServerSpec("slm", "smollm2-135m-instruct", gguf, free_port(), 2048, 2)
    cfg = load_config(
        None,
        environ={
            "RAG__MODELS__SLM__BASE_URL": spec.base_url,
            "RAG__MODELS__SLM__MODEL": spec.alias,
            "RAG__MODELS__SLM__MAX_TOKENS": "400",
            "RAG__MODELS__TIMEOUTS__RETRIES": "0",
        },
    )
    model = make_chat_model(cfg, "slm")
    record = CallRecord(model=spec.alias)
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

    async def run() -> ModelError:
        with serve([spec], tmp_path / "logs", progress=lambda _m: None):
            pids = subprocess.run(
                ["pgrep", "-f", f"llama_cpp.server.*port {spec.port}"],
                capture_output=True,
                text=True,
            ).stdout.split()
            try:
                async for _piece in model.stream(messages, record):
                    if len(record.text) > 40:
                        for pid in pids:
                            os.kill(int(pid), 9)
            except ModelError as exc:
                return exc
        raise AssertionError("the stream survived its server being killed")

    err = asyncio.run(run())
    assert err.kind == "cut"
    assert len(err.partial) > 40 and err.partial == record.text


def test_two_concurrent_answers_both_finish(smol_server: ServerSpec) -> None:
    """llama.cpp's server cuts the stream in flight on a new request unless told to queue."""
    cfg = load_config(
        None,
        environ={
            "RAG__MODELS__SLM__BASE_URL": smol_server.base_url,
            "RAG__MODELS__SLM__MODEL": smol_server.alias,
            "RAG__MODELS__SLM__MAX_TOKENS": "40",
        },
    )

    async def one(prompt: str) -> CallRecord:
        model = make_chat_model(cfg, "slm")
        record = CallRecord(model=smol_server.alias)
        async for _ in model.stream([{"role": "user", "content": prompt}], record):
            pass
        return record

    async def both() -> list[CallRecord]:
        return list(await asyncio.gather(one("Describe a lighthouse."), one("Describe a harbour.")))

    records = asyncio.run(both())
    assert all(r.finished and r.text for r in records)


def test_stream_reports_timings_usage_and_logprobs(smol_server: ServerSpec) -> None:
    """The embedded server wrapper ends each stream with usage and llama.cpp-style timings."""
    cfg = load_config(
        None,
        environ={
            "RAG__MODELS__SLM__BASE_URL": smol_server.base_url,
            "RAG__MODELS__SLM__MODEL": smol_server.alias,
            "RAG__MODELS__SLM__MAX_TOKENS": "24",
            "RAG__MODELS__SLM__LOGPROBS": "true",
        },
    )
    system = {"role": "system", "content": "You answer briefly. " * 30}

    async def one(question: str) -> CallRecord:
        model = make_chat_model(cfg, "slm")
        record = CallRecord(model=smol_server.alias)
        try:
            async for _ in model.stream([system, {"role": "user", "content": question}], record):
                pass
        finally:
            await model.aclose()  # type: ignore[attr-defined]
        return record

    first = asyncio.run(one("Name a colour."))
    second = asyncio.run(one("Name a fruit."))
    for record in (first, second):
        u = record.usage()
        assert not u.tokens_estimated and u.prompt_tokens > 120  # the server counted them
        assert u.queue_ms is not None and u.queue_ms >= 0
        assert u.prompt_ms is not None and 0 < u.prompt_ms <= u.ttft_ms
        assert u.decode_ms is not None and u.decode_ms <= u.total_ms
        assert u.prompt_eval_tokens is not None and u.prompt_eval_tokens <= u.prompt_tokens
        # per-token logprobs came back (logits_all is on by default) and are probabilities
        assert record.logprobs and all(lp <= 0 for _, lp in record.logprobs)
        assert u.logprob_mean is not None and u.logprob_min is not None
        assert u.logprob_min <= u.logprob_mean <= 0
    # the shared system prompt is reused from the KV cache, not read again
    assert second.cached_tokens is not None and second.cached_tokens > 100


# -- does the installed llama.cpp run on this CPU? ---------------------------------------------


def test_run_check_passes_once_per_build_and_names_a_failure(tmp_path: Path) -> None:
    from rag.models.artifacts.runcheck import STAMP, check_llama_runs, llama_build_key

    try:
        gguf = smollm2_path()
    except Exception as exc:
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    lines: list[str] = []
    assert check_llama_runs(gguf, tmp_path, lines.append) == "verified"  # a real child process
    assert json.loads((tmp_path / STAMP).read_text())["build"] == llama_build_key()
    assert check_llama_runs(gguf, tmp_path, lines.append) == "verified earlier"
    assert len(lines) == 1 and "checking that llama.cpp runs" in lines[0]
    # another build (the stamp's key differs) is checked again; a file that is no model fails
    # with the child's exit code, its last words and the fix, and leaves the stamp alone
    (tmp_path / STAMP).write_text(json.dumps({"build": "another build"}))
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(ModelError) as err:
        check_llama_runs(bad, tmp_path, lines.append)
    assert "exit code 1" in str(err.value) and "make llama-rebuild" in str(err.value)
    assert err.value.kind == "start"
    assert json.loads((tmp_path / STAMP).read_text())["build"] == "another build"


def test_run_check_names_the_signal_that_killed_the_child() -> None:
    from rag.models.artifacts.runcheck import failure_message

    # what the AMX build did here: SIGSEGV (general protection fault at ldtilecfg)
    msg = failure_message(-11, "line 1\nline 2\n", Path("m.gguf"))
    assert "crashed on this CPU" in msg and "SIGSEGV" in msg and "m.gguf" in msg
    assert "make llama-rebuild" in msg and msg.endswith("line 1\nline 2")
