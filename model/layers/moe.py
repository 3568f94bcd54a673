"""Mixture of experts: a router picks experts per token, tokens are grouped per expert and each expert runs
once on its group. DeepSeekMoE (sigmoid scores, score-correction bias, group-limited routing, shared experts)
and Mixtral (softmax top-2) are one `Router` with different `MoEConfig`s.

Options the seeds asked for, all off by default (routing then equals the reference exactly):
- task-type bias: one bias vector per task type (`TASK_TYPES`) added to the router logits of that task's
  tokens (`Transformer.set_task_router_bias`, `Engine.submit(task_type=...)`);
- expert capacity: at most `capacity` (token, expert) assignments per expert per step; an assignment past it
  goes to the token's next-best expert (its "backup") instead of being dropped;
- statistics: assignments per expert, re-routed and dropped counts, always counted (`ExpertLoad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.layers.mlp import SwiGLU

TASK_TYPES = ("math", "code", "chat")
DEFAULT_EXPERT_CAPACITY = 128  # assignments per expert per step, when capacity is switched on


@dataclass(frozen=True)
class ExpertLoad:
    """Router statistics of one MoE layer since load (or the last reset)."""

    layer: int
    tokens: tuple[int, ...]  # (token, expert) assignments each expert ran
    rerouted: int  # assignments that overflowed an expert's capacity and went to a backup expert
    dropped: int  # assignments that found no expert with room (only with capacity on)

    @property
    def utilization(self) -> float:
        """Share of the experts that ran at least one token."""
        return sum(1 for n in self.tokens if n) / len(self.tokens)

    @property
    def imbalance(self) -> float:
        """Busiest expert's load over the mean load (1.0 = perfectly balanced)."""
        total = sum(self.tokens)
        return max(self.tokens) * len(self.tokens) / total if total else 0.0


class Router(nn.Module):
    """Scores every expert for every token and picks `experts_per_token` of them, with their weights.

    The gate weight is a plain fp32 tensor, never quantized: routing decisions flip on small errors, and the
    gate is a negligible share of the weights.
    """

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        moe = config.moe
        self.layer = layer
        self.n_experts, self.top_k = moe.n_experts, moe.experts_per_token
        self.scoring, self.n_group, self.topk_group = moe.scoring, moe.n_group, moe.topk_group
        self.norm_topk_prob, self.routed_scaling_factor = moe.norm_topk_prob, moe.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(moe.n_experts, config.dim), requires_grad=False)
        # DeepSeek-V3's e_score_correction_bias: shifts which experts are chosen, never their weights.
        self.score_bias = (
            nn.Parameter(torch.empty(moe.n_experts), requires_grad=False) if moe.scoring == "sigmoid" else None
        )
        self.task_bias: torch.Tensor | None = None  # [len(TASK_TYPES) + 1, E]; the last row (no task) is zeros
        self.capacity: int | None = None
        self.reset_stats()

    def reset_stats(self) -> None:
        self.load = torch.zeros(self.n_experts, dtype=torch.long)
        self.rerouted = 0
        self.dropped = 0

    def stats(self) -> ExpertLoad:
        return ExpertLoad(self.layer, tuple(self.load.tolist()), self.rerouted, self.dropped)

    def forward(self, x: torch.Tensor, task_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> (weights [N, k] fp32, experts [N, k]); a dropped assignment has expert index E."""
        logits = F.linear(x.float(), self.weight)  # [N, E]
        if task_rows is not None and self.task_bias is not None:
            logits = logits + self.task_bias[task_rows]
        scores = logits.sigmoid() if self.scoring == "sigmoid" else logits.softmax(dim=-1)
        choice = scores if self.score_bias is None else scores + self.score_bias
        if self.topk_group < self.n_group:
            choice = self._limit_groups(choice)
        if self.capacity is None:
            experts = choice.topk(self.top_k, dim=-1).indices  # [N, k]
            weights = scores.gather(1, experts)
        else:
            experts = self._assign_with_capacity(choice)
            weights = scores.gather(1, experts.clamp(max=self.n_experts - 1)).masked_fill(
                experts == self.n_experts, 0.0
            )
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, experts

    def _limit_groups(self, choice: torch.Tensor) -> torch.Tensor:
        """Group-limited routing: keep the `topk_group` groups whose two best experts score highest; the
        experts of the other groups become unselectable (-inf)."""
        N = choice.shape[0]
        groups = choice.view(N, self.n_group, -1)  # [N, G, E/G]
        group_scores = groups.topk(min(2, groups.shape[-1]), dim=-1).values.sum(dim=-1)  # [N, G]
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(
            1, group_scores.topk(self.topk_group, dim=-1).indices, True
        )
        return groups.masked_fill(~keep[..., None], float("-inf")).view(N, -1)

    def _assign_with_capacity(self, choice: torch.Tensor) -> torch.Tensor:
        """Top-k experts per token, each expert taking at most `capacity` assignments this step.

        Rounds, each vectorized over all pending assignments: an expert accepts its pending assignments in
        order of routing score until full; the rest move to their token's next-best unused expert and try
        again in the next round, against the room left. A token whose candidates run out drops that slot.
        """
        N, E, k = choice.shape[0], self.n_experts, self.top_k
        order = choice.argsort(dim=-1, descending=True, stable=True)  # [N, E] each token's preference
        candidates = (choice > float("-inf")).sum(dim=-1)  # [N] experts a token may use
        experts = order[:, :k].clone()  # [N, k]
        next_rank = torch.full((N,), k, dtype=torch.long)
        room = torch.full((E,), self.capacity, dtype=torch.long)
        pending = torch.ones(N, k, dtype=torch.bool)
        while pending.any():
            token, slot = pending.nonzero(as_tuple=True)  # [P]
            expert = experts[token, slot]
            by_score = choice[token, expert].argsort(descending=True, stable=True)
            token, slot, expert = token[by_score], slot[by_score], expert[by_score]
            fits = _rank_within(expert, E) < room[expert]  # best scores first, as they are sorted
            room -= torch.bincount(expert[fits], minlength=E)
            pending[token[fits], slot[fits]] = False
            token, slot = token[~fits], slot[~fits]
            # the j-th overflowing slot of a token takes its (next_rank + j)-th preference, if it has one
            pick = next_rank[token] + _rank_within(token, N)
            next_rank.index_add_(0, token, torch.ones_like(token))
            exhausted = pick >= candidates[token]
            experts[token[~exhausted], slot[~exhausted]] = order[token[~exhausted], pick[~exhausted]]
            experts[token[exhausted], slot[exhausted]] = E
            pending[token[exhausted], slot[exhausted]] = False
        dropped = experts == E
        self.rerouted += int((experts != order[:, :k]).sum() - dropped.sum())
        self.dropped += int(dropped.sum())
        return experts


def _rank_within(keys: torch.Tensor, n_keys: int) -> torch.Tensor:
    """For each element, how many earlier elements share its key: [3, 1, 3, 3] -> [0, 0, 1, 2]."""
    grouped = keys.argsort(stable=True)
    counts = torch.bincount(keys, minlength=n_keys)
    rank = torch.empty_like(keys)
    rank[grouped] = torch.arange(len(keys)) - (counts.cumsum(0) - counts)[keys[grouped]]
    return rank


class MoE(nn.Module):
    """Routed experts (plus DeepSeek's shared experts, which every token runs)."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        moe = config.moe
        self.router = Router(config, layer)
        self.experts = nn.ModuleList(SwiGLU(config.dim, moe.expert_ffn_dim) for _ in range(moe.n_experts))
        self.shared = SwiGLU(config.dim, moe.expert_ffn_dim * moe.n_shared_experts) if moe.n_shared_experts else None

    def forward(self, x: torch.Tensor, task_rows: torch.Tensor | None = None) -> torch.Tensor:
        # N: tokens, k: experts per token, D: model dim, E: experts.
        weights, experts = self.router(x, task_rows)  # [N, k] each
        k = experts.shape[1]
        flat = experts.flatten()  # [N*k]
        by_expert = flat.argsort(stable=True)  # assignments grouped by expert, tokens in order within each
        counts = torch.bincount(flat, minlength=self.router.n_experts + 1)  # the extra bin counts dropped slots
        self.router.load += counts[:-1]
        token_of = by_expert // k
        weight_of = weights.flatten()[by_expert]
        out = torch.zeros_like(x)
        start = 0
        for expert, n in zip(self.experts, counts[:-1].tolist()):
            if n:  # idle experts cost nothing
                tokens = token_of[start : start + n]
                out.index_add_(0, tokens, expert(x[tokens]) * weight_of[start : start + n, None])
            start += n
        return out if self.shared is None else out + self.shared(x)
