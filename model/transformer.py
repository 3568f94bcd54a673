"""The decoder-only transformer: embeddings, blocks (attention + MLP, each pre-normed), final norm, LM head.

A block picks its attention and MLP classes from the config, so another architecture (MLA, MoE)
adds classes here rather than branches inside them.
"""

from __future__ import annotations

import torch
from torch import nn

from model.attention import GroupedQueryAttention
from model.config import ModelConfig
from model.kv_cache import KVCache, StepLayout, block_bytes
from model.mlp import SwiGLU
from model.norm import RMSNorm
from model.linear import Linear
from model.rope import RotaryEmbedding


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = GroupedQueryAttention(config, layer)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layout: StepLayout
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, layout)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_embeddings.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # With tied embeddings the head still gets its own Linear so int8 can quantize it separately;
        # the loader fills it from the embedding matrix.
        self.output = Linear(config.dim, config.vocab_size)
        self.rope = RotaryEmbedding(config)

    def new_cache(
        self, *, max_seq_len: int, capacity_bytes: int, block_size: int = 16, key_summaries: bool = False
    ) -> KVCache:
        """A paged KV cache for this model holding at most `capacity_bytes` of rows.

        key_summaries: also keep per-page key min/max (what top-k sparse attention scores blocks with).
        """
        attention = self.layers[0].attention
        n_layers, row_shape = self.config.n_layers, attention.cache_row_shape(self.config)
        per_block = block_bytes(n_layers, row_shape, block_size, torch.float32)
        return KVCache(
            n_layers, row_shape, max_seq_len=max_seq_len, block_size=block_size, max_blocks=max(1, capacity_bytes // per_block),
            key_summaries=attention.key_summaries(self.config, n_layers, block_size) if key_summaries else None,
        )

    @classmethod
    def from_state(cls, config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
        """Build around `state` (this module's layout, see `packed_state`) without copying it (tensors may be mmaps)."""
        state = dict(state)
        if config.tie_embeddings and "output.weight" not in state:
            state["output.weight"] = state["tok_embeddings.weight"]
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, assign=True)
        model.rope = RotaryEmbedding(config)  # built on meta above; its tables are plain tensors
        return model.eval()

    def packed_state(self) -> dict[str, torch.Tensor]:
        """The state to cache: everything `from_state` needs, a tied LM head stored once."""
        state = self.state_dict()
        if self.output.weight.data_ptr() == self.tok_embeddings.weight.data_ptr():
            del state["output.weight"]
        return state

    def forward(self, tokens: torch.Tensor, cache: KVCache, layout: StepLayout, all_logits: bool = False) -> torch.Tensor:
        """tokens [N] packed as `layout` says -> fp32 logits [B, V] at each sequence's last token, or [N, V]."""
        x = self.tok_embeddings(tokens)  # [N, D]
        cos, sin = self.rope.at(layout.positions)  # [N, 1, hd]
        for block in self.layers:
            x = block(x, cos, sin, cache, layout)
        if not all_logits:
            x = x[layout.last_token]  # [B, D]: the LM head is a fifth of the compute; skip unused rows
        return self.output(self.norm(x)).float()


def fuse_checkpoint(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Checkpoint-named tensors (wq/wk/wv, w1/w3 apart; see model/checkpoint.py) -> this module's state dict.

    Fusing q/k/v and gate/up into single matrices halves the number of matmuls per block.
    Raises ValueError naming any missing or unexpected tensor.
    """
    remaining = dict(tensors)

    def take(name: str) -> torch.Tensor:
        try:
            return remaining.pop(name)
        except KeyError:
            raise ValueError(f"checkpoint lacks tensor {name!r}") from None

    state = {"tok_embeddings.weight": take("tok_embeddings.weight"), "norm.weight": take("norm.weight")}
    if not config.tie_embeddings:  # tied: the head is the embedding, re-tied in `from_state`
        state["output.weight"] = take("output.weight")
    for i in range(config.n_layers):
        p = f"layers.{i}."
        state[p + "attention_norm.weight"] = take(p + "attention_norm.weight")
        state[p + "ffn_norm.weight"] = take(p + "ffn_norm.weight")
        state[p + "attention.wqkv.weight"] = torch.cat([take(p + f"attention.{w}.weight") for w in ("wq", "wk", "wv")])
        if config.qkv_bias:
            state[p + "attention.wqkv.bias"] = torch.cat([take(p + f"attention.{w}.bias") for w in ("wq", "wk", "wv")])
        state[p + "attention.wo.weight"] = take(p + "attention.wo.weight")
        state[p + "feed_forward.w13.weight"] = torch.cat([take(p + "feed_forward.w1.weight"), take(p + "feed_forward.w3.weight")])
        state[p + "feed_forward.w2.weight"] = take(p + "feed_forward.w2.weight")
    if remaining:
        raise ValueError(f"checkpoint has unexpected tensors: {', '.join(sorted(remaining)[:5])}")
    return state
