"""Linear layers and their weight formats: one `Linear` module, one kernel dispatch on the weight's dtype.

Formats:
- float32: `F.linear` (MKL / oneDNN sgemm).
- int8: weight-only, symmetric per-output-channel int8 weights with per-row scales, run on torch's
  CPU int8 weight-only kernel (`aten._weight_int8pack_mm`) with bf16 activations. It reads 4x fewer
  weight bytes than fp32; on SmolLM2-135M perplexity moves by +0.5% (tests/model/test_default_model.py).
  fbgemm's W8A8 dynamic kernel is ~10% faster at batch 1 but its per-tensor activation quantization
  costs +31% perplexity on this model (outliers in the MLP down-projection input), so it is not used.
- int4 (stored as packed uint8): asymmetric 4-bit groups of 32 with bf16 scale and zero, on torch's CPU
  int4 kernel (`aten._weight_int4pack_mm_for_cpu`). A GGUF Q4_1 weight (groups of 32, scale and min)
  maps onto it exactly up to bf16 rounding of the scales. GPTQ/AWQ checkpoints (model/loading/gptq.py) load onto
  the same kernel with groups of 32 to 256; an act-order GPTQ weight also keeps `input_order`, the order in which
  the layer reads its input columns (its weight's columns sorted by group), one gather per call (the native decode
  step, model/serving/compiled_step.py, does the same gather in C++).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layers.adapters import AdapterRouting, LowRankPair

INT4_GROUP_SIZE = 32  # = GGUF Q4_0/Q4_1 block size, so Q4_1 weights convert without loss (bar bf16 scales)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization: weight [N, K] -> (int8 [N, K], scales fp32 [N])."""
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales.float()


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales[:, None]


def quantize_int4(weight: torch.Tensor, group_size: int = INT4_GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric groupwise 4-bit: weight [N, K] -> (codes int32 [N, K] in 0..15, scales_and_zeros bf16 [K/g, N, 2]).

    w ~ (code - 8) * scale + zero, zero = min + 8 * scale: the convention of torch's int4 CPU kernel.
    """
    N, K = weight.shape
    groups = weight.float().view(N, K // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)  # [N, K/g]
    scales = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32).view(N, K)
    zeros = low + 8 * scales
    scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return codes, scales_and_zeros


def dequantize_int4(codes: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    N, K = codes.shape
    group_size = K // scales_and_zeros.shape[0]
    sz = scales_and_zeros.float().transpose(0, 1)  # [N, K/g, 2]
    groups = (codes.view(N, -1, group_size).float() - 8) * sz[..., :1] + sz[..., 1:]
    return groups.view(N, K)


def int4_supported(out_features: int, in_features: int) -> bool:
    return in_features % INT4_GROUP_SIZE == 0 and out_features % 16 == 0  # torch packs rows in sixteens


QUANT_MODES = ("int8", "int4")


def pack_weight(weight: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 weight [N, K] -> (the stored weight, bf16 scales) that `Linear` runs: "int8", or "int4" (int8 where
    the shape does not fit int4 packing)."""
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantization {mode!r}")
    weight = weight.float()
    if mode == "int4" and int4_supported(*weight.shape):
        codes, scales = quantize_int4(weight)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)  # uint8 [N, K/2]
    else:
        packed, scales = quantize_int8(weight)
    return packed, scales.to(torch.bfloat16)


class Linear(nn.Module):
    """y = x W^T + b with W stored as float32, int8 or packed int4 (+ scales); `quantize_(mode)` converts in place."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_buffer("scales", None)
        self.register_buffer("input_order", None)  # int64 [K] or None: see the module docstring
        # An unmerged low-rank delta (model/loading/lora.py): y += (x down^T) up^T; not part of the weight cache's state.
        self.lora_down: torch.Tensor | None = None  # [r, K]
        self.lora_up: torch.Tensor | None = None  # [N, r], LoRA's alpha / r folded in
        # Per-request adapters (model/layers/adapters.py): slot -> pair, applied to the rows `routing.rows` names.
        self.request_pairs: dict[int, LowRankPair] = {}
        self.routing: AdapterRouting | None = None

    def _checked_pair(self, down: torch.Tensor, up: torch.Tensor) -> LowRankPair:
        if down.shape[1] != self.in_features or up.shape != (self.out_features, down.shape[0]):
            raise ValueError(
                f"low-rank pair {list(down.shape)} x {list(up.shape)} does not fit a "
                f"{self.out_features}x{self.in_features} linear"
            )
        return down.float().contiguous(), up.float().contiguous()

    def set_low_rank(self, down: torch.Tensor, up: torch.Tensor) -> None:
        """Run beside the weight, whatever its format, for every row: y = x W^T + (x down^T) up^T."""
        self.lora_down, self.lora_up = self._checked_pair(down, up)

    def add_request_pair(self, routing: AdapterRouting, slot: int, down: torch.Tensor, up: torch.Tensor) -> None:
        """Run beside the weight for the rows of requests using adapter `slot` only (model/layers/adapters.py)."""
        self.request_pairs[slot] = self._checked_pair(down, up)
        self.routing = routing

    def merge_(self, delta: torch.Tensor) -> None:
        """W += delta, for float32 weights (exact); a quantized weight takes a delta unmerged (`set_low_rank`)."""
        if self.weight.dtype != torch.float32:
            raise ValueError("only fp32 weights can take a merged delta")
        self.weight = nn.Parameter(self.weight.data + delta, requires_grad=False)

    def quantize_(self, mode: str) -> None:
        """Convert fp32 weights in place: "int8", or "int4" (int8 where the shape does not fit int4 packing)."""
        if self.weight.dtype != torch.float32:
            raise ValueError("only fp32 weights can be quantized")
        packed, scales = pack_weight(self.weight.data, mode)
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.scales = scales

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Adopt the stored format (quantized entries carry scales) before the shape/dtype copy happens.
        weight, scales = state_dict.get(prefix + "weight"), state_dict.get(prefix + "scales")
        if weight is not None and scales is not None:
            self.weight = nn.Parameter(torch.empty_like(weight), requires_grad=False)
            self.scales = torch.empty_like(scales)
        if prefix + "input_order" in state_dict:
            self.input_order = torch.empty_like(state_dict[prefix + "input_order"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.scales is not None and (self.weight.data_ptr() % 64 or self.scales.data_ptr() % 64):
            # torch's int8/int4 CPU kernels use aligned vector loads and crash on a misaligned operand,
            # which a tensor memory-mapped from a cache entry can be; a clone is 64-byte aligned.
            self.weight = nn.Parameter(self.weight.data.clone(), requires_grad=False)
            self.scales = self.scales.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias  # one nn.Module attribute lookup each: this runs ~120x per token
        routing = self.routing
        rows = None if routing is None else routing.rows
        if weight.dtype == torch.float32:
            y = F.linear(x, weight, bias)
            return y if rows is None else rows.add_delta(x, y, self.request_pairs)
        # The engine's activations are already 2-D ([tokens, features]); only other callers pay for reshapes.
        x2d = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # [M, K]
        xq = x2d if self.input_order is None else x2d.index_select(1, self.input_order)
        y = self._quantized_matmul(xq.to(torch.bfloat16)).float()
        if self.lora_down is not None:
            y = y + (x2d.float() @ self.lora_down.t()) @ self.lora_up.t()
        if rows is not None:
            y = rows.add_delta(x2d, y, self.request_pairs)
        y = y if x.dim() == 2 else y.view(*x.shape[:-1], self.out_features)
        return y if bias is None else y + bias

    def _quantized_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        """bf16 x [M, K] -> bf16 x W^T on torch's int8 or int4 CPU kernel."""
        weight, scales = self.weight, self.scales
        if weight.dtype == torch.int8:
            return torch.ops.aten._weight_int8pack_mm(x2d, weight, scales)
        # uint8: two int4 codes per byte
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2d, weight, self.in_features // scales.shape[0], scales)
