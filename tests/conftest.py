"""Shared fixtures: the real default model (int4) in a Runtime, loaded once for the app and ui tests; the memory
tiers' MiniLM (one per session), a fresh on-disk vector store per test, the default model's tokenizer, and a trap
on Chroma's default embedding function."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import Settings
from app.runtime import Runtime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The native decode step costs a ~15 s (CPU) compile per fresh cache dir: only tests/model/serving/test_compiled_step.py
# builds it (once); every other engine of the suite, and every `r1` subprocess, decodes eagerly.
os.environ.setdefault("R1_COMPILED_STEP", "0")


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    settings = Settings(
        quant="int4", cache_dir=str(base / "ui-weight-cache"), data_dir=str(base / "ui-data"), max_new_tokens=32
    )
    runtime = Runtime(settings)
    runtime.engine  # noqa: B018 (the property loads the model: once, up front)
    yield runtime
    runtime.close()


@pytest.fixture
def submitted(runtime, monkeypatch) -> list:
    """Every engine Request the code under test submits during the test (the real engine, observed)."""
    engine = runtime.engine
    seen = []
    original = engine.submit

    def observe(*args, **kwargs):
        request = original(*args, **kwargs)
        seen.append(request)
        return request

    monkeypatch.setattr(engine, "submit", observe)
    return seen


@pytest.fixture(scope="session")
def embedding():
    from memory.embeddings import MiniLMEmbedding

    return MiniLMEmbedding()


@pytest.fixture
def store(tmp_path: Path, embedding):
    from memory.vector_store import VectorStore

    return VectorStore(tmp_path / "chroma", embedding=embedding)


@pytest.fixture(scope="session")
def default_tokenizer():
    """The default model's own tokenizer (from its GGUF), without loading the weights."""
    from model.loading.checkpoint import ModelNotFoundError, resolve_source
    from model.loading.gguf import open_gguf, read_metadata
    from model.tokenizer import Tokenizer

    try:
        path = resolve_source("default")
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    return Tokenizer.from_gguf(path, read_metadata(open_gguf(path)))


@pytest.fixture
def default_embedding_trap(monkeypatch):
    """Chroma's default embedding function (it downloads an ONNX model) raises the returned error if reached."""
    from chromadb.api.types import DefaultEmbeddingFunction
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    class DefaultEmbeddingReached(AssertionError):
        pass

    def refuse(self, input):  # the signature Chroma checks EFs against
        raise DefaultEmbeddingReached("Chroma's default (ONNX, downloading) embedding function was called")

    monkeypatch.setattr(DefaultEmbeddingFunction, "__call__", refuse)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", refuse)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download_model_if_not_exists", refuse)
    with pytest.raises(DefaultEmbeddingReached):  # the trap works
        DefaultEmbeddingFunction()(["x"])
    return DefaultEmbeddingReached
