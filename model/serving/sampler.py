"""Token sampling as a chain of small logit transforms, kept outside the model, one `Sampler` per request.

Each transform maps (logits [B, V], histories) -> logits [B, V]. A constraint such as a grammar mask is a
request's `logits_processor`: a stateful object called first, for that request's row only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

LogitsTransform = Callable[[torch.Tensor, Sequence[Sequence[int]]], torch.Tensor]


class LogitsProcessor(Protocol):
    """Called once per step for one request: its generated ids so far and its fp32 logits [V] -> logits [V].

    It may change the row in place. Disallowed tokens get -inf; a row with no finite logit left ends the
    request with an error. It is stateful, so give each request its own.
    """

    def __call__(self, generated_ids: list[int], logits: torch.Tensor) -> torch.Tensor: ...


class NoTokenAllowed(RuntimeError):
    """A logits processor masked out every token."""


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
    logprobs: int = 0  # > 0: report the chosen token's log-probability and this many top alternatives per step
    logits_processor: LogitsProcessor | None = field(default=None, compare=False)

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
        if not 0 <= self.logprobs <= 20:
            raise ValueError(f"logprobs must be in [0, 20], got {self.logprobs}")


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
    """One request's sampling: the chain for its params and its own random generator.

    Per request, so a seeded sample never depends on what else shares the batch.
    """

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        chain: list[LogitsTransform] = []
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

    @property
    def plain_greedy(self) -> bool:
        """True when the token is simply the argmax of the model's logits (the batch can compute it at once)."""
        return self.params.temperature == 0 and not self.chain and self.params.logits_processor is None

    def __call__(self, logits: torch.Tensor, history: Sequence[int], generated: Sequence[int]) -> int:
        """logits [V] (not modified) -> token id. history: prompt + generated ids (the penalty looks at both).

        Raises NoTokenAllowed when the logits processor leaves no token.
        """
        logits = logits.clone()
        if self.params.logits_processor is not None:
            logits = self.params.logits_processor(list(generated), logits)
            if not torch.isfinite(logits).any():
                raise NoTokenAllowed("the logits processor allowed no token")
        row = logits.unsqueeze(0)  # [1, V]
        for transform in self.chain:
            row = transform(row, [history])
        if self.params.temperature == 0:
            return int(row.argmax(dim=-1))
        return int(torch.multinomial(row.softmax(dim=-1), 1, generator=self.generator))
