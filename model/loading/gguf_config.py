"""GGUF metadata -> ModelConfig: llama.cpp's key names and its conventions, undone into our config.

Beside the GGUF reader (model/loading/gguf.py, which reads the file and its tensors) so that model/config.py holds
only the dataclasses. What llama.cpp changes on conversion is read back here, in one place:
- `deepseek2` (DeepSeek-V2/V3/R1) is our `deepseek_v3`; newer conversions describe MLA as MQA over the latent
  (`key_length` = kv_lora_rank + rope dims) and put the per-head sizes under `*_mla`;
- it keeps only 0.1 * YaRN's `mscale_all_dim` (`rope.scaling.yarn_log_multiplier`);
- expert gating is a number (1 softmax, 2 sigmoid);
- Llama's q/k rows are interleaved for ggml's adjacent-pair rotation, and DeepSeek's stay interleaved as released;
- Llama-3's RoPE scaling is stored not as metadata but as a tensor of per-frequency divisors (`rope_freqs.weight`),
  which `rope_scaling_from_freqs` turns back into a RopeScaling.
"""

from __future__ import annotations

from typing import Any

import torch

from model.config import SUPPORTED_ARCHITECTURES, LatentAttentionConfig, ModelConfig, MoEConfig, RopeScaling
from model.layers.rope import inverse_frequencies

# The tensor in which llama.cpp's converter stores Llama-3 RoPE scaling (see rope_scaling_from_freqs).
ROPE_FREQS_TENSOR = "rope_freqs.weight"
# llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE values.
EXPERT_GATING = {1: "softmax", 2: "sigmoid"}
# GGUF architectures whose q/k rope rows are in (x0, y0, x1, y1...) pairs: llama.cpp's converter interleaves Llama's
# for ggml's adjacent-pair rotation, and leaves DeepSeek's rows as released (already interleaved).
INTERLEAVED_ROPE = ("llama", "deepseek2")


def config_from_gguf(meta: dict[str, Any], *, has_output_tensor: bool) -> ModelConfig:
    """Build from decoded GGUF key/values (`general.architecture`, `<arch>.block_count`, ...).

    GGUF `deepseek2` (DeepSeek-V2/V3/R1 as llama.cpp converts them) becomes a `deepseek_v3` config.
    """
    gguf_arch = meta.get("general.architecture")
    arch = {"deepseek2": "deepseek_v3"}.get(gguf_arch, gguf_arch)
    if arch not in SUPPORTED_ARCHITECTURES or arch == "mixtral":
        raise ValueError(f"unknown architecture {gguf_arch!r} in GGUF metadata; supported: llama, qwen2, deepseek2")

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
        gating = int(meta.get(f"{gguf_arch}.expert_gating_func", 2))
        moe = MoEConfig(
            n_experts=int(key("expert_count")),
            experts_per_token=int(key("expert_used_count")),
            expert_ffn_dim=int(key("expert_feed_forward_length")),
            n_shared_experts=int(meta.get(f"{gguf_arch}.expert_shared_count", 0)),
            scoring=EXPERT_GATING[gating],
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
    return ModelConfig(
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
        rope_interleaved=gguf_arch in INTERLEAVED_ROPE,
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings=not has_output_tensor,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
    )


def rope_scaling_from_freqs(divisors: torch.Tensor, head_dim: int, theta: float) -> RopeScaling | None:
    """Recover the RopeScaling whose llama3 divisors equal `divisors`; None if no standard one does.

    `factor` is the largest divisor; the others are searched among values Llama-3.x releases use.
    """
    divisors = divisors.double().reshape(-1)
    if divisors.numel() != head_dim // 2:
        return None
    factor = float(divisors.max())
    for original in (8192, 4096, 16384, 2048, 32768):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0)):
            cand = RopeScaling(
                kind="llama3",
                factor=factor,
                low_freq_factor=low,
                high_freq_factor=high,
                original_max_position_embeddings=original,
            )
            # llama.cpp stores base / scaled frequency per pair; model/layers/rope.py defines the scaled ones.
            candidate = inverse_frequencies(head_dim, theta, None) / inverse_frequencies(head_dim, theta, cand)
            if torch.allclose(candidate.double(), divisors, rtol=1e-4, atol=1e-5):
                return cand
    return None
