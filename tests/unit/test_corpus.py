from pathlib import Path

import pytest

from rag.config import CorpusConfig
from rag.corpus import chunk_document, load_documents, parse_document
from rag.errors import CorpusError


def test_markdown_sections_follow_heading_path() -> None:
    raw = b"# Guide\nintro\n## Setup\nstep one\n### Keys\nrotate every 90 days\n## Rollback\nrun `deploy --undo`\n"
    doc = parse_document("guide.md", raw)
    assert doc.title == "Guide"
    heads = [s.headings for s in doc.sections]
    assert heads == [
        ("Guide",),
        ("Guide", "Setup"),
        ("Guide", "Setup", "Keys"),
        ("Guide", "Rollback"),
    ]


def test_headings_inside_code_fences_are_text() -> None:
    doc = parse_document("a.md", b"# T\n```\n# not a heading\n```\nafter\n")
    assert len(doc.sections) == 1 and "# not a heading" in doc.sections[0].text


def test_txt_underlined_headings() -> None:
    doc = parse_document("n.txt", b"Office notes\n\nParking\n=======\nLevel -2, bays 14-20.\n")
    assert doc.title == "Office notes"
    assert doc.sections[-1].headings == ("Parking",)
    assert "bays 14-20" in doc.sections[-1].text


def test_html_headings_text_and_no_script() -> None:
    raw = b"<html><head><title>FAQ</title><script>alert(1)</script></head><body><h1>FAQ</h1><h2>Billing</h2><p>Invoices go out on the 3rd.</p><script>evil()</script><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    doc = parse_document("faq.html", raw)
    assert doc.title == "FAQ"
    text = " ".join(s.text for s in doc.sections)
    assert "Invoices go out on the 3rd." in text
    assert "evil" not in text and "alert" not in text
    assert any(s.headings == ("FAQ", "Billing") for s in doc.sections)


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Travel policy. The hotel cap in Berlin is 160 EUR per night.")
    raw = bytes(pdf.output())
    doc = parse_document("travel.pdf", raw)
    assert "160 EUR" in doc.sections[0].text


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("x.md", b"", "empty"),
        ("x.md", b"   \n\t", "empty"),
        ("x.docx", b"hello", "unsupported file type .docx"),
        ("x.pdf", b"not a pdf at all", "not a PDF"),
        ("x.pdf", b"%PDF-1.4 broken", "could not be parsed|no extractable text"),
        ("x.md", b"%PDF-1.4\n...", "binary content"),
        ("x.txt", b"\x00\x01\x02binary", "binary content"),
    ],
)
def test_unusable_files_raise_clear_errors(name: str, raw: bytes, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        parse_document(name, raw)


def test_invalid_utf8_is_replaced_with_a_warning() -> None:
    warnings: list[str] = []
    doc = parse_document("bad.md", b"# T\ncaf\xe9 opens at 8\n", warnings)
    assert "opens at 8" in doc.sections[0].text
    assert warnings and "invalid UTF-8" in warnings[0]


def test_control_characters_are_removed() -> None:
    doc = parse_document("c.md", b"# T\nline\x00one\x07 two\n")
    assert doc.sections[0].text == "lineone two"


def test_chunks_have_stable_ids_and_overlap() -> None:
    body = " ".join(f"w{i}" for i in range(250))
    doc = parse_document("d.md", f"# Title\n## Part\n{body}\n".encode())
    chunks = chunk_document(doc, chunk_words=100, overlap_words=20)
    assert [c.id for c in chunks] == ["d.md#Part#0", "d.md#Part#1", "d.md#Part#2"]
    assert chunks[0].text.split()[-20:] == chunks[1].text.split()[:20]
    assert chunk_document(doc, 100, 20) == chunks  # deterministic
    assert all(c.heading == "Part" and c.title == "Title" for c in chunks)


def test_load_documents_skips_bad_files_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\ntext here\n")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "README.md").write_text("# excluded\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    report = load_documents(CorpusConfig(path=tmp_path))
    assert [d.id for d in report.documents] == ["good.md"]
    assert report.skipped == [("empty.md", "empty.md: the file is empty")]


def test_missing_corpus_folder_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"does not exist.*corpus\.path"):
        load_documents(CorpusConfig(path=tmp_path / "nope"))
