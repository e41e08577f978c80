"""The exact settings, versions and model files a comparison ran with."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import Config
from rag.models.embedded import ServerSpec

if TYPE_CHECKING:
    from rag.measure.compare.options import CompareOptions


def _file_info(spec: ServerSpec) -> dict[str, Any]:
    from rag.models.artifacts import GGUF_SPECS, sha256_file

    pinned = GGUF_SPECS.get(spec.alias)
    sha = pinned.sha256 if pinned is not None else sha256_file(spec.gguf)
    return {
        "file": spec.gguf.name,
        "file_mb": round(spec.gguf.stat().st_size / 2**20, 1),
        "sha256": sha[:12],
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def settings_of(cfg: Config, opts: CompareOptions, n_items: int) -> dict[str, Any]:
    """The exact settings and versions a comparison ran with."""
    e = cfg.models.embedded
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "versions": {
            "llama_cpp_python": _version("llama_cpp_python"),
            "openai": _version("openai"),
            "git_commit": _git_commit(),
        },
        "qa": {"data": str(opts.data), "split": opts.split, "questions": n_items},
        "answers": {"temperature": 0.0, "seed": 1234, "warm_prompt_max_tokens": opts.max_tokens},
        "models": {
            role: {
                "provider": m.provider,
                "model": m.model,
                "base_url": m.base_url,
                "max_tokens": m.max_tokens,
                "context_window": m.context_window,
            }
            for role, m in (("slm", cfg.models.slm), ("llm", cfg.models.llm))
        },
        "embedded": {"n_ctx": e.n_ctx, "n_threads": e.n_threads, "cold": opts.cold},
        "retrieval": {"retriever": cfg.retrieval.retriever, "top_k": cfg.retrieval.top_k},
        "context": cfg.context.model_dump(mode="json"),
        "escalation": {
            "mode": "auto",
            "strategy": cfg.escalation.strategy,
            "min_draft_chars": cfg.escalation.min_draft_chars,
            "on_weak_context": cfg.escalation.on_weak_context,
        },
    }
