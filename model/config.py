"""Model configuration, read from checkpoint metadata (GGUF keys or HF config.json), never from file names.

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
            raise ValueError(f"{self.n_experts} experts cannot form {self.n_group} groups of which {self.topk_group} are used")
        if not 1 <= self.experts_per_token <= self.topk_group * self.n_experts // self.n_group:
            raise ValueError(f"cannot route to {self.experts_per_token} of {self.n_experts} experts in {self.topk_group} groups")


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
            raise ValueError(
                f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
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
            LayerSpec(attention, "moe" if self.moe is not None and i >= dense else "dense") for i in range(self.n_layers)
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

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a Hugging Face `config.json` dict (Llama, Qwen2, Mixtral, DeepseekV3 ForCausalLM)."""
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {model_type!r} in config.json; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        n_heads = cfg["num_attention_heads"]
        dim = cfg["hidden_size"]
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        rope = cfg.get("rope_parameters") or {}
        mla = moe = None
        n_kv_heads = cfg.get("num_key_value_heads") or n_heads
        head_dim = cfg.get("head_dim") or dim // n_heads
        if model_type == "mixtral":
            if cfg.get("sliding_window") and cfg["sliding_window"] < cfg.get("max_position_embeddings", 0):
                raise ValueError(f"sliding-window attention (sliding_window={cfg['sliding_window']}) is not supported")
            moe = MoEConfig(n_experts=cfg["num_local_experts"], experts_per_token=cfg["num_experts_per_tok"],
                            expert_ffn_dim=cfg["intermediate_size"])
        elif model_type == "deepseek_v3":
            mla = LatentAttentionConfig(
                q_lora_rank=cfg.get("q_lora_rank"),
                kv_lora_rank=cfg["kv_lora_rank"],
                qk_nope_head_dim=cfg["qk_nope_head_dim"],
                qk_rope_head_dim=cfg["qk_rope_head_dim"],
                v_head_dim=cfg["v_head_dim"],
            )
            n_kv_heads, head_dim = n_heads, mla.qk_head_dim  # MLA has no grouped K/V heads
            scoring = cfg.get("scoring_func", "sigmoid")
            moe = MoEConfig(
                n_experts=cfg["n_routed_experts"],
                experts_per_token=cfg["num_experts_per_tok"],
                expert_ffn_dim=cfg["moe_intermediate_size"],
                n_shared_experts=cfg.get("n_shared_experts") or 0,
                scoring=scoring,
                n_group=cfg.get("n_group") or 1,
                topk_group=cfg.get("topk_group") or 1,
                norm_topk_prob=bool(cfg.get("norm_topk_prob", True)),
                routed_scaling_factor=float(cfg.get("routed_scaling_factor", 1.0)),
                first_dense_layers=cfg.get("first_k_dense_replace") or 0,
            )
        return cls(
            arch=model_type,
            vocab_size=cfg["vocab_size"],
            dim=dim,
            n_layers=cfg["num_hidden_layers"],
            ffn_dim=cfg["intermediate_size"],
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            qkv_bias=model_type == "qwen2" or (model_type != "deepseek_v3" and bool(cfg.get("attention_bias", False))),
            mla=mla,
            moe=moe,
            max_seq_len=cfg.get("max_position_embeddings", 2048),
            rope_theta=float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0))),
            rope_scaling=_hf_rope_scaling(cfg),
            rope_interleaved=model_type == "deepseek_v3" and bool(cfg.get("rope_interleave", True)),
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], *, has_output_tensor: bool) -> ModelConfig:
        """Build from decoded GGUF key/values (`general.architecture`, `<arch>.block_count`, ...).

        GGUF `deepseek2` (DeepSeek-V2/V3/R1 as llama.cpp converts them) becomes a `deepseek_v3` config.
        """
        gguf_arch = meta.get("general.architecture")
        arch = {"deepseek2": "deepseek_v3"}.get(gguf_arch, gguf_arch)
        if arch not in SUPPORTED_ARCHITECTURES or arch == "mixtral":
            raise ValueError(
                f"unknown architecture {gguf_arch!r} in GGUF metadata; supported: llama, qwen2, deepseek2"
            )

        def key(name: str, default: Any = None) -> Any:
            value = meta.get(f"{gguf_arch}.{name}", default)
            if value is None:
                raise ValueError(f"GGUF metadata lacks required key {gguf_arch}.{name}")
            return value

        n_heads = int(key("attention.head_count"))
        dim = int(key("embedding_length"))
        vocab_size = meta.get(f"{gguf_arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ()))
        if not vocab_size:
            raise ValueError("GGUF metadata gives no vocabulary size")
        scaling = None
        scaling_type = meta.get(f"{gguf_arch}.rope.scaling.type")
        if scaling_type == "llama3":
            scaling = RopeScaling(
                kind="llama3",
                factor=float(key("rope.scaling.factor")),
                low_freq_factor=float(key("rope.scaling.low_freq_factor", 1.0)),
                high_freq_factor=float(key("rope.scaling.high_freq_factor", 4.0)),
                original_max_position_embeddings=int(key("rope.scaling.original_context_length")),
            )
        elif scaling_type == "yarn":
            # llama.cpp keeps only 0.1 * mscale_all_dim; DeepSeek's releases all have mscale == mscale_all_dim.
            mscale = float(key("rope.scaling.yarn_log_multiplier", 0.0)) / 0.1
            scaling = RopeScaling(
                kind="yarn",
                factor=float(key("rope.scaling.factor")),
                original_max_position_embeddings=int(key("rope.scaling.original_context_length")),
                mscale=mscale or None,
                mscale_all_dim=mscale or None,
            )
        mla = moe = None
        n_kv_heads = int(key("attention.head_count_kv", n_heads))
        head_dim = int(meta.get(f"{gguf_arch}.attention.key_length") or dim // n_heads)
        if gguf_arch == "deepseek2":
            rope_dim = int(key("rope.dimension_count"))
            # Newer conversions describe MLA as MQA over the latent (key_length = kv_lora_rank + rope) and put
            # the per-head sizes under *_mla; older ones store the per-head sizes directly.
            qk_head_dim = int(meta.get(f"{gguf_arch}.attention.key_length_mla") or key("attention.key_length"))
            v_head_dim = int(meta.get(f"{gguf_arch}.attention.value_length_mla") or key("attention.value_length"))
            q_lora = meta.get(f"{gguf_arch}.attention.q_lora_rank")
            mla = LatentAttentionConfig(
                q_lora_rank=int(q_lora) if q_lora else None,
                kv_lora_rank=int(key("attention.kv_lora_rank")),
                qk_nope_head_dim=qk_head_dim - rope_dim,
                qk_rope_head_dim=rope_dim,
                v_head_dim=v_head_dim,
            )
            n_kv_heads, head_dim = n_heads, qk_head_dim
            gating = int(meta.get(f"{gguf_arch}.expert_gating_func", 2))  # llama.cpp: 1 softmax, 2 sigmoid
            moe = MoEConfig(
                n_experts=int(key("expert_count")),
                experts_per_token=int(key("expert_used_count")),
                expert_ffn_dim=int(key("expert_feed_forward_length")),
                n_shared_experts=int(meta.get(f"{gguf_arch}.expert_shared_count", 0)),
                scoring={1: "softmax", 2: "sigmoid"}[gating],
                n_group=int(meta.get(f"{gguf_arch}.expert_group_count") or 1),
                topk_group=int(meta.get(f"{gguf_arch}.expert_group_used_count") or 1),
                norm_topk_prob=bool(meta.get(f"{gguf_arch}.expert_weights_norm", True)),
                routed_scaling_factor=float(meta.get(f"{gguf_arch}.expert_weights_scale", 1.0)),
                first_dense_layers=int(meta.get(f"{gguf_arch}.leading_dense_block_count", 0)),
            )
        eos = meta.get("tokenizer.ggml.eos_token_id")
        eot = meta.get("tokenizer.ggml.eot_token_id")
        eos_ids = tuple(dict.fromkeys(int(t) for t in (eos, eot) if t is not None))
        bos = meta.get("tokenizer.ggml.bos_token_id")
        return cls(
            arch=arch,
            vocab_size=int(vocab_size),
            dim=dim,
            n_layers=int(key("block_count")),
            ffn_dim=int(key("feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            qkv_bias=arch == "qwen2",
            mla=mla,
            moe=moe,
            max_seq_len=int(key("context_length", 2048)),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            rope_interleaved=gguf_arch == "deepseek2",  # llama.cpp rotates adjacent pairs and leaves DeepSeek's rows as they are
            norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings=not has_output_tensor,
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=eos_ids,
        )


def _hf_rope_scaling(cfg: dict[str, Any]) -> RopeScaling | None:
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    kind = rs and rs.get("rope_type", rs.get("type"))
    if kind == "llama3":
        return RopeScaling(
            kind="llama3",
            factor=float(rs["factor"]),
            low_freq_factor=float(rs["low_freq_factor"]),
            high_freq_factor=float(rs["high_freq_factor"]),
            original_max_position_embeddings=int(rs["original_max_position_embeddings"]),
        )
    if kind == "yarn":
        original = int(rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"])
        factor = rs.get("factor") or cfg["max_position_embeddings"] / original
        return RopeScaling(
            kind="yarn",
            factor=float(factor),
            original_max_position_embeddings=original,
            beta_fast=float(rs.get("beta_fast") or 32),
            beta_slow=float(rs.get("beta_slow") or 1),
            mscale=rs.get("mscale"),
            mscale_all_dim=rs.get("mscale_all_dim"),
            attention_factor=rs.get("attention_factor"),
            truncate=bool(rs.get("truncate", True)),
        )
    if kind not in (None, "default"):
        raise ValueError(f"unsupported RoPE scaling {kind!r}; supported: {', '.join(ROPE_SCALING_KINDS)}")
    return None
