"""Tiny random checkpoints for parity tests: transformers configs of every family we run, random weights that
leave no term hidden, and a word-level tokenizer so `model.load` can read the directory like any other."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 211

TINY = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)

# DeepSeek-V3's shape in miniature: one dense layer then MoE layers, a query latent, YaRN with mscale,
# 16 routed experts in 4 groups (2 used), 2 of them per token, a shared expert, interleaved rope rows.
TINY_DEEPSEEK = dict(
    TINY,
    num_key_value_heads=4,
    moe_intermediate_size=32,
    n_routed_experts=16,
    n_shared_experts=1,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
    routed_scaling_factor=2.5,
    norm_topk_prob=True,
    q_lora_rank=48,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=24,
    rope_interleave=True,
    rope_parameters=dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=4.0,
        original_max_position_embeddings=64,
        beta_fast=32,
        beta_slow=1,
        mscale=1.0,
        mscale_all_dim=0.8,
    ),
)

# family -> (transformers model class, its config class, the config's arguments)
CONFIGS = {
    "llama": (LlamaForCausalLM, LlamaConfig, dict(TINY, tie_word_embeddings=False)),
    "llama-tied-llama3-rope": (
        LlamaForCausalLM,
        LlamaConfig,
        dict(
            TINY,
            tie_word_embeddings=True,
            rope_theta=50000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, dict(TINY, tie_word_embeddings=False)),
    # the seeds' router shape: softmax top-2 over 16 experts
    "mixtral": (MixtralForCausalLM, MixtralConfig, dict(TINY, num_local_experts=16, num_experts_per_tok=2)),
    "deepseek_v3": (DeepseekV3ForCausalLM, DeepseekV3Config, TINY_DEEPSEEK),
    # DeepSeek-V2-Lite-like corners: no query latent, plain RoPE in rotate-half rows, no groups, unnormalised
    # top-k weights, two shared experts
    "deepseek_v3-no-q-lora": (
        DeepseekV3ForCausalLM,
        DeepseekV3Config,
        dict(
            TINY_DEEPSEEK,
            q_lora_rank=None,
            rope_interleave=False,
            n_group=1,
            topk_group=1,
            norm_topk_prob=False,
            n_shared_experts=2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
    ),
}


def tiny_model(name: str, seed: int = 0, **overrides):
    """A transformers model of family `name` (see CONFIGS; `overrides` change its config) whose every weight, bias,
    norm and router score bias is random, so no term can hide."""
    model_cls, config_cls, arguments = CONFIGS[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**arguments, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.ndim > 1 else 0.5)
        for buffer_name, b in model.named_buffers():
            if buffer_name.endswith("e_score_correction_bias"):
                b.normal_(0, 0.5)
    return model


def save_word_tokenizer(directory: Path, vocab_size: int = VOCAB) -> None:
    """A word-level tokenizer: "<s>" (BOS) = 0, "</s>" (EOS) = 1, then "t2".."t{n-1}" = their number; saved the
    way transformers saves any."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "</s>": 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<s>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<s>"
    ).save_pretrained(directory)
