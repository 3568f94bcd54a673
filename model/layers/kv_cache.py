"""Paged KV cache: a pool of fixed-size blocks (storage) apart from per-sequence block tables (bookkeeping).

Every sequence owns a list of block indices and a length. A block may be shared: by forked sequences, and
by sequences that adopted a cached prefix from the radix tree (model/serving/radix_cache.py), which holds its own
reference on each block it indexes. A shared block is copied the first time one of its sharers writes
into it (copy-on-write). The pool never grows past `max_blocks`; running out raises `CacheFull`, so the
scheduler checks `blocks_needed` against `free_blocks` (evicting from the tree) before it steps.

What one cache row holds is the attention class's business: `row_shape` per token per layer, e.g.
`(2 * n_kv_heads, head_dim)` for grouped-query attention (keys then values). Sparse attention needs, next to
the rows, per-page min/max summaries of their keys (model/layers/key_summaries.py); a cache built with
`key_summaries` keeps them exact through every write, copy-on-write and reuse of a page.

A forward step appends tokens to a set of sequences through `append`, which returns a `StepLayout`:
where the new rows go and which cached slots each sequence attends over. All layers share it. Who may
attend to what (the mask) is the attention's policy, not the storage's: attention builds it from the
layout's positions and lengths, once per step (`StepLayout.derived`). Lengths
advance only at `commit(layout)`, after the forward has written every layer; `rollback(layout)` undoes the
step's allocations when the forward fails, so no sequence ever attends over unwritten rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from model.layers.key_summaries import KeySummaries


class CacheFull(RuntimeError):
    """The pool is at `max_blocks` and no block is free."""


@dataclass(frozen=True)
class StepLayout:
    """Token placement for one forward step over a ragged batch.

    Tokens are packed: N = sum of new tokens over the B sequences, row-major by sequence.
    """

    seqs: tuple[int, ...]  # the B sequences, in row order
    starts: tuple[int, ...]  # each sequence's cached length before the step
    n_new: tuple[int, ...]  # each sequence's new tokens in this step
    positions: torch.Tensor  # [N] absolute position of each new token
    write_slots: torch.Tensor  # [N] flat cache slot receiving each new token's row
    row_of_token: torch.Tensor | None  # [B, T] bool: which padded (b, t) cells hold a token; None if none are padding
    read_slots: torch.Tensor  # [B, S] flat cache slots each sequence attends over (padding points at slot 0)
    ends: tuple[int, ...]  # each sequence's length after the step: keys at or past it are padding
    last_token: torch.Tensor  # [B] index into the N packed tokens of each sequence's last new token
    batch_size: int
    max_new: int
    sparse: Any = None  # the step's block-sparse plan (model/layers/sparse_attention.py `SparsePlan`); None = dense
    _derived: dict[Callable[[StepLayout], Any], Any] = field(default_factory=dict, compare=False, repr=False)

    def derived(self, build: Callable[[StepLayout], Any]) -> Any:
        """`build(self)`, computed on first use and shared by every layer of the step (e.g. an attention mask)."""
        if build not in self._derived:
            self._derived[build] = build(self)
        return self._derived[build]


def block_bytes(n_layers: int, row_shape: Sequence[int], block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block of `block_size` tokens takes across all layers."""
    row_elements = 1
    for size in row_shape:
        row_elements *= size
    return n_layers * block_size * row_elements * dtype.itemsize


class KVCache:
    def __init__(
        self,
        n_layers: int,
        row_shape: tuple[int, ...],
        *,
        max_seq_len: int,
        max_blocks: int = 1 << 20,
        block_size: int = 16,
        initial_blocks: int = 64,
        dtype: torch.dtype = torch.float32,
        key_summaries: KeySummaries | None = None,
    ) -> None:
        if max_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got max_blocks={max_blocks}")
        if key_summaries is not None and key_summaries.page_size != block_size:
            raise ValueError(
                f"key summaries of {key_summaries.page_size}-token pages for a cache of {block_size}-token blocks"
            )
        self.n_layers = n_layers
        self.row_shape = tuple(row_shape)
        self.block_size = block_size
        self.max_seq_len = max_seq_len
        self.max_blocks = max_blocks
        self.dtype = dtype
        self.kv = torch.zeros(n_layers, 0, *self.row_shape, dtype=dtype)  # [L, slots, *row_shape]
        self.key_summaries = key_summaries  # per-page key min/max for sparse attention; None = not kept
        self._refs: list[int] = []
        self._free: list[int] = []
        self._grow(min(initial_blocks, max_blocks))
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}
        self._next_id = 0

    # ----- storage -------------------------------------------------------------------------------

    @property
    def bytes_per_block(self) -> int:
        return block_bytes(self.n_layers, self.row_shape, self.block_size, self.dtype)

    @property
    def n_blocks(self) -> int:
        """Blocks allocated so far (the storage grows on demand up to `max_blocks`)."""
        return len(self._refs)

    @property
    def free_blocks(self) -> int:
        """Blocks that can be handed out without evicting anything."""
        return len(self._free) + self.max_blocks - self.n_blocks

    @property
    def blocks_in_use(self) -> int:
        return sum(1 for r in self._refs if r > 0)

    def _grow(self, n_new_blocks: int) -> None:
        old = self.n_blocks
        slots = (old + n_new_blocks) * self.block_size
        kv = torch.zeros(self.n_layers, slots, *self.row_shape, dtype=self.dtype)
        if old:
            kv[:, : old * self.block_size] = self.kv
        self.kv = kv
        if self.key_summaries is not None:
            self.key_summaries.grow(old + n_new_blocks)
        self._refs.extend([0] * n_new_blocks)
        # Pop from the end: lowest free index first keeps a fresh sequence's blocks contiguous.
        self._free = list(range(old + n_new_blocks - 1, old - 1, -1)) + self._free

    def _allocate(self) -> int:
        if not self._free:
            if self.n_blocks >= self.max_blocks:
                raise CacheFull(f"the KV cache is full ({self.max_blocks} blocks of {self.block_size} tokens)")
            self._grow(min(max(self.n_blocks, 1), self.max_blocks - self.n_blocks))
        block = self._free.pop()
        self._refs[block] = 1
        return block

    def retain(self, blocks: Sequence[int]) -> None:
        """Take one more reference on each block (the radix tree does, for the blocks it indexes)."""
        for block in blocks:
            self._refs[block] += 1

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference from each block; a block nobody references is free again."""
        for block in blocks:
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)

    def refs(self, block: int) -> int:
        return self._refs[block]

    # ----- sequences -----------------------------------------------------------------------------

    def new_sequence(self, prefix_blocks: Sequence[int] = ()) -> int:
        """A sequence whose first len(prefix_blocks) * block_size tokens are those (full, cached) blocks."""
        seq = self._next_id
        self._next_id += 1
        self._tables[seq] = list(prefix_blocks)
        self._lengths[seq] = len(prefix_blocks) * self.block_size
        self.retain(prefix_blocks)
        return seq

    def length(self, seq: int) -> int:
        return self._lengths[seq]

    def blocks(self, seq: int) -> list[int]:
        return list(self._tables[seq])

    def fork(self, seq: int, n: int) -> list[int]:
        """n new sequences whose cached prefix is `seq`'s, sharing its blocks (no rows copied)."""
        children = []
        for _ in range(n):
            child = self.new_sequence()
            self._tables[child] = list(self._tables[seq])
            self._lengths[child] = self._lengths[seq]
            self.retain(self._tables[child])
            children.append(child)
        return children

    def free(self, seq: int) -> None:
        self.release(self._tables.pop(seq))
        del self._lengths[seq]

    def truncate(self, seq: int, length: int) -> None:
        """Forget every cached token of `seq` from `length` on (e.g. to roll back a rejected step)."""
        if not 0 <= length <= self._lengths[seq]:
            raise ValueError(f"cannot truncate sequence of length {self._lengths[seq]} to {length}")
        self._drop_blocks_from(seq, -(-length // self.block_size))
        self._lengths[seq] = length

    def _drop_blocks_from(self, seq: int, keep: int) -> None:
        table = self._tables[seq]
        self.release(table[keep:])
        del table[keep:]

    def blocks_needed(self, seqs: Sequence[int], n_new: Sequence[int]) -> int:
        """Blocks `append(seqs, n_new)` would allocate: new blocks plus copies of shared ones written into."""
        bs, needed = self.block_size, 0
        for seq, n in zip(seqs, n_new):
            table, start = self._tables[seq], self._lengths[seq]
            for index in range(start // bs, (start + n - 1) // bs + 1):
                if index >= len(table) or self._refs[table[index]] > 1:
                    needed += 1
        return needed

    def _writable_block(self, seq: int, index: int) -> int:
        """The block at table position `index`, allocated or un-shared (copy-on-write) as needed."""
        table = self._tables[seq]
        if index == len(table):
            table.append(self._allocate())
        block = table[index]
        if self._refs[block] > 1:
            copy = self._allocate()
            bs = self.block_size
            self.kv[:, copy * bs : (copy + 1) * bs] = self.kv[:, block * bs : (block + 1) * bs]
            self.release([block])
            table[index] = copy
            block = copy
        return block

    def append(self, seqs: Sequence[int], n_new: Sequence[int]) -> StepLayout:
        """Reserve room for n_new[i] tokens after each sequence's cached ones and describe the step.

        Allocates (and un-shares) blocks; lengths stay as they are until `commit(layout)`. Raises
        ValueError for a malformed step and CacheFull when the pool runs out (after undoing its allocations).
        """
        if len(seqs) != len(n_new) or not seqs:
            raise ValueError("append needs one token count per sequence and at least one sequence")
        if len(set(seqs)) != len(seqs):
            raise ValueError("a sequence may appear only once per step")
        bs = self.block_size
        starts = [self._lengths[s] for s in seqs]
        for start, n in zip(starts, n_new):  # validate everything before changing anything
            if n < 1:
                raise ValueError("every sequence in a step needs at least one new token")
            if start + n > self.max_seq_len:
                raise ValueError(
                    f"sequence would reach {start + n} tokens, past the context length of {self.max_seq_len}"
                )
        done = 0
        try:
            for seq, start, n in zip(seqs, starts, n_new):
                for index in range(start // bs, (start + n - 1) // bs + 1):
                    self._writable_block(seq, index)
                done += 1
        except CacheFull:
            for seq, start in zip(seqs[: done + 1], starts):
                self._drop_blocks_from(seq, -(-start // bs))
            raise
        if self.key_summaries is not None:
            self._reset_summaries(seqs, starts, n_new)

        # Built from Python lists with a handful of tensor ops: at decode this runs once per generated token.
        ends = [start + n for start, n in zip(starts, n_new)]
        max_len, max_new, B = max(ends), max(n_new), len(seqs)
        tables = [self._tables[seq] for seq in seqs]
        n_table = -(-max_len // bs)
        table = torch.tensor([t[:n_table] + [0] * (n_table - len(t[:n_table])) for t in tables], dtype=torch.long)
        slot_rows = (table[:, :, None] * bs + torch.arange(bs)).view(B, n_table * bs)[:, :max_len]  # [B, S]
        if any(e != max_len for e in ends):
            slot_rows = slot_rows.masked_fill(torch.arange(max_len) >= torch.tensor(ends)[:, None], 0)
        slot_rows = slot_rows.contiguous()  # readers flatten it

        token_positions = [p for start, end in zip(starts, ends) for p in range(start, end)]
        token_slots = [
            t[p // bs] * bs + p % bs for t, start, end in zip(tables, starts, ends) for p in range(start, end)
        ]
        positions = torch.tensor(token_positions, dtype=torch.long)
        write_slots = torch.tensor(token_slots, dtype=torch.long)
        last_token = torch.tensor(list(itertools.accumulate(n_new)), dtype=torch.long) - 1

        uniform = all(n == max_new for n in n_new)
        row_of_token = None if uniform else torch.arange(max_new)[None, :] < torch.tensor(list(n_new))[:, None]
        return StepLayout(
            seqs=tuple(seqs),
            starts=tuple(starts),
            n_new=tuple(n_new),
            positions=positions,
            write_slots=write_slots,
            row_of_token=row_of_token,
            read_slots=slot_rows,
            ends=tuple(ends),
            last_token=last_token,
            batch_size=B,
            max_new=max_new,
        )

    def _reset_summaries(self, seqs: Sequence[int], starts: Sequence[int], n_new: Sequence[int]) -> None:
        """Before a step writes: every page it writes into summarises only the rows its sequence holds there."""
        bs, pages, valid_rows = self.block_size, [], []
        for seq, start, n in zip(seqs, starts, n_new):
            table = self._tables[seq]
            for index in range(start // bs, (start + n - 1) // bs + 1):
                pages.append(table[index])
                valid_rows.append(max(0, start - index * bs))
        self.key_summaries.reset(self.kv, pages, valid_rows)

    def commit(self, layout: StepLayout) -> None:
        """The step's forward wrote every layer: its tokens are now cached."""
        for seq, start, n in zip(layout.seqs, layout.starts, layout.n_new):
            self._lengths[seq] = start + n

    def rollback(self, layout: StepLayout) -> None:
        """The step's forward failed: give back the blocks it allocated; lengths never moved."""
        for seq, start in zip(layout.seqs, layout.starts):
            if seq in self._tables:
                self._drop_blocks_from(seq, -(-start // self.block_size))

    def write(self, layer: int, slots: torch.Tensor, rows: torch.Tensor) -> None:
        """Store the step's new rows, [N, *row_shape]."""
        self.kv[layer].index_copy_(0, slots, rows)
        if self.key_summaries is not None:
            self.key_summaries.update(layer, slots, rows)

    def read(self, layer: int, slots: torch.Tensor) -> torch.Tensor:
        """Rows for slots [B, S] -> [B, S, *row_shape]."""
        B, S = slots.shape
        return self.kv[layer].index_select(0, slots.view(-1)).view(B, S, *self.row_shape)
