"""Reading and chunking the user's documents: text, Markdown, PDF; clear errors for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.documents import MAX_CHUNK_CHARS, chunk_text, read_chunks


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (offsets computed, not hard-coded)."""
    count = len(pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(count)) + b"] /Count %d >>" % count,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
            % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_paragraphs_are_packed_and_headings_start_chunks():
    text = "# One\n\nalpha beta.\n\ngamma delta.\n\n## Two\n\nepsilon."
    assert chunk_text(text) == ["# One\n\nalpha beta.\n\ngamma delta.", "## Two\n\nepsilon."]


def test_long_paragraph_is_cut_at_words_with_overlap():
    words = [f"w{i}" for i in range(600)]
    chunks = chunk_text(" ".join(words), max_chars=200, overlap=40)
    assert all(len(c) <= 200 for c in chunks)
    assert chunks[0].split()[0] == "w0" and chunks[-1].split()[-1] == "w599"
    for before, after in zip(chunks, chunks[1:]):
        assert after.split()[0] in before.split()  # the pieces overlap
    assert set(" ".join(chunks).split()) == set(words)  # nothing dropped


def test_text_file_chunks_are_numbered(tmp_path: Path):
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(10)))
    chunks = read_chunks(path)
    assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) > 1
    assert all(len(c.text) <= MAX_CHUNK_CHARS and c.page is None for c in chunks)
    assert "Paragraph 9" in chunks[-1].text


def test_pdf_pages_are_read_with_page_numbers(tmp_path: Path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(["The launch code is PELICAN.", "Invoices are due in 30 days."]))
    chunks = read_chunks(path)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "The launch code is PELICAN."),
        (2, "Invoices are due in 30 days."),
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data.bin", b"\x00\x01", "unsupported file type '.bin'"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8 text"),
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf", "not a readable PDF"),
        ("empty.md", b"  \n\n ", "no text found"),
    ],
)
def test_unreadable_files_are_clear_errors(tmp_path: Path, name: str, content: bytes, message: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_chunks(path)
    assert name in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_chunks(tmp_path / "nope.txt")
