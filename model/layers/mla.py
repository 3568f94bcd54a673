"""Multi-head Latent Attention (DeepSeek-V2/V3/R1) over the paged KV cache.

Keys and values come from one low-rank latent per token (`kv_lora_rank`) plus one rope key shared by every
head (`qk_rope_head_dim`); that pair is all the cache holds, against 2 * heads * head_dim for ordinary
multi-head attention. Two ways to attend, equal in exact arithmetic:

- expanded ("naive"): up-project every cached latent to per-head keys and values (W_UK, W_UV = wkv_b),
  then ordinary attention. Cheapest when most keys are new (prefill).
- absorbed: fold W_UK into the query (q_nope W_UK lives in latent space) and W_UV after attention, and
  attend over the cached latents directly, all heads sharing them like multi-query attention. Each step
  touches only the small latent rows, which is what decode needs.

`mode` = "auto" (default) picks per step by counting multiply-adds; "absorbed" / "naive" force one
(tests and bench/r1_arch.py compare them). A block-sparse step (model/layers/sparse_attention.py) always absorbs: its
query meets the chosen blocks' latent rows, gathered from the pool, and the page summaries of those rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.layers.attention import causal_mask, pad_queries, unpad
from model.layers.key_summaries import KeySummaries
from model.layers.kv_cache import KVCache, StepLayout
from model.layers.linear import Linear
from model.layers.norm import RMSNorm
from model.layers.rope import apply_rotary, softmax_scale
from model.layers.sparse_attention import attend_latent

MLA_MODES = ("auto", "absorbed", "naive")
LATENT_NORM_EPS = 1e-6  # DeepSeek's q_a / kv_a norms use RMSNorm's default, not the config's rms_norm_eps


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        m = config.mla
        self.layer = layer
        self.n_heads = config.n_heads
        self.nope_dim, self.rope_dim, self.v_dim = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
        self.kv_rank = m.kv_lora_rank
        query_width = config.n_heads * m.qk_head_dim
        self.q_rank = m.q_lora_rank
        # x -> [query (or its latent), kv latent, shared rope key] in one matmul (fused at load time).
        self.wqkv_a = Linear(config.dim, (m.q_lora_rank or query_width) + m.kv_lora_rank + m.qk_rope_head_dim)
        if m.q_lora_rank is not None:
            self.q_norm = RMSNorm(m.q_lora_rank, LATENT_NORM_EPS)
            self.wq_b = Linear(m.q_lora_rank, query_width)
        self.kv_norm = RMSNorm(m.kv_lora_rank, LATENT_NORM_EPS)
        # [H * (nope + v), C]: W_UK and W_UV, head by head. A plain tensor, never quantized: the absorbed path
        # contracts it per head with queries and outputs, and it is ~1% of a DeepSeek layer's weights.
        self.wkv_b = nn.Parameter(
            torch.empty(config.n_heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank), requires_grad=False
        )
        self.wo = Linear(config.n_heads * m.v_head_dim, config.dim)
        self.scale = softmax_scale(m.qk_head_dim, config.rope_scaling)
        self.mode = "auto"

    @staticmethod
    def cache_row_shape(config: ModelConfig) -> tuple[int, ...]:
        """One token of one layer in the cache: its normed kv latent, then its rotated rope key."""
        return (config.mla.kv_lora_rank + config.mla.qk_rope_head_dim,)

    @staticmethod
    def key_summaries(config: ModelConfig, n_layers: int, page_size: int) -> KeySummaries:
        """Per-page min/max of whole rows (latent + rope key, one key group): the space of the absorbed query."""
        width = config.mla.kv_lora_rank + config.mla.qk_rope_head_dim
        return KeySummaries(n_layers, (1, width), lambda rows: rows.reshape(rows.shape[0], 1, width), page_size)

    def checkpoint_sources(self) -> dict[str, tuple[str, ...]]:
        """Our fused parameters -> the checkpoint tensors concatenated (along rows) to make them."""
        return {
            "wqkv_a.weight": ("wq_a.weight" if self.q_rank is not None else "wq.weight", "wkv_a.weight"),
            "wkv_b": ("wkv_b.weight",),  # a plain tensor here, not a Linear's weight
        }

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layout: StepLayout
    ) -> torch.Tensor:
        # N: packed new tokens, B: sequences, T: most new tokens in one sequence, S: cached keys attended,
        # H: heads, P / R / V: no-rope, rope and value head dims, C: kv latent rank, D: model dim.
        N, H, P, R, C = x.shape[0], self.n_heads, self.nope_dim, self.rope_dim, self.kv_rank
        q, latent, k_rope = self.wqkv_a(x).split([self.wqkv_a.out_features - C - R, C, R], dim=-1)
        if self.q_rank is not None:
            q = self.wq_b(self.q_norm(q))
        q_nope, q_rope = q.view(N, H, P + R).split([P, R], dim=-1)  # [N, H, P], [N, H, R]
        q_rope = apply_rotary(q_rope, cos, sin)
        k_rope = apply_rotary(k_rope.view(N, 1, R), cos, sin).view(N, R)
        cache.write(self.layer, layout.write_slots, torch.cat([self.kv_norm(latent), k_rope], dim=-1))  # [N, C+R]
        if layout.sparse is not None:  # block-sparse: only the chosen key blocks' rows are gathered
            latent_out = attend_latent(
                layout.sparse,
                cache.kv[self.layer],
                cache.key_summaries,
                self.layer,
                self._absorb_query(q_nope, q_rope),
                self.scale,
                C,
            )  # [N, H, C]
            out = self._up_project_values(latent_out)
        else:
            rows = cache.read(self.layer, layout.read_slots)  # [B, S, C+R]
            mask = layout.derived(causal_mask)  # [B, 1, T, S] or None
            absorbed = self.mode == "absorbed" or (self.mode == "auto" and self._absorbing_is_cheaper(layout))
            attend = self._absorbed if absorbed else self._expanded
            out = attend(q_nope, q_rope, rows, mask, layout)
        return self.wo(out.reshape(N, H * self.v_dim))

    def _expanded(self, q_nope, q_rope, rows, mask, layout) -> torch.Tensor:
        """Per-head keys and values up-projected from every cached latent; returns [N, H, V]."""
        B, S = rows.shape[:2]
        H, P, R, C = self.n_heads, self.nope_dim, self.rope_dim, self.kv_rank
        kv = F.linear(rows[..., :C], self.wkv_b).view(B, S, H, P + self.v_dim)
        k_nope, values = kv.split([P, self.v_dim], dim=-1)  # [B, S, H, P], [B, S, H, V]
        keys = torch.cat([k_nope, rows[:, :, None, C:].expand(B, S, H, R)], dim=-1)  # [B, S, H, P+R]
        q = torch.cat([q_nope, q_rope], dim=-1)  # [N, H, P+R]
        out = F.scaled_dot_product_attention(
            pad_queries(q, layout), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask, scale=self.scale
        )  # [B, H, T, V]
        return unpad(out, layout)

    def _absorbed(self, q_nope, q_rope, rows, mask, layout) -> torch.Tensor:
        """Attention in latent space: q_nope . W_UK . latent + q_rope . k_rope, then W_UV; returns [N, H, V]."""
        B = rows.shape[0]
        H, C, T = self.n_heads, self.kv_rank, layout.max_new
        q = self._absorb_query(q_nope, q_rope)  # [N, H, C+R]
        # Every head attends over the same latent rows, so heads fold into the query rows of a single-head
        # attention: [B, 1, T*H, C+R] against [B, 1, S, C+R] (row t*H + h is head h of token t).
        q = pad_queries(q, layout).transpose(1, 2).reshape(B, 1, T * H, -1)
        if mask is not None:
            mask = mask.repeat_interleave(H, dim=2)  # [B, 1, T*H, S]
        out = F.scaled_dot_product_attention(q, rows[:, None], rows[:, None, :, :C], attn_mask=mask, scale=self.scale)
        out = out.view(B, T, H, C).transpose(1, 2)  # [B, H, T, C]
        return self._up_project_values(unpad(out, layout))

    def _absorb_query(self, q_nope: torch.Tensor, q_rope: torch.Tensor) -> torch.Tensor:
        """q_nope [N, H, P] through W_UK into latent space, then q_rope: [N, H, C+R], against whole cache rows."""
        w_uk = self.wkv_b.view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)[:, : self.nope_dim]  # [H, P, C]
        return torch.cat([torch.einsum("nhp,hpc->nhc", q_nope, w_uk), q_rope], dim=-1)

    def _up_project_values(self, latent_out: torch.Tensor) -> torch.Tensor:
        """Attention output in latent space [N, H, C] through W_UV -> per-head values [N, H, V]."""
        w_uv = self.wkv_b.view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)[:, self.nope_dim :]  # [H, V, C]
        return torch.einsum("nhc,hvc->nhv", latent_out, w_uv)

    def _absorbing_is_cheaper(self, layout: StepLayout) -> bool:
        """Multiply-adds of both ways for this step: expanding is linear in cached keys, absorbing in new tokens."""
        B, T, S = layout.batch_size, layout.max_new, layout.read_slots.shape[1]
        H, P, R, V, C = self.n_heads, self.nope_dim, self.rope_dim, self.v_dim, self.kv_rank
        N = int(layout.last_token[-1]) + 1
        expanded = B * S * C * H * (P + V) + B * H * T * S * (P + R + V)
        absorbed = N * H * C * (P + V) + B * H * T * S * (2 * C + R)
        return absorbed < expanded


def set_mla_mode(model: nn.Module, mode: str) -> None:
    """Make every MLA layer of `model` attend "auto" (cheapest per step), "absorbed" or "naive" (expanded)."""
    if mode not in MLA_MODES:
        raise ValueError(f"unknown MLA mode {mode!r}; choose one of {', '.join(MLA_MODES)}")
    for module in model.modules():
        if isinstance(module, MultiHeadLatentAttention):
            module.mode = mode
