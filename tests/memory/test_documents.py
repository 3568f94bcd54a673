"""Reading and chunking the user's documents: text, Markdown, PDF; clear errors for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.documents import MAX_CHUNK_CHARS, chunk_spans, chunk_text, read_chunks, sentence_spans

PROSE = (
    "Grace bought 3 bags of apples at the market, each holding 12 apples. She gave a third of them to her "
    "neighbour. Then she baked two pies that each used 7 apples. She sold the rest to a friend at 50 cents "
    "each. With the money she bought flour, sugar and butter. The third pie was for the school fair."
)
FACT = "The wifi password at the cabin is heron-1182."


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (offsets computed, not hard-coded)."""
    count = len(pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(count))
        + b"] /Count %d >>" % count,
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


def test_a_short_fact_after_a_long_paragraph_is_a_chunk_of_its_own():
    """Before: packed behind the paragraph into one 800-character chunk, the fact's sentence was averaged away."""
    assert len(PROSE) > 200
    assert chunk_text(f"{PROSE}\n\n{FACT}\n\n{PROSE}") == [PROSE, FACT, PROSE]
    notes = "Locker: 212.\n\nDentist on the 14th.\n\nBins go out on Tuesday."  # short notes stay together
    assert chunk_text(notes) == [notes]
    assert chunk_text(f"# Cabin\n\n{PROSE}") == [f"# Cabin\n\n{PROSE}"]  # a heading stays with what follows


def test_sentences_end_at_stops_but_not_after_titles_or_initials():
    text = "Our landlord, Mr. Okafor, wants the rent by the 3rd. J. Smith agreed! Is it $10.50? Yes.\n- one\n- two"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "Our landlord, Mr. Okafor, wants the rent by the 3rd.",
        "J. Smith agreed!",
        "Is it $10.50?",
        "Yes.",
        "- one",
        "- two",
    ]


def test_a_long_paragraph_is_cut_between_sentences_with_overlap():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    spans = chunk_spans(text, max_chars=200, overlap=60)
    sentences = {text[s:e] for s, e in sentence_spans(text)}
    chunks = [text[s:e] for s, e in spans]
    assert len(chunks) > 3 and all(len(c) <= 200 for c in chunks)
    for chunk in chunks:  # whole sentences only
        assert {chunk[s:e] for s, e in sentence_spans(chunk)} <= sentences
    for before, after in zip(chunks, chunks[1:]):
        last = [before[s:e] for s, e in sentence_spans(before)][-1]
        carried = after[: after.index(last) + len(last)]  # the next chunk repeats the last sentences
        assert before.endswith(carried) and len(carried) <= 60
    assert chunks[0].startswith("Sentence number 0 ") and chunks[-1].endswith("number 39 is here.")
    no_overlap = [text[s:e] for s, e in chunk_spans(text, max_chars=200, overlap=0)]
    assert " ".join(no_overlap) == text  # without overlap the chunks tile the paragraph exactly


def test_long_sentence_is_cut_at_words_with_overlap():
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


def test_chunks_know_the_line_they_start_on(tmp_path: Path):
    path = tmp_path / "cabin.md"
    path.write_text(f"# Cabin\n\n{PROSE}\n\n\n{FACT}\n\nLocker: 212.")
    chunks = read_chunks(path)
    assert [(c.text, c.line) for c in chunks] == [(f"# Cabin\n\n{PROSE}", 1), (f"{FACT}\n\nLocker: 212.", 6)]


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
