"""The user's own documents: read text, Markdown and PDF files and cut them into chunks the embedder sees whole."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".log", ".csv"}
PDF_SUFFIXES = {".pdf"}
# MiniLM reads at most 256 tokens, so no chunk is silently cut; smaller chunks also keep a short fact's
# sentence from being averaged away among unrelated ones (bench/memory.py, documents).
MAX_CHUNK_CHARS = 500
OVERLAP_CHARS = 150  # the last sentences of a chunk, up to this long, start the next chunk of the same paragraph
SHORT_CHARS = 200  # paragraphs are packed together only while the chunk stays this short (notes, lists)

# A sentence ends at . ! ? (and closing quotes or brackets) before whitespace, or before a list item's line.
_SENTENCE_END = re.compile(r"([.!?][\"'\u201d\u2019)\]]*)\s+|\n(?=[ \t]*(?:[-*+\u2022]|\d+[.)])\s)")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "no", "fig", "approx"}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int  # position in the document, from 0
    page: int | None = None  # 1-based PDF page the chunk starts on; None for text files
    line: int = 1  # 1-based line the chunk starts on, in the file (or in its PDF page's text)


def supported(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES | PDF_SUFFIXES


def read_chunks(path: Path, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """The document's chunks in order. Raises FileNotFoundError or ValueError (unsupported, unreadable, no text)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        pages = _pdf_pages(path)
    elif suffix in TEXT_SUFFIXES:
        try:
            pages = [(None, path.read_text(encoding="utf-8"))]
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    else:
        kinds = ", ".join(sorted(TEXT_SUFFIXES | PDF_SUFFIXES))
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r}; supported: {kinds}")
    chunks = [
        Chunk(_chunk_string(page_text, start, end), 0, page, page_text.count("\n", 0, start) + 1)
        for page, page_text in pages
        for start, end in chunk_spans(page_text, max_chars)
    ]
    if not chunks:
        raise ValueError(f"{path}: no text found" + (" (a scanned PDF needs OCR first)" if suffix == ".pdf" else ""))
    return [Chunk(c.text, i, c.page, c.line) for i, c in enumerate(chunks)]


def _pdf_pages(path: Path) -> list[tuple[int, str]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise ValueError(f"{path}: the PDF is encrypted")
        return [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, OSError) as err:
        raise ValueError(f"{path}: not a readable PDF ({err})") from None


def chunk_text(text: str, max_chars: int = MAX_CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """The chunks of `text` as strings (see `chunk_spans`), runs of spaces and tabs made one space."""
    return [_chunk_string(text, start, end) for start, end in chunk_spans(text, max_chars, overlap)]


def _chunk_string(text: str, start: int, end: int) -> str:
    return re.sub(r"[ \t]+", " ", text[start:end])  # newlines kept: a sentence's line can still be counted


@dataclass(frozen=True)
class _Unit:
    """A sentence (or a piece of one longer than a chunk): the smallest span a chunk is made of."""

    start: int
    end: int
    paragraph_end: int  # where its paragraph ends
    first: bool  # the first unit of its paragraph
    heading: bool  # its paragraph is a Markdown heading


def chunk_spans(
    text: str, max_chars: int = MAX_CHUNK_CHARS, overlap: int = OVERLAP_CHARS, short: int = SHORT_CHARS
) -> list[tuple[int, int]]:
    """(start, end) offsets of the chunks of `text`: whole sentences packed up to `max_chars`.

    A paragraph starts a new chunk unless the chunk, begun at a paragraph's start, stays within `short`
    characters with it (a run of short notes stays together), or the chunk so far is only headings (a
    heading stays with what follows it). A Markdown heading starts a new chunk unless it follows another.
    When a paragraph goes on into the next chunk, that chunk repeats its predecessor's last sentences (up to
    `overlap` characters), so a statement and the sentence it leans on are found together. A sentence
    longer than `max_chars` is cut at word boundaries into pieces that overlap.
    """
    chunks: list[tuple[int, int]] = []
    current: list[_Unit] = []
    for unit in _units(text, max_chars, overlap):
        if current:
            fits = unit.end - current[0].start <= max_chars
            if unit.heading and unit.first:
                joins = all(u.heading for u in current) and fits
            elif unit.first:
                short_notes = current[0].first and unit.paragraph_end - current[0].start <= short
                joins = short_notes or (all(u.heading for u in current) and fits)
            else:
                joins = fits
            if not joins:
                chunks.append((current[0].start, current[-1].end))
                current = [] if unit.first else _overlap(current, unit, max_chars, overlap)
        current.append(unit)
    if current:
        chunks.append((current[0].start, current[-1].end))
    return chunks


def _overlap(chunk: list[_Unit], unit: _Unit, max_chars: int, overlap: int) -> list[_Unit]:
    """The closed chunk's last units that start the next one: at most `overlap` characters, never all of it."""
    carried: list[_Unit] = []
    for previous in reversed(chunk[1:]):
        if chunk[-1].end - previous.start > overlap or unit.end - previous.start > max_chars:
            break
        carried.insert(0, previous)
    return carried


def _units(text: str, max_chars: int, overlap: int) -> list[_Unit]:
    units: list[_Unit] = []
    for p_start, p_end in paragraph_spans(text):
        heading = text.startswith("#", p_start)
        spans = [
            piece for s, e in sentence_spans(text, p_start, p_end) for piece in _pieces(text, s, e, max_chars, overlap)
        ]
        units += [_Unit(s, e, p_end, i == 0, heading) for i, (s, e) in enumerate(spans)]
    return units


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the paragraphs (blocks between blank lines), without surrounding whitespace."""
    spans, start = [], 0
    for gap in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, gap.start()))
        start = gap.end()
    spans.append((start, len(text)))
    return [trimmed for s, e in spans if (trimmed := _trim(text, s, e))]


def all_sentence_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of every paragraph of `text` (a heading is one)."""
    return [span for start, end in paragraph_spans(text) for span in sentence_spans(text, start, end)]


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of text[start:end]. "Mr. Okafor" and initials do not end one."""
    end = len(text) if end is None else end
    spans, first = [], start
    for found in _SENTENCE_END.finditer(text, start, end):
        stop = found.end(1) if found.group(1) else found.start()
        word = (
            text[first:stop].rsplit(None, 1)[-1].strip("\"'([").rstrip(".").lower() if text[first:stop].strip() else ""
        )
        if (
            found.group(1)
            and found.group(1)[0] == "."
            and (word in _ABBREVIATIONS or len(word) == 1 and word.isalpha())
        ):
            continue
        spans.append((first, stop))
        first = found.end()
    spans.append((first, end))
    return [trimmed for s, e in spans if (trimmed := _trim(text, s, e))]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _pieces(text: str, start: int, end: int, max_chars: int, overlap: int) -> list[tuple[int, int]]:
    """A span cut at word boundaries into pieces of at most max_chars, each repeating about `overlap`
    characters of the one before (a word longer than max_chars is cut)."""
    if end - start <= max_chars:
        return [(start, end)]
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[start:end])]
    words = [(start + s, start + e) for s, e in words]
    pieces: list[tuple[int, int]] = []
    first = 0
    while first < len(words):
        last = first
        while last + 1 < len(words) and words[last + 1][1] - words[first][0] <= max_chars:
            last += 1
        pieces.append((words[first][0], min(words[last][1], words[first][0] + max_chars)))
        if last == len(words) - 1:
            break
        back = last + 1  # step back over about `overlap` characters of words for the next piece
        while back - 1 > first and words[last][1] - words[back - 1][0] <= overlap:
            back -= 1
        first = back
    return pieces
