"""RMSNorm (Zhang & Sennrich, 2019), as used by Llama and Qwen2."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel instead of five elementwise ops: decode is dominated by per-op overhead.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
