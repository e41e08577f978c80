from pathlib import Path

import pytest

from rag.config import Config, load_config
from rag.errors import InputError
from rag.index import IndexManager
from rag.uploads import add_upload, safe_name


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    corpus = tmp_path / "kb"
    corpus.mkdir()
    (corpus / "base.md").write_text("# Base\nThe office opens at 08:00.\n")
    return load_config(
        None,
        environ={
            "RAG__DATA_DIR": str(tmp_path / "data"),
            "RAG__CORPUS__PATH": str(corpus),
            "RAG__CORPUS__UPLOADS_DIR": str(corpus / "uploads"),
            "RAG__CORPUS__MAX_FILE_MB": "0.01",
            "RAG__RETRIEVAL__RETRIEVER": "lexical",
        },
    )


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_upload_is_indexed_and_searchable_right_away(cfg: Config) -> None:
    index = IndexManager(cfg)
    index.open("lexical")
    result = add_upload(cfg, index, "falcon.md", b"# Project Falcon\nFalcon ships on 12 March.\n")
    assert result.chunks == 1 and "1 chunks indexed" in result.message
    hit = index.get("lexical").search("when does falcon ship", 1)[0]
    assert hit.chunk.doc_id == "uploads/falcon.md"


def test_path_traversal_cannot_escape_the_uploads_folder(cfg: Config, tmp_path: Path) -> None:
    index = IndexManager(cfg)
    result = add_upload(cfg, index, "../../outside.md", b"# Outside\ntext\n")
    assert result.name == "outside.md"
    assert not (tmp_path / "outside.md").exists()
    assert (cfg.corpus.uploads_dir / "outside.md").exists()
    assert safe_name("..\\..\\evil.txt") == "evil.txt"
    assert safe_name("/etc/passwd.md") == "passwd.md"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.md", b"", "empty"),
        ("big.md", b"x" * 20_000, "over the 0.01 MB limit"),
        ("image.md", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "binary content"),
        ("fake.pdf", b"just text, not a pdf", "not a PDF"),
        ("broken.pdf", b"%PDF-1.7\n%%garbage", "could not be parsed|no extractable text"),
        ("tool.exe", b"MZ....", "unsupported type .exe"),
        ("..", b"# x\n", "not a usable file name"),
    ],
)
def test_rejected_uploads_write_nothing(cfg: Config, name: str, data: bytes, message: str) -> None:
    before = _files(cfg.corpus.path)
    with pytest.raises(InputError, match=message):
        add_upload(cfg, IndexManager(cfg), name, data)
    assert _files(cfg.corpus.path) == before


def test_duplicate_names_never_overwrite(cfg: Config) -> None:
    index = IndexManager(cfg)
    first = add_upload(cfg, index, "notes.md", b"# Notes\nversion one\n")
    same = add_upload(cfg, index, "notes.md", b"# Notes\nversion one\n")
    other = add_upload(cfg, index, "notes.md", b"# Notes\nversion two\n")
    assert first.name == "notes.md" and same.duplicate and same.name == "notes.md"
    assert other.name == "notes-2.md" and "stored as notes-2.md" in other.message
    assert (cfg.corpus.uploads_dir / "notes.md").read_bytes() == b"# Notes\nversion one\n"
