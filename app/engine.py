"""One place that turns Settings into a loaded Engine, so the CLI, the UI and the API load it the same way."""

from __future__ import annotations

from pathlib import Path

import torch

import model
from app.config import Settings
from model.engine import Engine
from model.moe import TASK_TYPES


def load_engine(settings: Settings) -> Engine:
    """The engine `settings` describe. Raises ValueError (ModelLoadError) for a missing or bad model or router bias."""
    engine = model.load(
        settings.model,
        quant=settings.quant,
        threads=settings.threads,
        cache_dir=settings.cache_dir,
        kv_cache_mb=settings.kv_cache_mb,
    )
    if settings.expert_capacity is not None:
        engine.set_expert_capacity(settings.expert_capacity)
    if settings.router_bias is not None:
        engine.set_task_router_bias(read_router_bias(settings.router_bias))
    return engine


def read_router_bias(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file with one tensor [MoE layers, experts] per task type ("math", "code", "chat").

    Raises ValueError naming the file for a missing or unreadable file or a tensor that is not a task type.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    try:
        biases = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise ValueError(f"cannot read router bias file {path}: {e}") from e
    unknown = sorted(set(biases) - set(TASK_TYPES))
    if unknown or not biases:
        raise ValueError(f"{path}: router bias tensors must be named {', '.join(TASK_TYPES)}; found {sorted(biases)}")
    return biases
