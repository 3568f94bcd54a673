"""Shared fixtures for the memory tests: one MiniLM for the session, a fresh on-disk store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from memory.embeddings import MiniLMEmbedding  # noqa: E402
from memory.vector_store import VectorStore  # noqa: E402


@pytest.fixture(scope="session")
def embedding() -> MiniLMEmbedding:
    return MiniLMEmbedding()


@pytest.fixture
def store(tmp_path: Path, embedding: MiniLMEmbedding) -> VectorStore:
    return VectorStore(tmp_path / "chroma", embedding=embedding)


@pytest.fixture(scope="session")
def default_tokenizer():
    """The default model's own tokenizer (from its GGUF), without loading the weights."""
    from model.checkpoint import ModelNotFoundError, resolve_source
    from model.gguf import open_gguf, read_metadata
    from model.tokenizer import Tokenizer

    try:
        path = resolve_source("default")
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    return Tokenizer.from_gguf(path, read_metadata(open_gguf(path)))
