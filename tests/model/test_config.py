"""The config dataclasses: their checks, per-layer specs, the dict round trip of the weight cache, and YaRN's
scales on R1's own RoPE scaling."""

from __future__ import annotations

import math

import pytest

from model.config import LatentAttentionConfig, ModelConfig, MoEConfig, RopeScaling
from model.layers.rope import attention_factor, inverse_frequencies, softmax_scale, yarn_mscale

# DeepSeek-R1's rope_scaling, as its config.json gives it.
R1_YARN = RopeScaling(
    kind="yarn",
    factor=40,
    original_max_position_embeddings=4096,
    beta_fast=32,
    beta_slow=1,
    mscale=1.0,
    mscale_all_dim=1.0,
)


def r1_shaped(**changes) -> ModelConfig:
    """A DeepSeek-R1-shaped config built field by field (the HF reading of it is in tests/model/loading)."""
    moe = MoEConfig(
        n_experts=256,
        experts_per_token=8,
        expert_ffn_dim=2048,
        n_shared_experts=1,
        scoring="sigmoid",
        n_group=8,
        topk_group=4,
        routed_scaling_factor=2.5,
        first_dense_layers=3,
    )
    fields = {
        "arch": "deepseek_v3",
        "vocab_size": 129280,
        "dim": 7168,
        "n_layers": 61,
        "ffn_dim": 18432,
        "n_heads": 128,
        "n_kv_heads": 128,
        "head_dim": 192,
        "mla": LatentAttentionConfig(1536, 512, 128, 64, 128),
        "moe": moe,
        "rope_scaling": R1_YARN,
        "rope_interleaved": True,
        "eos_token_ids": (1,),
    }
    return ModelConfig(**{**fields, **changes})


def test_layer_specs_and_the_weight_cache_round_trip():
    config = r1_shaped()
    specs = config.layer_specs()
    assert [s.mlp for s in specs[:4]] == ["dense", "dense", "dense", "moe"] and len(specs) == 61
    assert all(s.attention == "mla" for s in specs) and config.rope_dim == 64
    assert ModelConfig.from_dict(config.to_dict()) == config
    dense = r1_shaped(mla=None, moe=None, head_dim=56, n_kv_heads=32, rope_scaling=None)
    assert {(s.attention, s.mlp) for s in dense.layer_specs()} == {("gqa", "dense")} and dense.rope_dim == 56


def test_inconsistent_configs_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'"):
        r1_shaped(arch="gpt2")
    with pytest.raises(ValueError, match="not a multiple"):
        r1_shaped(mla=None, n_kv_heads=48)
    with pytest.raises(ValueError, match="must be even"):
        r1_shaped(mla=None, head_dim=57)
    with pytest.raises(ValueError, match="groups"):
        MoEConfig(n_experts=256, experts_per_token=8, expert_ffn_dim=2048, n_group=7)
    with pytest.raises(ValueError, match="scoring"):
        MoEConfig(n_experts=8, experts_per_token=2, expert_ffn_dim=16, scoring="relu")
    with pytest.raises(ValueError, match="RoPE scaling"):
        RopeScaling(kind="dynamic", factor=2.0, original_max_position_embeddings=4096)


def test_yarn_softmax_scale_and_attention_factor():
    mscale = 0.1 * math.log(40) + 1
    assert yarn_mscale(40.0) == pytest.approx(mscale)
    assert attention_factor(R1_YARN) == pytest.approx(1.0)  # mscale == mscale_all_dim: the ratio is 1
    assert softmax_scale(192, R1_YARN) == pytest.approx(192**-0.5 * mscale**2)  # R1's softmax_scale
    assert softmax_scale(192, None) == pytest.approx(192**-0.5)
    freqs = inverse_frequencies(64, 10000.0, R1_YARN)
    plain = inverse_frequencies(64, 10000.0, None)
    # fast-rotating dims keep their frequency, slow ones are divided by the factor
    assert freqs[0] == plain[0] and freqs[-1] == pytest.approx(plain[-1] / 40)
