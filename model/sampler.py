"""Token sampling as a chain of small logit transforms, kept outside the model.

Each transform maps (logits [B, V], histories) -> logits [B, V]. A constraint such as a grammar mask is just
another transform: pass it as `logits_hook` and it runs first, at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

LogitsTransform = Callable[[torch.Tensor, Sequence[Sequence[int]]], torch.Tensor]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off; HF/CTRL semantics over prompt + generated tokens
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings
    stop_token_ids: tuple[int, ...] | None = None  # None = the tokenizer's end-of-sequence ids
    seed: int | None = None
    logits_hook: LogitsTransform | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept a single stop string and any sequences; store tuples so params stay hashable and immutable.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


class RepetitionPenalty:
    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        for row, history in enumerate(histories):
            if not history:
                continue
            ids = torch.tensor(sorted(set(history)), dtype=torch.long)
            seen = logits[row, ids]
            logits[row, ids] = torch.where(seen > 0, seen / self.penalty, seen * self.penalty)
        return logits


class Temperature:
    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP:
    """Nucleus sampling: keep the smallest set of tokens whose probability mass reaches p (always >= 1 token)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= self.p  # mass before this token already >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


class Sampler:
    """Applies the chain for `params` and picks one token per row."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        chain: list[LogitsTransform] = []
        if params.logits_hook is not None:
            chain.append(params.logits_hook)
        if params.repetition_penalty != 1.0:
            chain.append(RepetitionPenalty(params.repetition_penalty))
        if params.temperature > 0:
            chain.append(Temperature(params.temperature))
            if params.top_k:
                chain.append(TopK(params.top_k))
            if params.top_p < 1.0:
                chain.append(TopP(params.top_p))
        self.chain = chain
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """logits [B, V] (not modified) -> token ids [B]."""
        if self.chain:
            logits = logits.clone()  # transforms may work in place
        for transform in self.chain:
            logits = transform(logits, histories)
        if self.params.temperature == 0:
            return logits.argmax(dim=-1)
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
