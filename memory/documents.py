"""The user's own documents: read text, Markdown and PDF files and cut them into chunks the embedder sees whole."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".log", ".csv"}
PDF_SUFFIXES = {".pdf"}
# MiniLM reads at most 256 tokens; ~800 characters of English stay under that, so no chunk is silently cut.
MAX_CHUNK_CHARS = 800
OVERLAP_CHARS = 120


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int  # position in the document, from 0
    page: int | None = None  # 1-based PDF page the chunk starts on; None for text files


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
        Chunk(text, 0, page) for page, page_text in pages for text in chunk_text(page_text, max_chars)
    ]
    if not chunks:
        raise ValueError(f"{path}: no text found" + (" (a scanned PDF needs OCR first)" if suffix == ".pdf" else ""))
    return [Chunk(c.text, i, c.page) for i, c in enumerate(chunks)]


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
    """Paragraphs packed greedily into chunks of at most max_chars; a Markdown heading always starts a chunk.

    A paragraph longer than max_chars is cut at word boundaries into pieces that overlap by about
    `overlap` characters, so a sentence cut in two is still found whole in one of them.
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        paragraph = re.sub(r"[ \t]+", " ", paragraph)
        heading = paragraph.startswith("#")
        if current and (heading or len(current) + 2 + len(paragraph) > max_chars):
            chunks.append(current)
            current = ""
        if len(paragraph) <= max_chars:
            current = f"{current}\n\n{paragraph}" if current else paragraph
            continue
        pieces = _split_long(paragraph, max_chars, overlap)
        chunks.extend(pieces[:-1])
        current = pieces[-1]
    if current:
        chunks.append(current)
    return chunks


def _split_long(text: str, max_chars: int, overlap: int) -> list[str]:
    words = text.split()
    pieces: list[str] = []
    start = 0
    while start < len(words):
        end, size = start, 0
        while end < len(words) and (size + len(words[end]) + 1 <= max_chars or end == start):
            size += len(words[end]) + 1
            end += 1
        pieces.append(" ".join(words[start:end])[:max_chars])
        if end == len(words):
            break
        back, kept = end, 0  # step back over about `overlap` characters of words for the next piece
        while back - 1 > start and kept + len(words[back - 1]) + 1 <= overlap:
            back -= 1
            kept += len(words[back]) + 1
        start = back
    return pieces
