"""The persisted, incremental index: one folder per retriever under <data_dir>/index/.

Each folder holds ``chunks.jsonl``, the retriever's ``artifacts/`` and a ``manifest.json``
written last (document hashes, chunking, the retriever's fingerprint, a hash of the chunks).
Builds happen in a temporary folder that replaces the old one by rename, under a file lock,
so a reader never sees a half-written index and a killed build leaves only a temp folder
that the next start removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.config import Config
from rag.corpus import chunk_documents, hash_corpus, load_documents
from rag.errors import IndexError_, RagError
from rag.retrieval import Retriever, make_retriever
from rag.retrieval.base import CountsEncoded, ReportsProgress, Resettable, ReusesVectors
from rag.types import Chunk

MANIFEST_VERSION = 1
Progress = Callable[[str], None]


@dataclass
class IndexStatus:
    """What opening an index did, in words a person can read."""

    retriever: str
    action: str  # loaded | updated | built
    chunks: int
    documents: int
    seconds: float
    message: str
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RebuildReason:
    """Why an index is built from scratch, in words, and whether its saved vectors still fit."""

    text: str
    vectors_reusable: bool = True  # False when the retriever's own settings (model…) changed


def _chunks_to_jsonl(chunks: list[Chunk]) -> bytes:
    return "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in chunks).encode()


def _chunks_from_jsonl(data: bytes) -> list[Chunk]:
    return [Chunk(**json.loads(line)) for line in data.decode().splitlines() if line.strip()]


def _describe(added: set[str], changed: set[str], removed: set[str]) -> str:
    parts = []
    for label, items in (("added", added), ("changed", changed), ("removed", removed)):
        if items:
            shown = ", ".join(sorted(items)[:3]) + (" …" if len(items) > 3 else "")
            parts.append(f"{len(items)} {label} ({shown})")
    return "; ".join(parts)


class IndexManager:
    """Opens, updates and caches one index per retriever name."""

    def __init__(self, cfg: Config, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.root = cfg.data_dir / "index"
        self.progress: Progress = progress or (lambda _msg: None)
        self._open: dict[str, tuple[Retriever, list[Chunk], dict[str, str]]] = {}

    # ---- locking and cleanup ----

    @contextlib.contextmanager
    def lock(self, wait_s: float = 600.0) -> Iterator[None]:
        """Exclusive lock on the index folder; a second writer waits, then gives up with a message."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            start = time.monotonic()
            told = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        self.progress("another `rag index` is building the index; waiting for it…")
                        told = True
                    if time.monotonic() - start > wait_s:
                        raise IndexError_(
                            f"the index at {self.root} stayed locked for {wait_s:.0f} s by another "
                            "process; stop it or wait, then retry"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        for tmp in self.root.glob(".build-*"):
            self.progress(f"removing an incomplete build left by an interrupted run: {tmp.name}")
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.root.glob(".old-*"):
            shutil.rmtree(old, ignore_errors=True)

    # ---- manifest ----

    def folder(self, name: str) -> Path:
        return self.root / name

    def _read(self, name: str) -> tuple[dict[str, Any], list[Chunk]] | str:
        """(manifest, chunks) of a complete index, or the reason it cannot be used."""
        folder = self.folder(name)
        mpath = folder / "manifest.json"
        if not mpath.exists():
            return "no index yet" if not folder.exists() else "incomplete index (no manifest)"
        try:
            manifest = json.loads(mpath.read_text())
            data = (folder / "chunks.jsonl").read_bytes()
        except (OSError, ValueError) as exc:
            return f"index is corrupt ({type(exc).__name__})"
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            return "index format changed"
        if hashlib.sha256(data).hexdigest() != manifest.get("chunks_sha256"):
            return "index is corrupt (chunks do not match the manifest)"
        try:
            chunks = _chunks_from_jsonl(data)
        except (ValueError, TypeError):
            return "index is corrupt (unreadable chunks)"
        return manifest, chunks

    def _chunking(self) -> dict[str, int]:
        return {
            "chunk_words": self.cfg.corpus.chunk_words,
            "overlap_words": self.cfg.corpus.overlap_words,
        }

    # ---- open / build ----

    def open(self, name: str, *, force: bool = False) -> tuple[Retriever, IndexStatus]:
        """The retriever for ``name``, loaded if the corpus is unchanged, else updated or rebuilt."""
        t0 = time.perf_counter()
        hashes = hash_corpus(self.cfg.corpus)
        cached = self._open.get(name)
        if cached and cached[2] == hashes and not force:
            retriever, chunks, _ = cached
            return retriever, IndexStatus(
                name, "loaded", len(chunks), len(hashes), 0.0, "index is up to date"
            )
        retriever = make_retriever(name, self.cfg)
        if force and isinstance(retriever, Resettable):
            retriever.reset()  # a remote store (Milvus) keeps its rows unless told to drop them
        if isinstance(retriever, ReportsProgress):
            retriever.progress = self.progress
        fingerprint = retriever.fingerprint()
        self.root.mkdir(parents=True, exist_ok=True)
        state = self._read(name)
        if isinstance(state, tuple) and not force:
            manifest, chunks = state
            reason = self._rebuild_reason(manifest, fingerprint)
            if reason is None and manifest["docs"] == hashes:
                try:
                    retriever.load(self.folder(name) / "artifacts", chunks)
                except (RagError, OSError, ValueError, KeyError) as exc:
                    reason = RebuildReason(f"index artifacts are corrupt ({exc})")
                else:
                    self._open[name] = (retriever, chunks, hashes)
                    return retriever, IndexStatus(
                        name,
                        "loaded",
                        len(chunks),
                        len(hashes),
                        time.perf_counter() - t0,
                        f"loaded the {name} index: {len(chunks)} chunks from {len(hashes)} documents",
                        skipped=dict(manifest.get("skipped", {})),
                    )
        else:
            manifest, chunks = {}, []
            reason = RebuildReason("rebuild requested" if force else str(state))
        with self.lock():
            self._remove_leftovers()
            status = self._build(name, retriever, fingerprint, hashes, manifest, chunks, reason, t0)
        return retriever, status

    def _rebuild_reason(
        self, manifest: dict[str, Any], fingerprint: dict[str, str]
    ) -> RebuildReason | None:
        if manifest.get("chunking") != self._chunking():
            return RebuildReason(
                f"chunking changed ({manifest.get('chunking')} → {self._chunking()})"
            )
        old = manifest.get("fingerprint", {})
        if old != fingerprint:
            diffs = [
                f"{k}: {old.get(k)} → {fingerprint.get(k)}"
                for k in sorted(set(old) | set(fingerprint))
                if old.get(k) != fingerprint.get(k)
            ]
            text = "retriever settings changed (" + "; ".join(diffs) + ")"
            return RebuildReason(text, vectors_reusable=False)
        return None

    def _build(
        self,
        name: str,
        retriever: Retriever,
        fingerprint: dict[str, str],
        hashes: dict[str, str],
        manifest: dict[str, Any],
        old_chunks: list[Chunk],
        reason: RebuildReason | None,
        t0: float,
    ) -> IndexStatus:
        old_docs: dict[str, str] = manifest.get("docs", {}) if reason is None else {}
        old_skipped: dict[str, str] = manifest.get("skipped", {}) if reason is None else {}
        added = set(hashes) - set(old_docs)
        removed = set(old_docs) - set(hashes)
        changed = {d for d in set(hashes) & set(old_docs) if hashes[d] != old_docs[d]}
        todo = added | changed
        report = load_documents(self.cfg.corpus, only=todo)
        kept = [c for c in old_chunks if c.doc_id in hashes and c.doc_id not in todo]
        fresh = chunk_documents(report.documents, self.cfg.corpus)
        chunks = sorted(kept + fresh, key=lambda c: (c.doc_id, c.ordinal))
        skipped = {d: r for d, r in old_skipped.items() if d in hashes and d not in todo}
        skipped.update(dict(report.skipped))
        if reason is None:
            action, why = "updated", _describe(added, changed, removed)
        else:
            action, why = "built", reason.text
        self.progress(f"{name}: {why}; indexing {len(todo)} documents ({len(fresh)} new chunks)…")
        tmp = self.root / f".build-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "artifacts").mkdir(parents=True)
        old_artifacts = self.folder(name) / "artifacts"
        reused = 0
        reusable = reason is None or reason.vectors_reusable
        if isinstance(retriever, ReusesVectors) and old_artifacts.exists() and reusable:
            with contextlib.suppress(RagError, OSError, ValueError, KeyError):
                reused = retriever.reuse(old_artifacts)
        try:
            retriever.build(chunks)
            retriever.save(tmp / "artifacts")
            data = _chunks_to_jsonl(chunks)
            (tmp / "chunks.jsonl").write_bytes(data)
            new_manifest = {
                "version": MANIFEST_VERSION,
                "retriever": name,
                "docs": hashes,
                "skipped": skipped,
                "chunking": self._chunking(),
                "fingerprint": fingerprint,
                "chunks": len(chunks),
                "chunks_sha256": hashlib.sha256(data).hexdigest(),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / "manifest.json").write_text(json.dumps(new_manifest, indent=1))
            final = self.folder(name)
            old = self.root / f".old-{name}-{os.getpid()}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._open[name] = (retriever, chunks, hashes)
        encoded = retriever.last_encoded if isinstance(retriever, CountsEncoded) else None
        extra = f"; embedded {encoded} chunks, reused {reused}" if encoded is not None else ""
        msg = f"{action} the {name} index ({why}): {len(chunks)} chunks from {len(hashes)} documents{extra}"
        if skipped:
            msg += f"; skipped {len(skipped)} unusable files"
        return IndexStatus(
            name,
            action,
            len(chunks),
            len(hashes),
            time.perf_counter() - t0,
            msg,
            skipped=skipped,
            warnings=report.warnings,
        )

    def get(self, name: str) -> Retriever:
        """The retriever already opened in this process, else open it (hot path: no hashing)."""
        cached = self._open.get(name)
        return cached[0] if cached else self.open(name)[0]

    def open_names(self) -> list[str]:
        """Retrievers opened in this process (they must all see an upload)."""
        return list(self._open)

    def chunks(self, name: str) -> list[Chunk]:
        """Chunks of an index opened in this process."""
        return self._open[name][1] if name in self._open else []
