"""Shared fixtures for model-loading tests: the default model, loaded once per session."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def default_gguf_path() -> Path:
    from model.loading.checkpoint import ModelNotFoundError, resolve_source

    try:
        return resolve_source("default")
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def loading_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh weight cache for this session (the first default load is a real, uncached one)."""
    return tmp_path_factory.mktemp("r1-cache")


@pytest.fixture(scope="session")
def load_times() -> dict[str, float]:
    """Wall times of default-model loads, filled by the fixtures and tests that do them."""
    return {}


@pytest.fixture(scope="session")
def default_checkpoint(default_gguf_path: Path, loading_cache_dir: Path, load_times: dict[str, float]):
    from model.loading.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ckpt = load_checkpoint(default_gguf_path, cache_dir=loading_cache_dir)
    load_times["first"] = time.perf_counter() - t0
    return ckpt


@pytest.fixture(scope="session")
def reference_hf_tokenizer(default_gguf_path: Path):
    """transformers' own tokenizer for the default GGUF: the reference our Tokenizer must match."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(default_gguf_path.parent), gguf_file=default_gguf_path.name, local_files_only=True
    )


@pytest.fixture(scope="session")
def reference_hf_model(default_gguf_path: Path):
    """transformers' own LlamaForCausalLM on the default GGUF (fp32): the reference for weights and greedy output."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(default_gguf_path.parent), gguf_file=default_gguf_path.name, dtype=torch.float32, local_files_only=True
    ).eval()
