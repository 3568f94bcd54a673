"""Draft tokens and their verification in one forward: prompt-lookup speculation and jump-forward under grammars.

A greedy request may feed, after its last sampled token, a few *draft* tokens guessed without the model:
- prompt lookup (Saxena's prompt-lookup decoding, llama.cpp's `lookup`): the tokens that followed the latest
  earlier occurrence of the sequence's last n-gram, in the prompt or the text so far (copying, quoting, editing);
- jump-forward (SGLang's compressed-FSM decoding): the tokens a grammar forces next (llguidance's fast-forward
  tokens: JSON keys, quotes, braces, a tool's name once chosen).

The step computes logits at every fed token and the scheduler keeps the longest prefix of the draft that greedy
decoding would have chosen itself, plus the model's own next token, then truncates the KV rows of the rest.

Why the output is the plain greedy output, bit for bit: the verify step is a *decode* step in which each fed
token is its own row, attending to its sequence's cache up to its own position (`token_rows`). The native step
and the eager model compute every row exactly as the decode step of that token alone would; a multi-token
prefill chunk would not (other kernels, other summation orders), and a near-tie would then flip a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from model.layers.kv_cache import KVCache, StepLayout
from model.layers.transformer import Transformer

if TYPE_CHECKING:
    from model.serving.compiled_step import CompiledDecode


@dataclass(frozen=True)
class DraftConfig:
    """When a greedy request drafts tokens ahead of the model (model/serving/scheduler.py)."""

    prompt_lookup: bool = True  # draft by matching the last n-gram in the prompt and the text so far
    jump_forward: bool = True  # draft the tokens a request's grammar forces next
    lookup_tokens: int = 8  # most tokens one prompt-lookup draft proposes
    lookup_ngram: int = 4  # the longest n-gram matched (then shorter ones, down to lookup_min_ngram)
    lookup_min_ngram: int = 3  # shorter matches are mostly chance on plain text, and a failed draft costs a wider step
    lookup_max_batch: int = 1  # prompt lookup only while at most this many requests run (it pays at low batch)
    forced_tokens: int = 32  # most forced tokens one jump-forward draft feeds

    def __post_init__(self) -> None:
        if self.lookup_tokens < 1 or self.forced_tokens < 1:
            raise ValueError("lookup_tokens and forced_tokens must be >= 1")
        if not 1 <= self.lookup_min_ngram <= self.lookup_ngram:
            raise ValueError(
                f"need 1 <= lookup_min_ngram <= lookup_ngram, got {self.lookup_min_ngram}, {self.lookup_ngram}"
            )


NO_DRAFTS = DraftConfig(prompt_lookup=False, jump_forward=False)

MAX_LOOKUP_PAUSE = 32  # most decode steps a request waits before drafting again after failed lookups


@dataclass
class LookupState:
    """One request's prompt-lookup pacing: a draft window that doubles while drafts are kept whole and shrinks to
    what was kept when one fails, and a pause (1, 2, 4, ... steps) after each draft of which nothing was kept, so
    plain text, where matches are chance, pays for few rejected rows."""

    window: int
    pause: int = 0  # decode steps left before the next lookup
    misses: int = 0  # drafts in a row of which nothing was kept

    def ready(self) -> bool:
        """Whether this step may draft; counts a paused step down."""
        if self.pause > 0:
            self.pause -= 1
            return False
        return True

    def update(self, drafted: int, kept: int, max_window: int) -> None:
        self.window = min(2 * self.window, max_window) if kept == drafted else kept + 1
        self.misses = self.misses + 1 if kept == 0 else 0
        self.pause = min(2 ** (self.misses - 1), MAX_LOOKUP_PAUSE) if self.misses else 0


def prompt_lookup(ids: Sequence[int], max_ngram: int, min_ngram: int, k: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the last n-gram of `ids` (longest n first).

    Empty when no n-gram of at least `min_ngram` tokens occurs earlier.
    """
    n_ids = len(ids)
    for n in range(min(max_ngram, n_ids - 1), min_ngram - 1, -1):
        tail = list(ids[n_ids - n :])
        last = tail[-1]
        # The latest match first: the text being copied is usually the nearest one.
        for end in range(n_ids - 2, n - 2, -1):  # `end`: index of the candidate's last token, before the tail's own
            if ids[end] == last and list(ids[end - n + 1 : end + 1]) == tail:
                return list(ids[end + 1 : end + 1 + k])
    return []


def token_rows(layout: StepLayout) -> StepLayout:
    """`layout` as a decode step: each new token its own row, reading its sequence's keys up to its own position.

    Rows write their keys before any row attends (both the native step and the eager layers do), so a row sees
    the draft tokens before it: the causal mask of a chunk, computed as a batch of single-token decodes.
    """
    seq_of_token = [b for b, n in enumerate(layout.n_new) for _ in range(n)]
    starts = tuple(int(p) for p in layout.positions.tolist())
    ends = tuple(p + 1 for p in starts)
    read_slots = layout.read_slots[seq_of_token][:, : max(ends)]
    if any(e != read_slots.shape[1] for e in ends):
        read_slots = read_slots.masked_fill(torch.arange(read_slots.shape[1]) >= torch.tensor(ends)[:, None], 0)
    n = len(starts)
    return StepLayout(
        seqs=tuple(layout.seqs[b] for b in seq_of_token),
        starts=starts,
        n_new=(1,) * n,
        positions=layout.positions,
        write_slots=layout.write_slots,
        row_of_token=None,
        read_slots=read_slots.contiguous(),
        ends=ends,
        last_token=torch.arange(n),
        batch_size=n,
        max_new=1,
    )


def verify_step(
    model: Transformer,
    cache: KVCache,
    seqs: Sequence[int],
    chunks: Sequence[Sequence[int]],
    compiled: CompiledDecode | None = None,
) -> torch.Tensor:
    """Feed chunks[i] to seqs[i] as one decode step of a row per token -> fp32 logits [N, V] at every token.

    Dense attention only (the caller does not draft under block-sparse attention or task router biases).
    The cache lengths advance only if the forward succeeds; on any exception the step is rolled back.
    """
    layout = cache.append(seqs, [len(c) for c in chunks])
    rows = token_rows(layout)
    tokens = torch.tensor([t for chunk in chunks for t in chunk], dtype=torch.long)
    try:
        with torch.inference_mode():
            if compiled is not None and compiled.usable(rows, False):
                logits = compiled(tokens, cache, rows)
            else:
                logits = model(tokens, cache, rows)
    except BaseException:
        cache.rollback(layout)
        raise
    cache.commit(layout)
    return logits
