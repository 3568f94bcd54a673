"""Rotary position embeddings (rotate-half layout, as in HF checkpoints), with Llama-3 frequency scaling."""

from __future__ import annotations

import math

import torch

from model.config import ModelConfig, RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Per-pair rotation frequencies [head_dim // 2]; Llama-3 scaling stretches the low frequencies."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv_freq
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding:
    """Precomputed cos/sin tables for every position up to the context length."""

    def __init__(self, config: ModelConfig) -> None:
        inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        positions = torch.arange(config.max_seq_len, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)  # [S, hd/2]
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # [S, hd]
        # rotate_half(x) * sin == roll(x, hd/2) * (sin with its first half negated): one op fewer per call.
        self.signed_sin = torch.cat([-angles.sin(), angles.sin()], dim=-1)  # [S, hd]

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin for positions [N] -> each [N, 1, hd], broadcastable over heads."""
        return self.cos[positions, None], self.signed_sin[positions, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [N, heads, hd] by the angles in cos / signed_sin [N, 1, hd] (pairs are (i, i + hd/2))."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), signed_sin)
