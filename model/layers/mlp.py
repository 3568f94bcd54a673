"""SwiGLU feed-forward (Llama, Qwen2, and every expert of Mixtral and DeepSeekMoE): down(silu(gate(x)) * up(x))."""

import torch
import torch.nn.functional as F
from torch import nn

from model.layers.linear import Linear


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        # gate (w1) and up (w3) are fused into one matrix at load time: one matmul instead of two.
        self.w13 = Linear(dim, 2 * hidden_dim)
        self.w2 = Linear(hidden_dim, dim)

    def checkpoint_sources(self) -> dict[str, tuple[str, ...]]:
        """Our fused parameters -> the checkpoint tensors concatenated (along rows) to make them."""
        return {"w13.weight": ("w1.weight", "w3.weight")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)
