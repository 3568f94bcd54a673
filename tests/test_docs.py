"""The docs match the tree: every repository path README.md and docs/*.md name exists, and every citation of a
docs/BENCHMARKS.md section (a `#anchor` link, or a quoted section name in code, tests or docs) names a heading
that exists. Pure text, no model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
# Top-level folders of the repository: a path in prose that starts with one of them is a path into this tree.
TOP = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
# `model/loading/gguf.py`, `bench/data/symbolic.jsonl`, `model/serving/native/`: a top folder, then name parts;
# placeholders and globs (`<key>`, `*`, `{a,b}`) end the match before the name is complete and are not checked.
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./-]*[\w/])(?![\w*{<])")
CITED_SECTION = re.compile(r'BENCHMARKS(?:\.md)?[,:]?\s+"([^"]+)"')
LINK = re.compile(r"BENCHMARKS\.md#([\w-]+)")
OWN_LINK = re.compile(r"\]\(#([\w-]+)\)")


def mentioned_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in PATH.findall(text)}


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def benchmark_headings() -> list[str]:
    return [
        line.lstrip("#").strip() for line in BENCHMARKS.read_text(encoding="utf-8").splitlines() if line.startswith("#")
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    paths = mentioned_paths(doc.read_text(encoding="utf-8"))
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_path_pattern_finds_paths_and_skips_placeholders() -> None:
    text = (
        "see `model/loading/gguf.py`, model/serving/native/ and tests/test_docs.py. Not "
        "`<cache dir>/native/x.so`, `app/support*.py`, `model/{engine,config}.py`, ../shared/datasets"
    )
    assert mentioned_paths(text) == {"model/loading/gguf.py", "model/serving/native/", "tests/test_docs.py"}


def test_cited_benchmark_sections_exist() -> None:
    headings = benchmark_headings()
    slugs = {github_slug(h) for h in headings}
    sources = [*DOCS, *ROOT.glob("[!.]*/**/*.py")]
    cited, broken = 0, []
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for name in CITED_SECTION.findall(text):
            cited += 1
            if not any(name in h for h in headings):
                broken.append(f'{source.relative_to(ROOT)}: "{name}"')
        for anchor in LINK.findall(text) + (OWN_LINK.findall(text) if source == BENCHMARKS else []):
            cited += 1
            if anchor not in slugs:
                broken.append(f"{source.relative_to(ROOT)}: #{anchor}")
    assert cited >= 5, "the citation patterns no longer find the repository's citations"
    assert not broken, f"citations of docs/BENCHMARKS.md sections that do not exist: {broken}"


def test_github_slug() -> None:
    assert github_slug("Memory (bench/memory.py)") == "memory-benchmemorypy"
    assert github_slug("Long context: block-sparse attention (bench/long_context.py)") == (
        "long-context-block-sparse-attention-benchlong_contextpy"
    )
