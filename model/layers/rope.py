"""Rotary position embeddings in rotate-half layout, with Llama-3 and YaRN frequency scaling.

Every RoPE formula lives here: the frequencies, YaRN's attention temperature and its softmax-scale
correction, and the row permutation that turns checkpoints with interleaved rope pairs (DeepSeek,
llama.cpp's Llama) into rotate-half layout at load time, so one rotation kernel serves every model.
"""

from __future__ import annotations

import math

import torch

from model.config import ModelConfig, RopeScaling


def inverse_frequencies(rope_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Per-pair rotation frequencies [rope_dim // 2]; Llama-3 scaling stretches the low frequencies, YaRN blends."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.int64).float() / rope_dim))
    if scaling is None:
        return inv_freq
    if scaling.kind == "yarn":
        return _yarn_frequencies(rope_dim, theta, scaling)
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


def _yarn_frequencies(rope_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """YaRN (Peng et al., 2023): dimensions that rotate more than `beta_fast` times over the original context
    keep their frequency, those under `beta_slow` are interpolated by `factor`, a linear ramp in between."""

    def correction_dim(rotations: float) -> float:  # the dimension that rotates `rotations` times over the context
        return (
            rope_dim
            * math.log(scaling.original_max_position_embeddings / (rotations * 2 * math.pi))
            / (2 * math.log(theta))
        )

    low, high = correction_dim(scaling.beta_fast), correction_dim(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rope_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(rope_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, rope_dim, 2).float() / rope_dim)
    extrapolation = 1 - ramp  # 1 = keep the original frequency (written as HF does, for bit-equal tables)
    return 1.0 / (scaling.factor * pos_freqs) * (1 - extrapolation) + 1.0 / pos_freqs * extrapolation


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature, 0.1 * mscale * ln(factor) + 1 (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def attention_factor(scaling: RopeScaling | None) -> float:
    """What YaRN multiplies cos and sin by (so the rotated parts of q.k scale by its square); 1 otherwise."""
    if scaling is None or scaling.kind != "yarn":
        return 1.0
    if scaling.attention_factor is not None:
        return scaling.attention_factor
    if scaling.mscale and scaling.mscale_all_dim:
        return yarn_mscale(scaling.factor, scaling.mscale) / yarn_mscale(scaling.factor, scaling.mscale_all_dim)
    return yarn_mscale(scaling.factor)


def softmax_scale(qk_head_dim: int, scaling: RopeScaling | None) -> float:
    """The q.k scale: 1/sqrt(head dim), times mscale(factor, mscale_all_dim)^2 under DeepSeek's YaRN, which
    also sharpens the non-rotated dimensions."""
    scale = qk_head_dim**-0.5
    if scaling is not None and scaling.kind == "yarn" and scaling.mscale_all_dim:
        scale *= yarn_mscale(scaling.factor, scaling.mscale_all_dim) ** 2
    return scale


def deinterleave_rows(w: torch.Tensor, head_size: int, rope_dim: int) -> torch.Tensor:
    """Rows of `w` in heads of `head_size`, whose last `rope_dim` rows hold interleaved rope pairs
    [x0, y0, x1, y1, ...]; returns them in rotate-half order [x0, x1, ..., y0, y1, ...].

    Rotating pairs (x_i, y_i) is the same maths in either layout, so a checkpoint converted this way runs on
    `apply_rotary`. Works on weights [heads * head_size, K] and biases [heads * head_size].
    """
    heads = w.shape[0] // head_size
    rows = w.reshape(heads, head_size, *w.shape[1:])
    rope = rows[:, head_size - rope_dim :].reshape(heads, rope_dim // 2, 2, *w.shape[1:]).transpose(1, 2)
    out = rows.clone()
    out[:, head_size - rope_dim :] = rope.reshape(heads, rope_dim, *w.shape[1:])
    return out.reshape(w.shape)


class RotaryEmbedding:
    """Precomputed cos/sin tables for every position up to the context length, over the rope dimensions."""

    def __init__(self, config: ModelConfig) -> None:
        inv_freq = inverse_frequencies(config.rope_dim, config.rope_theta, config.rope_scaling)
        positions = torch.arange(config.max_seq_len, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)  # [S, rd/2]
        scale = attention_factor(config.rope_scaling)
        cos, sin = angles.cos() * scale, angles.sin() * scale
        self.cos = torch.cat([cos, cos], dim=-1)  # [S, rd]
        # rotate_half(x) * sin == roll(x, rd/2) * (sin with its first half negated): one op fewer per call.
        self.signed_sin = torch.cat([-sin, sin], dim=-1)  # [S, rd]

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin for positions [N] -> each [N, 1, rd], broadcastable over heads."""
        return self.cos[positions, None], self.signed_sin[positions, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [N, heads, rd] by the angles in cos / signed_sin [N, 1, rd] (pairs are (i, i + rd/2))."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), signed_sin)
