"""`rag compare --cold` for real: it starts two llama.cpp servers (SmolLM2-135M under two names),
measures them and stops them again — and only them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.models.artifacts import smollm2_path
from tests.fake_openai import free_port
from tests.integration.test_cli import CORPUS
from tests.integration.test_compare import _qa

pytestmark = pytest.mark.slow


def test_cold_start_memory_and_cleanup(tmp_path: Path) -> None:
    try:
        gguf = smollm2_path()
    except Exception as exc:  # the package is part of `make install`; say so instead of failing
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG__")}
    for role in ("SLM", "LLM"):
        env.update(
            {
                f"RAG__MODELS__{role}__PROVIDER": "embedded",
                f"RAG__MODELS__{role}__MODEL": f"smol-{role.lower()}",
                f"RAG__MODELS__{role}__CONTEXT_WINDOW": "2048",
                f"RAG__MODELS__{role}__MAX_TOKENS": "24",
                f"RAG__MODELS__EMBEDDED__{role}_FILE": "smollm2-135m-instruct",
                f"RAG__MODELS__EMBEDDED__{role}_PORT": str(free_port()),
            }
        )
    env.update(
        {
            "RAG__MODELS__EMBEDDED__N_CTX": "2048",
            "RAG__DATA_DIR": str(tmp_path / "data"),
            "RAG__CORPUS__PATH": str(CORPUS),
            "RAG__RETRIEVAL__RETRIEVER": "lexical",
        }
    )

    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "compare", "--cold", "--json", "--limit", "2",
         "--no-judge", "--escalation-rate", "0.5", "--data", str(_qa(tmp_path / "qa"))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    models = [r for r in rows if r["kind"] == "model"]
    assert [m["model"] for m in models] == ["smol-slm", "smol-llm"]
    for m in models:
        assert m["started_here"] is True and m["memory_note"] is None
        assert 0 < m["ready_ms"] <= m["cold_start_ms"] < 300_000
        assert m["file_mb"] == pytest.approx(gguf.stat().st_size / 2**20, abs=0.1)
        assert 20 < m["rss_mb"] <= m["rss_hwm_mb"] + 1
        assert m["rss_peak_mb"] >= m["rss_mb"] - 5  # sampled while answering
        assert m["calls"] == 2 and m["ttft_ms_p50"] > 0
        assert not Path(f"/proc/{m['pid']}").exists()  # stopped when the command ended
