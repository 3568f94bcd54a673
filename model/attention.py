"""Grouped-query attention over the paged KV cache (Llama; Qwen2 adds q/k/v biases)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.key_summaries import KeySummaries
from model.kv_cache import KVCache, StepLayout
from model.linear import Linear
from model.rope import apply_rotary
from model.sparse_attention import attend_gqa


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        # q, k and v are fused into one matrix at load time: one matmul instead of three.
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim, bias=config.qkv_bias)
        self.wo = Linear(config.n_heads * config.head_dim, config.dim)

    @staticmethod
    def cache_row_shape(config: ModelConfig) -> tuple[int, ...]:
        """What one token of one layer occupies in the KV cache: its keys, then its values."""
        return (2 * config.n_kv_heads, config.head_dim)

    @staticmethod
    def key_summaries(config: ModelConfig, n_layers: int, page_size: int) -> KeySummaries:
        """Per-page min/max of the key part of the rows (the first n_kv_heads vectors), for sparse attention."""
        n_kv = config.n_kv_heads
        return KeySummaries(n_layers, (n_kv, config.head_dim), lambda rows: rows[:, :n_kv], page_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layout: StepLayout
    ) -> torch.Tensor:
        # N: packed new tokens, B: sequences, T: most new tokens in one sequence, S: cached keys attended,
        # H / KV: query / key-value heads, hd: head dim, D: model dim.
        N = x.shape[0]
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x).view(N, H + 2 * KV, hd)
        qk = apply_rotary(qkv[:, : H + KV], cos, sin)  # queries and keys rotated in one pass
        q = qk[:, :H]  # [N, H, hd]
        cache.write(self.layer, layout.write_slots, torch.cat([qk[:, H:], qkv[:, H + KV :]], dim=1))  # [N, 2KV, hd]
        if layout.sparse is None:
            out = attend_dense(q, cache, self.layer, layout)
        else:  # block-sparse: only the chosen key blocks are gathered (model/sparse_attention.py)
            out = attend_gqa(layout.sparse, cache.kv[self.layer], cache.key_summaries, self.layer, q)
        return self.wo(out.reshape(N, H * hd))


def attend_dense(q: torch.Tensor, cache: KVCache, layer: int, layout: StepLayout) -> torch.Tensor:
    """Grouped-query attention of q [N, H, hd] over every cached key of its sequence -> [N, H, hd]."""
    # N: packed new tokens, B: sequences, T: most new tokens in one sequence, S: cached keys attended.
    N, H, hd = q.shape
    KV = cache.row_shape[0] // 2
    kv = cache.read(layer, layout.read_slots).transpose(1, 2)  # [B, 2KV, S, hd]
    keys, values = kv[:, :KV], kv[:, KV:]  # [B, KV, S, hd]
    B, T = layout.batch_size, layout.max_new
    if layout.row_of_token is None:
        q_padded = q.view(B, T, H, hd)
    else:
        q_padded = q.new_zeros(B, T, H, hd)
        q_padded[layout.row_of_token] = q
    out = F.scaled_dot_product_attention(
        q_padded.transpose(1, 2), keys, values, attn_mask=layout.mask, enable_gqa=True
    )  # [B, H, T, hd]
    out = out.transpose(1, 2)  # [B, T, H, hd]
    return out.reshape(N, H, hd) if layout.row_of_token is None else out[layout.row_of_token]
