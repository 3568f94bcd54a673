"""FP8 block-scaled weights, as DeepSeek-V3/R1 publish them: float8_e4m3fn values with one fp32 scale per
128x128 block (`<name>.weight_scale_inv`, the factor that multiplies the stored values back), announced by
config.json's `quantization_config` ({"quant_method": "fp8", "weight_block_size": [128, 128], ...}).

The loader dequantizes one weight at a time to fp32 (then repacks it to int8/int4 when asked), so the
whole model never sits in memory in fp32.
"""

from __future__ import annotations

from typing import Any

import torch

SCALE_SUFFIX = "_scale_inv"  # "<name>.weight" is scaled by "<name>.weight_scale_inv"
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def block_size(quantization_config: dict[str, Any] | None) -> tuple[int, int] | None:
    """The (rows, cols) scale block of an fp8 `quantization_config`; None for an unquantized checkpoint.

    Raises ValueError for a quantization this loader cannot read.
    """
    if not quantization_config:
        return None
    method = quantization_config.get("quant_method")
    if method != "fp8":
        raise ValueError(f"unsupported quantization_config quant_method {method!r} (supported: fp8)")
    fmt = quantization_config.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise ValueError(f"unsupported fp8 format {fmt!r} (supported: e4m3)")
    rows, cols = quantization_config.get("weight_block_size") or (128, 128)
    return int(rows), int(cols)


def dequantize_blocks(weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """float8 weight [N, K] and fp32 scales [ceil(N/rows), ceil(K/cols)] -> fp32 [N, K]; edge blocks may be partial."""
    N, K = weight.shape
    rows, cols = block
    if scale_inv.shape != (-(-N // rows), -(-K // cols)):
        raise ValueError(
            f"fp8 scales of shape {list(scale_inv.shape)} do not tile a [{N}, {K}] weight in {rows}x{cols} blocks"
        )
    scales = scale_inv.float().repeat_interleave(rows, dim=0)[:N].repeat_interleave(cols, dim=1)[:, :K]
    return weight.float() * scales


def quantize_blocks(weight: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 [N, K] -> (float8_e4m3fn [N, K], fp32 scale_inv per block): how such checkpoints are made, for tests
    and benchmarks that need one."""
    N, K = weight.shape
    rows, cols = block
    padded = weight.new_zeros(-(-N // rows) * rows, -(-K // cols) * cols)
    padded[:N, :K] = weight
    blocks = padded.view(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    scale_inv = (blocks.abs().amax(dim=(1, 3)) / E4M3_MAX).clamp(min=1e-12)  # [N/rows, K/cols]
    expanded = scale_inv.repeat_interleave(rows, dim=0)[:N].repeat_interleave(cols, dim=1)[:, :K]
    return (weight / expanded).to(torch.float8_e4m3fn), scale_inv.float()
