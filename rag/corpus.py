"""Files -> Documents -> Chunks, with stable chunk ids and content hashes."""

from __future__ import annotations

import hashlib
import html.parser
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from rag.config import CorpusConfig
from rag.errors import CorpusError
from rag.types import Chunk, Document, Section

SUPPORTED = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")


@dataclass
class LoadReport:
    """What loading a folder produced, and what it skipped or repaired, with reasons."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(raw: bytes, name: str, warnings: list[str]) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.append(
            f"{name}: invalid UTF-8 at byte {exc.start}; undecodable bytes were replaced with �"
        )
        text = raw.decode("utf-8", errors="replace")
    return clean_text(text)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Drop NUL and other control characters (keep tab and newlines); normalise line ends."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


# ---- parsers: bytes -> (title, sections) ----

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _sections_from_markdown(text: str) -> tuple[str | None, list[Section]]:
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    buf: list[str] = []
    title: str | None = None
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(headings=tuple(h for _, h in stack), text=body))
        buf.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _MD_HEADING.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            if title is None and level == 1:
                title = heading
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        else:
            buf.append(line)
    flush()
    return title, sections


def _sections_from_text(text: str) -> tuple[str | None, list[Section]]:
    """Plain text: underlined headings (=== or ---) start sections; the first line is the title."""
    lines = text.split("\n")
    title = next((ln.strip() for ln in lines if ln.strip()), None)
    sections: list[Section] = []
    heading: tuple[str, ...] = ()
    buf: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*(=+|-+)\s*", nxt) and len(nxt.strip()) >= 3:
            body = "\n".join(buf).strip()
            if body:
                sections.append(Section(headings=heading, text=body))
            buf = []
            heading = (line.strip(),)
            i += 2
            continue
        buf.append(line)
        i += 1
    body = "\n".join(buf).strip()
    if body:
        sections.append(Section(headings=heading, text=body))
    return title, sections


class _HTMLSections(html.parser.HTMLParser):
    _BLOCK = frozenset({"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol"})
    _SKIP = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._buf: list[str] = []
        self._skip = 0
        self._heading_level = 0
        self._heading_buf: list[str] = []
        self._in_title = False
        self._title_buf: list[str] = []

    def _flush(self) -> None:
        body = re.sub(r"[ \t]+", " ", "".join(self._buf))
        body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
        if body:
            self.sections.append(Section(headings=tuple(h for _, h in self._stack), text=body))
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP and tag != "head":
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading_level = int(tag[1])
            self._heading_buf = []
        elif tag in self._BLOCK:
            self._buf.append("\n")
        elif tag in ("td", "th"):
            self._buf.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and tag != "head":
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
            self.title = self.title or "".join(self._title_buf).strip() or None
        elif re.fullmatch(r"h[1-6]", tag) and self._heading_level:
            heading = re.sub(r"\s+", " ", "".join(self._heading_buf)).strip()
            level = self._heading_level
            self._heading_level = 0
            if heading:
                if level == 1 and self.title is None:
                    self.title = heading
                while self._stack and self._stack[-1][0] >= level:
                    self._stack.pop()
                self._stack.append((level, heading))
        elif tag in self._BLOCK:
            self._buf.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self._title_buf.append(data)
        elif self._heading_level:
            self._heading_buf.append(data)
        else:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _sections_from_html(text: str) -> tuple[str | None, list[Section]]:
    parser = _HTMLSections()
    parser.feed(text)
    parser.close()
    return parser.title, parser.sections


def _sections_from_pdf(raw: bytes, name: str) -> tuple[str | None, list[Section]]:
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(raw))
        pages = [clean_text(page.extract_text() or "") for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # pypdf raises many types for broken files
        raise CorpusError(
            f"{name}: the PDF could not be parsed ({type(exc).__name__}: {exc})"
        ) from None
    sections = [
        Section(headings=(f"Page {i}",), text=t.strip())
        for i, t in enumerate(pages, 1)
        if t.strip()
    ]
    if not sections:
        raise CorpusError(
            f"{name}: the PDF has no extractable text (scanned images are not supported)"
        )
    title = meta_title or next(ln.strip() for ln in sections[0].text.split("\n") if ln.strip())
    return title, sections


_MAGIC = (b"%PDF-", b"PK\x03\x04", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"\x7fELF", b"MZ")


def looks_binary(raw: bytes) -> bool:
    """Known binary signatures, or more than 1% NUL/control bytes in the first 4 KB."""
    if raw.startswith(_MAGIC):
        return True
    head = raw[:4096]
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return control > 2 + len(head) // 100


def parse_document(doc_id: str, raw: bytes, warnings: list[str] | None = None) -> Document:
    """Parse one file's bytes by its extension; raises CorpusError if it is unusable."""
    warns = warnings if warnings is not None else []
    suffix = Path(doc_id).suffix.lower()
    if suffix not in SUPPORTED:
        raise CorpusError(
            f"{doc_id}: unsupported file type {suffix or '(none)'}; choose from {', '.join(SUPPORTED)}"
        )
    if not raw.strip():
        raise CorpusError(f"{doc_id}: the file is empty")
    if suffix == ".pdf":
        if not raw.startswith(b"%PDF-"):
            raise CorpusError(f"{doc_id}: not a PDF (the file does not start with %PDF-)")
        title, sections = _sections_from_pdf(raw, doc_id)
    else:
        if looks_binary(raw):
            raise CorpusError(f"{doc_id}: binary content behind a {suffix} extension")
        text = _decode(raw, doc_id, warns)
        if suffix in (".html", ".htm"):
            title, sections = _sections_from_html(text)
        elif suffix == ".txt":
            title, sections = _sections_from_text(text)
        else:
            title, sections = _sections_from_markdown(text)
    if not sections:
        raise CorpusError(f"{doc_id}: no text found")
    fallback = Path(doc_id).stem.replace("-", " ").replace("_", " ").title()
    return Document(
        id=doc_id,
        path=doc_id,
        title=(title or fallback)[:200],
        sections=tuple(sections),
        sha256=sha256_bytes(raw),
    )


def iter_corpus_files(cfg: CorpusConfig) -> Iterator[tuple[str, Path]]:
    """(doc_id, path) of every supported file under the corpus folder, sorted, excludes applied."""
    root = cfg.path
    if not root.is_dir():
        raise CorpusError(
            f"corpus folder {root} does not exist; create it or set corpus.path in rag.yaml"
        )
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        if path.suffix.lower() not in SUPPORTED or any(fnmatch(rel, pat) for pat in cfg.exclude):
            continue
        yield rel, path


def hash_corpus(cfg: CorpusConfig) -> dict[str, str]:
    """doc_id -> sha256 of the raw bytes, for every corpus file."""
    return {rel: sha256_bytes(path.read_bytes()) for rel, path in iter_corpus_files(cfg)}


def load_documents(cfg: CorpusConfig, only: Iterable[str] | None = None) -> LoadReport:
    """Parse the corpus (or only the given doc ids); unusable files are skipped with a reason."""
    wanted = set(only) if only is not None else None
    report = LoadReport()
    for rel, path in iter_corpus_files(cfg):
        if wanted is not None and rel not in wanted:
            continue
        raw = path.read_bytes()
        if len(raw) > cfg.max_file_mb * 1024 * 1024:
            report.skipped.append((rel, f"larger than corpus.max_file_mb ({cfg.max_file_mb} MB)"))
            continue
        try:
            report.documents.append(parse_document(rel, raw, report.warnings))
        except CorpusError as exc:
            report.skipped.append((rel, str(exc)))
    return report


# ---- chunking ----

_PIECES = re.compile(r"\S+\s*")


def chunk_document(doc: Document, chunk_words: int, overlap_words: int) -> list[Chunk]:
    """Split each section into windows of ``chunk_words`` words overlapping by ``overlap_words``."""
    chunks: list[Chunk] = []
    step = max(1, chunk_words - overlap_words)
    for section in doc.sections:
        path = section.headings
        if path and path[0] == doc.title:  # the H1 is the title; don't repeat it in every heading
            path = path[1:]
        heading = " > ".join(path)
        pieces = _PIECES.findall(section.text)
        starts = range(0, max(1, len(pieces) - overlap_words), step) if pieces else range(0)
        for i, start in enumerate(starts):
            text = "".join(pieces[start : start + chunk_words]).strip()
            if not text:
                continue
            chunks.append(
                Chunk(
                    id=f"{doc.id}#{heading}#{i}",
                    doc_id=doc.id,
                    path=doc.path,
                    title=doc.title,
                    heading=heading,
                    text=text,
                    ordinal=len(chunks),
                )
            )
    return chunks


def chunk_documents(docs: Sequence[Document], cfg: CorpusConfig) -> list[Chunk]:
    """Chunks of every document, in document order."""
    return [c for d in docs for c in chunk_document(d, cfg.chunk_words, cfg.overlap_words)]
