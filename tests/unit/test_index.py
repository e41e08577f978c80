"""The persisted index: load unchanged, update incrementally, rebuild when it must, never serve junk."""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from rag.config import Config, load_config
from rag.errors import IndexError_
from rag.index import IndexManager


def _cfg(tmp_path: Path, **env: str) -> Config:
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    return load_config(
        None,
        environ={"RAG__DATA_DIR": str(tmp_path / "data"), "RAG__CORPUS__PATH": str(corpus), **env},
    )


def _write(cfg: Config, name: str, text: str) -> None:
    path = cfg.corpus.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    c = _cfg(tmp_path)
    _write(c, "vpn.md", "# VPN\n## Access\nThe VPN gateway is vpn.acme.test on port 4443.\n")
    _write(c, "leave.md", "# Leave\nEmployees get 27 vacation days per year.\n")
    return c


def test_first_open_builds_then_loads(cfg: Config) -> None:
    _, status = IndexManager(cfg).open("lexical")
    assert status.action == "built" and "no index yet" in status.message
    retriever, status = IndexManager(cfg).open("lexical")
    assert status.action == "loaded"
    assert retriever.search("vacation days", 1)[0].chunk.doc_id == "leave.md"


def test_added_changed_removed_documents_update_incrementally(cfg: Config) -> None:
    IndexManager(cfg).open("lexical")
    _write(cfg, "parking.md", "# Parking\nBays 14 to 20 on level -2.\n")
    _write(cfg, "leave.md", "# Leave\nEmployees get 30 vacation days per year.\n")
    (cfg.corpus.path / "vpn.md").unlink()
    retriever, status = IndexManager(cfg).open("lexical")
    assert status.action == "updated"
    assert "1 added (parking.md)" in status.message
    assert "1 changed (leave.md)" in status.message
    assert "1 removed (vpn.md)" in status.message
    assert "30 vacation" in retriever.search("vacation days", 1)[0].chunk.text
    assert retriever.search("VPN gateway port", 5) == [] or all(
        h.chunk.doc_id != "vpn.md" for h in retriever.search("VPN gateway port", 5)
    )


def test_chunking_change_forces_a_rebuild_with_reason(cfg: Config, tmp_path: Path) -> None:
    IndexManager(cfg).open("lexical")
    other = cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"chunk_words": 50})})
    _, status = IndexManager(other).open("lexical")
    assert status.action == "built" and "chunking changed" in status.message


def test_corrupt_manifest_is_detected_and_rebuilt(cfg: Config) -> None:
    m = IndexManager(cfg)
    m.open("lexical")
    (m.folder("lexical") / "manifest.json").write_text("{not json")
    _, status = IndexManager(cfg).open("lexical")
    assert status.action == "built" and "corrupt" in status.message


def test_tampered_chunks_are_detected_and_rebuilt(cfg: Config) -> None:
    m = IndexManager(cfg)
    m.open("lexical")
    chunks = m.folder("lexical") / "chunks.jsonl"
    chunks.write_text(chunks.read_text().replace("27", "99"))
    retriever, status = IndexManager(cfg).open("lexical")
    assert status.action == "built" and "chunks do not match" in status.message
    assert "27 vacation" in retriever.search("vacation", 1)[0].chunk.text


def test_leftover_partial_build_is_removed(cfg: Config) -> None:
    m = IndexManager(cfg)
    m.open("lexical")
    junk = m.root / ".build-lexical-12345"
    (junk / "artifacts").mkdir(parents=True)
    (cfg.corpus.path / "new.md").write_text("# New\nfresh text\n")
    messages: list[str] = []
    IndexManager(cfg, messages.append).open("lexical")
    assert not junk.exists()
    assert any("incomplete build" in msg for msg in messages)


def test_missing_manifest_means_incomplete_and_rebuild(cfg: Config) -> None:
    m = IndexManager(cfg)
    m.open("lexical")
    (m.folder("lexical") / "manifest.json").unlink()
    _, status = IndexManager(cfg).open("lexical")
    assert status.action == "built" and "incomplete index" in status.message


def test_unusable_files_are_listed_not_fatal(cfg: Config) -> None:
    _write(cfg, "broken.pdf", "not a pdf")
    _, status = IndexManager(cfg).open("lexical")
    assert "broken.pdf" in status.skipped and "not a PDF" in status.skipped["broken.pdf"]
    _, again = IndexManager(cfg).open("lexical")
    assert again.action == "loaded" and "broken.pdf" in again.skipped


def _hold_lock(data_dir: str, corpus: str, ready: "multiprocessing.synchronize.Event") -> None:
    cfg = load_config(None, environ={"RAG__DATA_DIR": data_dir, "RAG__CORPUS__PATH": corpus})
    with IndexManager(cfg).lock():
        ready.set()
        time.sleep(30)


def test_second_writer_waits_then_gives_up_with_a_message(cfg: Config) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(cfg.data_dir), str(cfg.corpus.path), ready))
    proc.start()
    try:
        assert ready.wait(10)
        messages: list[str] = []
        with (
            pytest.raises(IndexError_, match="stayed locked"),
            IndexManager(cfg, messages.append).lock(wait_s=0.5),
        ):
            pass
        assert any("waiting" in msg for msg in messages)
    finally:
        proc.terminate()
        proc.join()


def _slow_build(data_dir: str, corpus: str) -> None:
    cfg = load_config(None, environ={"RAG__DATA_DIR": data_dir, "RAG__CORPUS__PATH": corpus})
    m = IndexManager(cfg)
    from rag.retrieval.lexical import LexicalRetriever

    def slow_save(self: LexicalRetriever, folder: Path) -> None:
        (folder / "ids.json").write_text("[]")
        time.sleep(60)

    LexicalRetriever.save = slow_save  # type: ignore[method-assign]
    m.open("lexical")


def test_kill_9_during_indexing_leaves_nothing_served(cfg: Config) -> None:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_slow_build, args=(str(cfg.data_dir), str(cfg.corpus.path)))
    proc.start()
    root = cfg.data_dir / "index"
    deadline = time.time() + 20
    while time.time() < deadline and not list(root.glob(".build-*")):
        time.sleep(0.05)
    assert list(root.glob(".build-*")), "the build never started"
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert not (root / "lexical" / "manifest.json").exists()  # nothing half-written is visible
    retriever, status = IndexManager(cfg).open("lexical")
    assert status.action == "built"
    assert not list(root.glob(".build-*"))
    assert retriever.search("vacation days", 1)
    manifest = json.loads((root / "lexical" / "manifest.json").read_text())
    assert set(manifest["docs"]) == {"vpn.md", "leave.md"}
