"""The engine's checkpoint as a transformers model, for training: the same weights the engine runs, in the
module layout that `peft` wraps and saves adapters for (`base_model.model.model.layers.{i}.self_attn.q_proj`).

The weights come through `model.loading.checkpoint.load_checkpoint` (float32, our names, rotate-half rope rows, which is
transformers' layout), so a GGUF such as the default Q4_1 SmolLM2 trains on its own dequantized weights: the
base the adapter is trained against is the base it later runs beside.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.loading.checkpoint import Checkpoint, load_checkpoint
from model.loading.tensor_names import HF_NAMES


def hf_config(checkpoint: Checkpoint):
    """A transformers LlamaConfig / Qwen2Config equal to the checkpoint's. Raises ValueError for other families."""
    from transformers import LlamaConfig, Qwen2Config

    c = checkpoint.config
    if c.arch not in ("llama", "qwen2") or c.rope_scaling is not None:
        raise ValueError(
            f"training supports llama and qwen2 models without rope scaling, not {c.arch}"
            f"{' with rope scaling' if c.rope_scaling else ''}"
        )
    arguments = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.dim,
        intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_seq_len,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_ids) or None,
    )
    if c.arch == "qwen2":
        return Qwen2Config(**arguments)
    return LlamaConfig(**arguments, attention_bias=c.qkv_bias, mlp_bias=False)


def hf_model(source: str | Path, cache_dir: str | Path | None = None, dtype: torch.dtype = torch.bfloat16):
    """(transformers causal LM holding `source`'s weights in `dtype`, the checkpoint's Tokenizer)."""
    from transformers import AutoModelForCausalLM

    checkpoint = load_checkpoint(source, cache_dir=cache_dir)
    inverse = HF_NAMES.inverse()
    state = {inverse.map(name): tensor for name, tensor in checkpoint.tensors.items()}
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(hf_config(checkpoint))
    module.load_state_dict(state, strict=False, assign=True)
    if checkpoint.config.tie_embeddings:
        module.tie_weights()
    missing = [n for n, p in module.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{checkpoint.source}: no weights for {missing[0]} (and {len(missing) - 1} more)")
    module.model.rotary_emb = type(module.model.rotary_emb)(config=module.config)  # its tables were made on meta
    return module.to(dtype).eval(), checkpoint.tokenizer
