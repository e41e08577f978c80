"""Adding a user's file to the knowledge base: checked, safely named, written atomically, indexed."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rag.config import Config
from rag.corpus import SUPPORTED, parse_document, sha256_bytes
from rag.errors import InputError, RagError
from rag.index import IndexManager


@dataclass(frozen=True)
class UploadResult:
    name: str  # the stored file name
    doc_id: str  # its id in the index (path relative to the corpus)
    chunks: int  # chunks now indexed for it
    duplicate: bool  # the same bytes were already in the knowledge base
    message: str


def safe_name(filename: str) -> str:
    """The bare file name with anything outside [A-Za-z0-9._ -] replaced; no dirs, no dotfiles."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")
    if not base or base in {".", ".."}:
        raise InputError(f"{filename!r} is not a usable file name")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    return f"{stem[:100]}.{ext.lower()}" if ext else stem[:100]


def _uploads_dir(cfg: Config) -> Path:
    root = cfg.corpus.path.resolve()
    folder = cfg.corpus.uploads_dir.resolve()
    if not folder.is_relative_to(root):
        raise InputError(
            f"corpus.uploads_dir ({cfg.corpus.uploads_dir}) must be inside corpus.path "
            f"({cfg.corpus.path}) so uploaded files are indexed"
        )
    return folder


def check_upload(cfg: Config, filename: str, data: bytes) -> str:
    """Validate type (by extension and content) and size; returns the safe name or raises InputError."""
    name = safe_name(filename)
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise InputError(
            f"{filename}: unsupported type {suffix or '(no extension)'}; "
            f"upload one of {', '.join(SUPPORTED)}"
        )
    if not data:
        raise InputError(f"{filename}: the file is empty (0 bytes)")
    limit = cfg.corpus.max_file_mb * 1024 * 1024
    if len(data) > limit:
        raise InputError(
            f"{filename}: {len(data) / 1048576:.1f} MB is over the {cfg.corpus.max_file_mb:g} MB "
            "limit (corpus.max_file_mb)"
        )
    try:
        parse_document(name, data)
    except RagError as exc:
        raise InputError(str(exc)) from None
    return name


def add_upload(cfg: Config, index: IndexManager, filename: str, data: bytes) -> UploadResult:
    """Store one file under corpus.uploads_dir and update every open index; nothing partial on failure."""
    name = check_upload(cfg, filename, data)
    folder = _uploads_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    digest = sha256_bytes(data)
    stem, suffix = Path(name).stem, Path(name).suffix
    target = folder / name
    n = 1
    while target.exists():
        if sha256_bytes(target.read_bytes()) == digest:
            doc_id = target.relative_to(cfg.corpus.path.resolve()).as_posix()
            chunks = sum(1 for c in index.chunks(_first(index, cfg)) if c.doc_id == doc_id)
            return UploadResult(
                target.name, doc_id, chunks, True, f"{target.name} is already in the knowledge base"
            )
        n += 1
        target = folder / f"{stem}-{n}{suffix}"
    if not target.resolve().is_relative_to(folder):
        raise InputError(f"{filename!r} would be written outside the uploads folder")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    doc_id = target.relative_to(cfg.corpus.path.resolve()).as_posix()
    try:
        names = index.open_names() or [cfg.retrieval.retriever]
        for retriever in names:
            index.open(retriever)
    except BaseException:
        target.unlink(missing_ok=True)  # the index could not take it: leave no stray file behind
        raise
    chunks = sum(1 for c in index.chunks(names[0]) if c.doc_id == doc_id)
    renamed = f" (stored as {target.name})" if target.name != name else ""
    return UploadResult(
        target.name,
        doc_id,
        chunks,
        False,
        f"Added {filename}{renamed} to the knowledge base: {chunks} chunks indexed.",
    )


def _first(index: IndexManager, cfg: Config) -> str:
    names = index.open_names()
    return names[0] if names else cfg.retrieval.retriever
