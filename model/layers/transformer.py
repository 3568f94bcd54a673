"""The decoder-only transformer: embeddings, blocks (attention + MLP, each pre-normed), final norm, LM head.

Each block is built from its `LayerSpec` (model/config.py): the attention class and the MLP class come from
the tables below, so a new architecture adds classes and table entries, not branches inside them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from model.config import LayerSpec, ModelConfig
from model.layers.adapters import AdapterRouting, AdapterRows
from model.layers.attention import GroupedQueryAttention
from model.layers.kv_cache import KVCache, StepLayout, block_bytes
from model.layers.linear import Linear
from model.layers.mla import MultiHeadLatentAttention
from model.layers.mlp import SwiGLU
from model.layers.moe import TASK_TYPES, ExpertLoad, MoE, Router
from model.layers.norm import RMSNorm
from model.layers.rope import RotaryEmbedding

ATTENTION_CLASSES = {"gqa": GroupedQueryAttention, "mla": MultiHeadLatentAttention}
MLP_CLASSES = {
    "dense": lambda config, layer: SwiGLU(config.dim, config.ffn_dim),
    "moe": MoE,
}


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, spec: LayerSpec) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = ATTENTION_CLASSES[spec.attention](config, layer)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = MLP_CLASSES[spec.mlp](config, layer)
        self.routed = spec.mlp == "moe"  # a routed MLP also takes the tokens' task rows

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache,
        layout: StepLayout,
        task_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, layout)
        h = self.ffn_norm(x)
        return x + (self.feed_forward(h, task_rows) if self.routed else self.feed_forward(h))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_embeddings.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(config, i, spec) for i, spec in enumerate(config.layer_specs()))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # With tied embeddings the head still gets its own Linear so int8 can quantize it separately;
        # the loader fills it from the embedding matrix.
        self.output = Linear(config.dim, config.vocab_size)
        self.rope = RotaryEmbedding(config)
        self.adapter_routing = AdapterRouting()  # per-request adapters (model/loading/lora.py attach_adapter)

    def new_cache(
        self, *, max_seq_len: int, capacity_bytes: int, block_size: int = 16, key_summaries: bool = False
    ) -> KVCache:
        """A paged KV cache for this model holding at most `capacity_bytes` of rows.

        key_summaries: also keep per-page key min/max (what top-k sparse attention scores blocks with), in the
        key space the attention class names (`key_summaries`: GQA's key heads, MLA's whole latent + rope row).
        """
        attentions = {type(block.attention) for block in self.layers}
        row_shapes = {attention.cache_row_shape(self.config) for attention in attentions}
        assert len(row_shapes) == 1, f"layers disagree on the cache row shape: {row_shapes}"
        (row_shape,) = row_shapes
        n_layers = self.config.n_layers
        summaries = None
        if key_summaries:
            (attention,) = attentions
            summaries = attention.key_summaries(self.config, n_layers, block_size)
        per_block = block_bytes(n_layers, row_shape, block_size, torch.float32)
        return KVCache(
            n_layers,
            row_shape,
            max_seq_len=max_seq_len,
            block_size=block_size,
            max_blocks=max(1, capacity_bytes // per_block),
            key_summaries=summaries,
        )

    @classmethod
    def from_state(cls, config: ModelConfig, state: Mapping[str, torch.Tensor]) -> Transformer:
        """Build around `state` (this module's layout, see `packed_state`) without copying it (tensors may be mmaps)."""
        state = dict(state)
        if config.tie_embeddings and "output.weight" not in state:
            state["output.weight"] = state["tok_embeddings.weight"]
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, assign=True)
        model.rope = RotaryEmbedding(config)  # built on meta above; its tables are plain tensors
        model.reset_router_stats()  # likewise the routers' counters
        return model.eval()

    def packed_state(self) -> dict[str, torch.Tensor]:
        """The state to cache: everything `from_state` needs, a tied LM head stored once."""
        state = self.state_dict()
        if self.output.weight.data_ptr() == self.tok_embeddings.weight.data_ptr():
            del state["output.weight"]
        return state

    # ----- routing options -----------------------------------------------------------------------

    def routers(self) -> list[Router]:
        return [m for m in self.modules() if isinstance(m, Router)]

    def set_task_router_bias(self, biases: Mapping[str, torch.Tensor] | None) -> None:
        """Per task type, a bias [MoE layers, experts] added to router logits of that task's tokens; None = off."""
        routers = self.routers()
        if not routers:
            raise ValueError(f"a {self.config.arch} model has no experts to route")
        if biases is None:
            for router in routers:
                router.task_bias = None
            return
        unknown = set(biases) - set(TASK_TYPES)
        if unknown:
            raise ValueError(f"unknown task type {sorted(unknown)[0]!r}; choose from {', '.join(TASK_TYPES)}")
        table = torch.zeros(len(routers), len(TASK_TYPES) + 1, routers[0].n_experts)
        for task, bias in biases.items():
            bias = torch.as_tensor(bias, dtype=torch.float32)
            if bias.shape != (len(routers), routers[0].n_experts):
                raise ValueError(
                    f"router bias for {task!r} has shape {list(bias.shape)}, "
                    f"expected [{len(routers)} MoE layers, {routers[0].n_experts} experts]"
                )
            table[:, TASK_TYPES.index(task)] = bias
        for router, rows in zip(routers, table):
            router.task_bias = rows

    @property
    def has_task_router_bias(self) -> bool:
        return any(router.task_bias is not None for router in self.routers())

    def set_expert_capacity(self, capacity: int | None) -> None:
        """Most (token, expert) assignments per expert per step, overflow going to backup experts; None = off."""
        if capacity is not None and capacity < 1:
            raise ValueError(f"expert capacity must be at least 1, got {capacity}")
        for router in self.routers():
            router.capacity = capacity

    def router_stats(self) -> list[ExpertLoad]:
        return [router.stats() for router in self.routers()]

    def reset_router_stats(self) -> None:
        for router in self.routers():
            router.reset_stats()

    # ----- forward -------------------------------------------------------------------------------

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache,
        layout: StepLayout,
        all_logits: bool = False,
        task_rows: torch.Tensor | None = None,
        adapter_rows: AdapterRows | None = None,
        hidden: bool = False,
    ) -> torch.Tensor:
        """tokens [N] packed as `layout` says -> fp32 logits [B, V] at each sequence's last token, or [N, V].

        task_rows [N]: each token's row of the routers' task-bias table (`TASK_TYPES` index; len(TASK_TYPES) =
        none), or None for no task bias.
        adapter_rows: which rows each per-request adapter applies to (model/layers/adapters.py); None = none.
        hidden: return the final-normed hidden states [B or N, D] instead of logits (what a value head reads).
        """
        self.adapter_routing.rows = adapter_rows
        try:
            x = self.tok_embeddings(tokens)  # [N, D]
            cos, sin = self.rope.at(layout.positions)  # [N, 1, rope dim]
            for block in self.layers:
                x = block(x, cos, sin, cache, layout, task_rows)
            if not all_logits:
                x = x[layout.last_token]  # [B, D]: the LM head is a fifth of the compute; skip unused rows
            x = self.norm(x)
            return x.float() if hidden else self.output(x).float()
        finally:
            self.adapter_routing.rows = None
