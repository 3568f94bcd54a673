"""Hugging Face checkpoint directory: config.json + (sharded) safetensors -> ModelConfig and our tensors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model.checkpoint import ModelLoadError, map_tensor_name, validate_tensors
from model.config import ModelConfig

# HF name -> our name; "{i}" is the layer index. The one place HF naming is spelled out.
# HF Llama/Qwen2 q/k rows are already in rotate-half order, which is our layout.
HF_TENSOR_NAMES: dict[str, str] = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attention.wq.weight",
    "model.layers.{i}.self_attn.q_proj.bias": "layers.{i}.attention.wq.bias",
    "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attention.wk.weight",
    "model.layers.{i}.self_attn.k_proj.bias": "layers.{i}.attention.wk.bias",
    "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attention.wv.weight",
    "model.layers.{i}.self_attn.v_proj.bias": "layers.{i}.attention.wv.bias",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2.weight",
}

# Buffers some exports include that carry no weights.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_hf_config(directory: Path) -> ModelConfig:
    """config.json (plus generation_config.json's eos ids, which R1 distills set) -> ModelConfig."""
    cfg_path = directory / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(f"{cfg_path} not found") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{cfg_path}: unreadable config: {e}") from e
    try:
        config = ModelConfig.from_hf_config(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{cfg_path}: {type(e).__name__}: {e}") from e
    gen_path = directory / "generation_config.json"
    if gen_path.is_file():
        try:
            eos = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            eos = None
        extra = eos if isinstance(eos, list) else ([] if eos is None else [eos])
        merged = tuple(dict.fromkeys([*config.eos_token_ids, *(int(e) for e in extra)]))
        config = dataclasses.replace(config, eos_token_ids=merged)
    return config


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint: one file, or the shards named by the index."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{index}: unreadable shard index: {e}") from e
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise ModelLoadError(f"{index} names shard {f.name}, which is missing")
        return files
    single = directory / SINGLE_FILE
    if single.is_file():
        return [single]
    raise ModelLoadError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found")


def load_hf_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and float32 tensors under our names; names, counts and shapes checked against the config."""
    directory = Path(directory)
    config = read_hf_config(directory)
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="pt") as f:
                for hf_name in f.keys():
                    if hf_name.endswith(_IGNORED_SUFFIXES):
                        continue
                    ours = map_tensor_name(hf_name, HF_TENSOR_NAMES)
                    if ours is None:
                        raise ModelLoadError(f"{path}: unexpected tensor {hf_name!r} (not in the HF name table)")
                    if ours in tensors:
                        raise ModelLoadError(f"{path}: tensor {hf_name!r} appears in more than one shard")
                    tensors[ours] = f.get_tensor(hf_name).to(torch.float32)
        except SafetensorError as e:
            raise ModelLoadError(f"{path}: corrupt or truncated safetensors file: {e}") from e
    # Tied checkpoints sometimes still store lm_head; drop it rather than fail, it equals the embedding.
    if config.tie_embeddings:
        tensors.pop("output.weight", None)
    validate_tensors(config, tensors, directory)
    return config, tensors
