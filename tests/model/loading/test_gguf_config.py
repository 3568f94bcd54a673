"""GGUF metadata -> ModelConfig: llama.cpp's key names and conventions read back (its YaRN multiplier, numbered
gating, *_mla head sizes, interleaved rope rows, Llama-3 scaling as a tensor of divisors). Files end to end are in
test_loading.py (Llama) and tests/model/test_deepseek.py (deepseek2)."""

from __future__ import annotations

import pytest

from model.config import RopeScaling
from model.layers.rope import inverse_frequencies
from model.loading.gguf_config import config_from_gguf, rope_scaling_from_freqs

LLAMA = {
    "general.architecture": "llama",
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.feed_forward_length": 96,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.context_length": 256,
    "llama.rope.freq_base": 500000.0,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "tokenizer.ggml.tokens": ["a"] * 211,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.eot_token_id": 3,
}
# DeepSeek-R1's shape as a newer llama.cpp conversion writes it: MLA as MQA over the latent, sizes under *_mla.
DEEPSEEK2 = {
    "general.architecture": "deepseek2",
    "deepseek2.block_count": 61,
    "deepseek2.embedding_length": 7168,
    "deepseek2.feed_forward_length": 18432,
    "deepseek2.vocab_size": 129280,
    "deepseek2.attention.head_count": 128,
    "deepseek2.attention.head_count_kv": 1,
    "deepseek2.attention.key_length": 576,
    "deepseek2.attention.value_length": 512,
    "deepseek2.attention.key_length_mla": 192,
    "deepseek2.attention.value_length_mla": 128,
    "deepseek2.attention.q_lora_rank": 1536,
    "deepseek2.attention.kv_lora_rank": 512,
    "deepseek2.rope.dimension_count": 64,
    "deepseek2.context_length": 163840,
    "deepseek2.rope.scaling.type": "yarn",
    "deepseek2.rope.scaling.factor": 40.0,
    "deepseek2.rope.scaling.original_context_length": 4096,
    "deepseek2.rope.scaling.yarn_log_multiplier": 0.1,
    "deepseek2.expert_count": 256,
    "deepseek2.expert_used_count": 8,
    "deepseek2.expert_feed_forward_length": 2048,
    "deepseek2.expert_shared_count": 1,
    "deepseek2.expert_gating_func": 2,
    "deepseek2.expert_group_count": 8,
    "deepseek2.expert_group_used_count": 4,
    "deepseek2.expert_weights_norm": True,
    "deepseek2.expert_weights_scale": 2.5,
    "deepseek2.leading_dense_block_count": 3,
}


def test_llama_metadata():
    config = config_from_gguf(LLAMA, has_output_tensor=False)
    assert (config.arch, config.vocab_size, config.dim, config.n_layers, config.head_dim) == ("llama", 211, 64, 2, 16)
    assert (config.n_heads, config.n_kv_heads, config.rope_theta, config.max_seq_len) == (4, 2, 500000.0, 256)
    assert config.rope_interleaved  # llama.cpp interleaves Llama's q/k rows for ggml's pair rotation
    assert config.tie_embeddings and not config.qkv_bias and config.rope_scaling is None
    assert (config.bos_token_id, config.eos_token_ids) == (1, (2, 3))
    assert not config_from_gguf(LLAMA, has_output_tensor=True).tie_embeddings
    qwen = {k.replace("llama.", "qwen2."): v for k, v in {**LLAMA, "general.architecture": "qwen2"}.items()}
    qwen2 = config_from_gguf(qwen, has_output_tensor=True)
    assert qwen2.arch == "qwen2" and qwen2.qkv_bias and not qwen2.rope_interleaved


def test_deepseek2_metadata_reads_as_r1():
    config = config_from_gguf(DEEPSEEK2, has_output_tensor=True)
    assert config.arch == "deepseek_v3" and config.rope_interleaved
    assert (config.n_kv_heads, config.head_dim) == (128, 192)  # not the MQA-over-latent view
    mla = config.mla
    assert (mla.q_lora_rank, mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim) == (
        1536,
        512,
        128,
        64,
        128,
    )
    moe = config.moe
    assert (moe.n_experts, moe.experts_per_token, moe.n_shared_experts, moe.n_group, moe.topk_group) == (
        256,
        8,
        1,
        8,
        4,
    )
    assert (moe.scoring, moe.routed_scaling_factor, moe.first_dense_layers) == ("sigmoid", 2.5, 3)
    scaling = config.rope_scaling  # llama.cpp keeps 0.1 * mscale_all_dim
    assert (scaling.kind, scaling.factor, scaling.original_max_position_embeddings) == ("yarn", 40.0, 4096)
    assert scaling.mscale == pytest.approx(1.0) and scaling.mscale_all_dim == pytest.approx(1.0)
    older = {k: v for k, v in DEEPSEEK2.items() if not k.endswith("_mla")}  # older conversions: per-head sizes
    older.update(
        {
            "deepseek2.attention.key_length": 192,
            "deepseek2.attention.value_length": 128,
            "deepseek2.expert_gating_func": 1,
        }
    )
    old = config_from_gguf(older, has_output_tensor=True)
    assert old.mla == mla and old.moe.scoring == "softmax"


def test_unsupported_or_incomplete_metadata_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'mixtral'"):
        config_from_gguf({**LLAMA, "general.architecture": "mixtral"}, has_output_tensor=True)
    with pytest.raises(ValueError, match="lacks required key llama.block_count"):
        config_from_gguf({k: v for k, v in LLAMA.items() if k != "llama.block_count"}, has_output_tensor=True)
    with pytest.raises(ValueError, match="no vocabulary size"):
        config_from_gguf({k: v for k, v in LLAMA.items() if k != "tokenizer.ggml.tokens"}, has_output_tensor=True)
    with pytest.raises(KeyError):
        config_from_gguf({**DEEPSEEK2, "deepseek2.expert_gating_func": 3}, has_output_tensor=True)


def test_llama3_divisors_give_back_their_rope_scaling():
    scaling = RopeScaling(
        kind="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )
    divisors = inverse_frequencies(64, 500000.0, None) / inverse_frequencies(64, 500000.0, scaling)
    assert rope_scaling_from_freqs(divisors, 64, 500000.0) == scaling
    assert rope_scaling_from_freqs(divisors[:-1], 64, 500000.0) is None  # not one divisor per rope pair
    assert rope_scaling_from_freqs(divisors * 1.5, 64, 500000.0) is None  # no standard llama3 scaling
