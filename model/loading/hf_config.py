"""Hugging Face `config.json` -> ModelConfig: what HF's keys mean for Llama, Qwen2, Mixtral and DeepseekV3.

Beside the HF reader (model/loading/hf_checkpoint.py, which reads the files) so that model/config.py holds only
the dataclasses: each checkpoint format's own key names and conventions live with its reader.
"""

from __future__ import annotations

from typing import Any

from model.config import (
    ROPE_SCALING_KINDS,
    SUPPORTED_ARCHITECTURES,
    LatentAttentionConfig,
    ModelConfig,
    MoEConfig,
    RopeScaling,
)


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
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
        moe = MoEConfig(
            n_experts=cfg["num_local_experts"],
            experts_per_token=cfg["num_experts_per_tok"],
            expert_ffn_dim=cfg["intermediate_size"],
        )
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
    return ModelConfig(
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
        rope_scaling=_rope_scaling(cfg),
        rope_interleaved=model_type == "deepseek_v3" and bool(cfg.get("rope_interleave", True)),
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=eos_ids,
    )


def _rope_scaling(cfg: dict[str, Any]) -> RopeScaling | None:
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
