"""SwiGLU feed-forward (Llama / Qwen2): down(silu(gate(x)) * up(x))."""

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.linear import Linear


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # gate (w1) and up (w3) are fused into one matrix at load time: one matmul instead of two.
        self.w13 = Linear(config.dim, 2 * config.ffn_dim)
        self.w2 = Linear(config.ffn_dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)
