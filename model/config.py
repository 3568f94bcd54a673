"""Model configuration: the dataclasses and their derived sizes, whatever the checkpoint format.

Each reader turns its own metadata into a `ModelConfig`, never from file names: GGUF keys in
model/loading/gguf_config.py, HF `config.json` in model/loading/hf_config.py.

One frozen dataclass per concern: `ModelConfig` holds what every decoder has; `LatentAttentionConfig`
(MLA), `MoEConfig` (routed experts) and `RopeScaling` are present only where the checkpoint uses them.
`ModelConfig.layer_specs()` turns the config into one `LayerSpec` per layer, so per-layer differences
(DeepSeek's first dense layers) are data that `model/layers/transformer.py` reads, not branches in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "mixtral", "deepseek_v3")
ROPE_SCALING_KINDS = ("llama3", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    """Frequency scaling for contexts longer than pre-training; None on the config means plain RoPE.

    kind "llama3": low frequencies divided by `factor`, blended between two wavelength bounds.
    kind "yarn" (DeepSeek-V3/R1): NTK-by-parts interpolation between `beta_fast` and `beta_slow`
    rotations, plus an attention temperature from `mscale` / `mscale_all_dim` (see model/layers/rope.py).
    """

    factor: float
    original_max_position_embeddings: int
    kind: str = "llama3"
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None  # overrides the factor derived from mscale / mscale_all_dim
    truncate: bool = True  # round the correction range to whole dimensions (HF's default)

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ValueError(f"unknown RoPE scaling {self.kind!r}; supported: {', '.join(ROPE_SCALING_KINDS)}")


@dataclass(frozen=True)
class LatentAttentionConfig:
    """Multi-head Latent Attention (DeepSeek-V2/V3): queries and keys/values through low-rank latents.

    Each head's query and key are a no-RoPE part (`qk_nope_head_dim`) and a RoPE part (`qk_rope_head_dim`,
    one key shared by all heads); the cache holds only the normed kv latent and that shared rope key.
    """

    q_lora_rank: int | None  # None: queries come straight from x (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class MoEConfig:
    """Routed experts (Mixtral, DeepSeekMoE). Routing maths lives in model/layers/moe.py."""

    n_experts: int
    experts_per_token: int
    expert_ffn_dim: int
    n_shared_experts: int = 0  # DeepSeekMoE: always-on experts of expert_ffn_dim * n_shared_experts
    scoring: str = "softmax"  # "softmax" (Mixtral) or "sigmoid" (DeepSeek-V3, with a score-correction bias)
    n_group: int = 1  # group-limited routing: experts in n_group groups, tokens pick from topk_group of them
    topk_group: int = 1
    norm_topk_prob: bool = True  # renormalise the chosen experts' weights to sum to 1
    routed_scaling_factor: float = 1.0
    first_dense_layers: int = 0  # DeepSeek's first_k_dense_replace: these layers keep a dense MLP

    def __post_init__(self) -> None:
        if self.scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown expert scoring {self.scoring!r}; supported: softmax, sigmoid")
        if self.n_experts % self.n_group or not 1 <= self.topk_group <= self.n_group:
            raise ValueError(
                f"{self.n_experts} experts cannot form {self.n_group} groups of which {self.topk_group} are used"
            )
        if not 1 <= self.experts_per_token <= self.topk_group * self.n_experts // self.n_group:
            raise ValueError(
                f"cannot route to {self.experts_per_token} of {self.n_experts} experts in {self.topk_group} groups"
            )


@dataclass(frozen=True)
class LayerSpec:
    """What one decoder layer is made of: its attention ("gqa", "mla") and its MLP ("dense", "moe")."""

    attention: str
    mlp: str


@dataclass(frozen=True)
class ModelConfig:
    # architecture
    arch: str
    vocab_size: int
    dim: int
    n_layers: int
    ffn_dim: int  # the dense MLP's hidden size
    # attention
    n_heads: int
    n_kv_heads: int
    head_dim: int  # query/key head size (MLA: qk_nope_head_dim + qk_rope_head_dim)
    qkv_bias: bool = False
    mla: LatentAttentionConfig | None = None
    # experts
    moe: MoEConfig | None = None
    # positions
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rope_interleaved: bool = False  # the checkpoint's rope rows are in (x0, y0, x1, y1...) pairs; loaders reorder them
    # norms and embeddings
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # special tokens (None where the checkpoint does not say)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.rope_dim % 2:
            raise ValueError(f"the rotary dimension must be even, got {self.rope_dim}")

    @property
    def rope_dim(self) -> int:
        """Dimensions of each query/key head that RoPE rotates (MLA rotates only its decoupled part)."""
        return self.mla.qk_rope_head_dim if self.mla is not None else self.head_dim

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        attention = "mla" if self.mla is not None else "gqa"
        dense = 0 if self.moe is None else self.moe.first_dense_layers
        return tuple(
            LayerSpec(attention, "moe" if self.moe is not None and i >= dense else "dense")
            for i in range(self.n_layers)
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict` (the weight cache stores configs this way)."""
        d = dict(d)
        for key, sub in (("rope_scaling", RopeScaling), ("mla", LatentAttentionConfig), ("moe", MoEConfig)):
            if d.get(key) is not None:
                d[key] = sub(**d[key])
        d["eos_token_ids"] = tuple(d.get("eos_token_ids") or ())
        return cls(**d)
