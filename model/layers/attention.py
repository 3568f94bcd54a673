"""Grouped-query attention over the paged KV cache (Llama, Qwen2's q/k/v biases, Mixtral), and the attention
policy every attention class shares: the causal mask of a ragged step and the padding of its queries.

An attention class owns its cache layout (`cache_row_shape`) and its mask; the KV cache only stores rows.
A dense pattern (e.g. a sliding window) is a new mask function passed to `layout.derived`; block-sparse
attention (model/layers/sparse_attention.py) gathers only the chosen key blocks instead, when the step has a plan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.layers.key_summaries import KeySummaries
from model.layers.kv_cache import KVCache, StepLayout
from model.layers.linear import Linear
from model.layers.rope import apply_rotary
from model.layers.sparse_attention import attend_gqa


def causal_mask(layout: StepLayout) -> torch.Tensor | None:
    """[B, 1, T, S] True = may attend: query t of row b (at position starts[b] + t) sees keys at positions up to
    its own and never a padding key past its sequence's end. None when every query may see all S keys."""
    S = layout.read_slots.shape[1]
    if layout.max_new == 1 and all(end == S for end in layout.ends):
        return None
    q_pos = torch.tensor(layout.starts)[:, None] + torch.arange(layout.max_new)[None, :]  # [B, T]
    k_pos = torch.arange(S)  # [S]
    mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (
        k_pos[None, None, :] < torch.tensor(layout.ends)[:, None, None]
    )
    return mask.unsqueeze(1)


def pad_queries(q: torch.Tensor, layout: StepLayout) -> torch.Tensor:
    """Packed queries [N, H, d] -> [B, H, T, d], zeros where a row has fewer than T new tokens."""
    B, T = layout.batch_size, layout.max_new
    if layout.row_of_token is None:
        padded = q.view(B, T, *q.shape[1:])
    else:
        padded = q.new_zeros(B, T, *q.shape[1:])
        padded[layout.row_of_token] = q
    return padded.transpose(1, 2)


def unpad(out: torch.Tensor, layout: StepLayout) -> torch.Tensor:
    """Attention output [B, H, T, d] -> packed [N, H, d] (the inverse of `pad_queries`)."""
    out = out.transpose(1, 2)  # [B, T, H, d]
    return out.reshape(-1, *out.shape[2:]) if layout.row_of_token is None else out[layout.row_of_token]


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

    def checkpoint_sources(self) -> dict[str, tuple[str, ...]]:
        """Our fused parameters -> the checkpoint tensors concatenated (along rows) to make them."""
        sources = {"wqkv.weight": ("wq.weight", "wk.weight", "wv.weight")}
        if self.wqkv.bias is not None:
            sources["wqkv.bias"] = ("wq.bias", "wk.bias", "wv.bias")
        return sources

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
        else:  # block-sparse: only the chosen key blocks are gathered (model/layers/sparse_attention.py)
            out = attend_gqa(layout.sparse, cache.kv[self.layer], cache.key_summaries, self.layer, q)
        return self.wo(out.reshape(N, H * hd))


def attend_dense(q: torch.Tensor, cache: KVCache, layer: int, layout: StepLayout) -> torch.Tensor:
    """Grouped-query attention of q [N, H, hd] over every cached key of its sequence -> [N, H, hd]."""
    KV = cache.row_shape[0] // 2
    kv = cache.read(layer, layout.read_slots).transpose(1, 2)  # [B, 2KV, S, hd]
    keys, values = kv[:, :KV], kv[:, KV:]  # [B, KV, S, hd]
    out = F.scaled_dot_product_attention(
        pad_queries(q, layout), keys, values, attn_mask=layout.derived(causal_mask), enable_gqa=True
    )  # [B, H, T, hd]
    return unpad(out, layout)
