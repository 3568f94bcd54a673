"""GPTQ (Frantar et al., 2022) and round-to-nearest on one linear weight: fp32 W [N, K] -> integer codes on a grid of
one scale and zero point per (row, group of input columns), the layout model/loading/gptq.py reads and writes.

GPTQ quantizes W's columns one at a time and spreads each column's rounding error over the columns not yet
quantized, weighted by the inverse Hessian of the layer's squared output error, H = 2 X^T X over calibration inputs X
[tokens, K]. As in the reference implementation: dead inputs (H_kk = 0) are zeroed, H is dampened by `damp` x its
mean diagonal, H^-1 is taken through a Cholesky factorisation and used as its upper Cholesky factor, and columns go
in blocks of 128 (errors inside a block applied column by column, to the rest once per block). Act-order
(`act_order`) quantizes columns by decreasing H_kk, which keeps the largest-input columns' errors compensable;
a column's group is then its rank in that order // group_size (`g_idx`), so groups are scattered in K.

The grid is GPTQ's: symmetric (`sym: true`, the default, what GPTQ kernels everywhere run) puts the zero point at
2^(bits-1) with scale max|w| / (2^(bits-1) - 1/2) of the group's row; asymmetric spans [min(w, 0), max(w, 0)] with a
zero point of its own, kept at 1 or more because the GPTQ file stores zero - 1 in `bits` bits. A group's parameters are taken from its columns as they stand when the
group begins (after the error feedback so far). Scales are rounded to fp16 before use, since the file stores them so:
the codes and the stored scales give back exactly the weight GPTQ measured its errors against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 128  # columns per error-feedback block (the reference implementation's)
DAMP = 0.01  # of the mean Hessian diagonal
METHODS = ("gptq", "rtn")


@dataclass(frozen=True)
class QuantSpec:
    """What a quantization run produces: `bits`-bit codes in groups of `group_size` input columns (-1: one group)."""

    bits: int = 4
    group_size: int = 128
    act_order: bool = False
    sym: bool = True
    damp: float = DAMP

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4, 8):
            raise ValueError(f"bits must be 2, 3, 4 or 8, not {self.bits}")
        if self.group_size != -1 and (self.group_size <= 0 or self.group_size % 32):
            raise ValueError(
                f"group size must be a positive multiple of 32 (or -1 for one group), not {self.group_size}"
            )
        if not 0 < self.damp < 1:
            raise ValueError(f"damp must be in (0, 1), not {self.damp}")


@dataclass
class Quantized:
    """One weight on its grid: W ~ (codes - zeros[g_idx]) * scales[g_idx], per row; `weight` is that product."""

    codes: torch.Tensor  # uint8 [N, K]
    scales: torch.Tensor  # fp16 [G, N]
    zeros: torch.Tensor  # int16 [G, N]
    g_idx: torch.Tensor  # int64 [K]
    weight: torch.Tensor  # fp32 [N, K]: the dequantized weight


def _grid(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of w [N, C]: (scale [N], zero [N]) of GPTQ's grid, the scale rounded to fp16."""
    maxq = 2**spec.bits - 1
    low, high = w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0)
    if spec.sym:
        high = torch.maximum(low.abs(), high)
        low = -high
    empty = high - low == 0  # an all-zero row: any scale will do
    low, high = torch.where(empty, -1.0, low), torch.where(empty, 1.0, high)
    scale = ((high - low) / maxq).half().float()
    scale = torch.where(scale == 0, torch.finfo(torch.float16).tiny, scale)  # an fp16 underflow
    if spec.sym:
        return scale, torch.full_like(scale, (maxq + 1) / 2)
    return scale, torch.round(-low / scale).clamp(1, maxq)


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Codes of w [N] (or [N, C]) on the grid."""
    if w.dim() == 2:
        scale, zero = scale[:, None], zero[:, None]
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def group_of_columns(K: int, spec: QuantSpec, order: torch.Tensor | None = None) -> torch.Tensor:
    """g_idx [K]: column k's group, its position in quantization `order` (None: 0..K-1) // group_size."""
    size = K if spec.group_size == -1 else spec.group_size
    rank = torch.arange(K) if order is None else torch.argsort(order)
    return rank // size


def _result(
    codes: torch.Tensor, scales: list[torch.Tensor], zeros: list[torch.Tensor], g_idx: torch.Tensor
) -> Quantized:
    scales_t, zeros_t = torch.stack(scales), torch.stack(zeros)  # [G, N]
    weight = (codes - zeros_t[g_idx].t()) * scales_t[g_idx].t()
    return Quantized(codes.to(torch.uint8), scales_t.half(), zeros_t.to(torch.int16), g_idx, weight)


def rtn(weight: torch.Tensor, spec: QuantSpec) -> Quantized:
    """Round-to-nearest on the same grid and groups (columns in order): GPTQ's baseline."""
    W = weight.float()
    K = W.shape[1]
    size = K if spec.group_size == -1 else spec.group_size
    codes = torch.empty_like(W)
    scales, zeros = [], []
    for start in range(0, K, size):
        scale, zero = _grid(W[:, start : start + size], spec)
        codes[:, start : start + size] = _round(W[:, start : start + size], scale, zero, 2**spec.bits - 1)
        scales.append(scale)
        zeros.append(zero)
    return _result(codes, scales, zeros, group_of_columns(K, spec))


def gptq(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec) -> Quantized:
    """GPTQ of weight [N, K] against hessian [K, K] (2 X^T X / tokens). Raises ValueError if H stays singular."""
    W = weight.float().clone()
    H = hessian.double().clone()  # the Cholesky steps in float64: H's condition number can be large
    K = W.shape[1]
    if H.shape != (K, K):
        raise ValueError(f"Hessian of shape {list(H.shape)} for a weight of {K} input columns")
    maxq = 2**spec.bits - 1
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    order = torch.argsort(torch.diag(H), descending=True, stable=True) if spec.act_order else None
    if order is not None:
        W, H = W[:, order], H[order][:, order]
    Hinv = _inverse_cholesky(H, spec.damp).float()

    size = K if spec.group_size == -1 else spec.group_size
    codes = torch.zeros_like(W)
    scales, zeros = [], []
    scale = zero = None
    for b1 in range(0, K, BLOCK):
        b2 = min(b1 + BLOCK, K)
        W1 = W[:, b1:b2].clone()
        errors = torch.zeros_like(W1)
        Hinv1 = Hinv[b1:b2, b1:b2]
        for i in range(b2 - b1):
            column = b1 + i
            if column % size == 0:  # a new group: its grid from its columns as they stand now
                span = torch.cat([W1[:, i:], W[:, b2:]], dim=1)[:, :size]
                scale, zero = _grid(span, spec)
                scales.append(scale)
                zeros.append(zero)
            w = W1[:, i]
            q = _round(w, scale, zero, maxq)
            codes[:, column] = q
            error = (w - (q - zero) * scale) / Hinv1[i, i]
            W1[:, i:] -= error[:, None] * Hinv1[i, i:][None, :]
            errors[:, i] = error
        W[:, b2:] -= errors @ Hinv[b1:b2, b2:]

    g_idx = group_of_columns(K, spec, order)
    if order is not None:
        codes = codes[:, torch.argsort(order)]  # back to the weight's own column order
    return _result(codes, scales, zeros, g_idx)


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, dampening more (x10, up to 3 times) while
    H is not positive definite."""
    K = H.shape[0]
    mean_diag = torch.mean(torch.diag(H))
    for attempt in range(4):
        damped = H + torch.eye(K, dtype=H.dtype) * damp * 10**attempt * mean_diag
        L, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return U
    raise ValueError("the Hessian is not positive definite even dampened 1000x (too few calibration tokens?)")
