"""HF config.json -> ModelConfig, on DeepSeek-R1's own config.json: MLA, DeepSeekMoE and YaRN read as data."""

from __future__ import annotations

import pytest

from model.config import ModelConfig
from model.layers.transformer import ATTENTION_CLASSES
from model.loading.hf_config import config_from_hf

# DeepSeek-R1's config.json (the keys that matter here), as published.
R1_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "topk_method": "noaux_tc",
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "moe_layer_freq": 1,
    "first_k_dense_replace": 3,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "num_nextn_predict_layers": 1,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
}


def test_r1_config_reads_as_mla_and_deepseek_moe_with_three_dense_layers():
    config = config_from_hf(R1_CONFIG)
    specs = config.layer_specs()
    assert [s.mlp for s in specs[:4]] == ["dense", "dense", "dense", "moe"] and len(specs) == 61
    assert all(s.attention == "mla" for s in specs)
    assert (config.mla.q_lora_rank, config.mla.kv_lora_rank, config.mla.qk_head_dim, config.mla.v_head_dim) == (
        1536,
        512,
        192,
        128,
    )
    moe = config.moe
    assert (moe.n_experts, moe.experts_per_token, moe.n_group, moe.topk_group, moe.n_shared_experts) == (
        256,
        8,
        8,
        4,
        1,
    )
    assert moe.scoring == "sigmoid" and moe.routed_scaling_factor == 2.5 and moe.norm_topk_prob
    assert config.rope_dim == 64 and config.rope_interleaved
    assert config.rope_scaling.kind == "yarn" and config.rope_scaling.factor == 40
    # the cache holds 512 + 64 floats per token and layer, against 128 heads x (192 + 128) for MHA
    assert ATTENTION_CLASSES["mla"].cache_row_shape(config) == (576,)
    assert ModelConfig.from_dict(config.to_dict()) == config  # how the weight cache stores it


def test_unknown_or_unsupported_configs_are_refused():
    with pytest.raises(ValueError, match="dynamic"):
        config_from_hf({**R1_CONFIG, "rope_scaling": {"type": "dynamic", "factor": 2.0}})
    with pytest.raises(ValueError, match="groups"):
        config_from_hf({**R1_CONFIG, "n_group": 7})
    with pytest.raises(ValueError, match="sliding-window"):
        config_from_hf(
            {
                "model_type": "mixtral",
                "vocab_size": 8,
                "hidden_size": 8,
                "intermediate_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "num_local_experts": 2,
                "num_experts_per_tok": 1,
                "sliding_window": 16,
                "max_position_embeddings": 64,
            }
        )
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'"):
        config_from_hf({**R1_CONFIG, "model_type": "gpt2"})
