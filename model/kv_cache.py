"""Paged KV cache: a pool of fixed-size blocks (storage) apart from per-sequence block tables (bookkeeping).

Every sequence owns a list of block indices and a length. Forking a sequence copies only its block
table and bumps reference counts, so K siblings share the prefix's K/V without recomputing or copying
it; a shared block is copied the first time one of its sharers writes into it (copy-on-write).
Each forward step appends tokens to a set of sequences through `append`, which returns a `StepLayout`:
where the new K/V go and which cached slots each sequence attends over. All layers share that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.config import ModelConfig


@dataclass(frozen=True)
class StepLayout:
    """Token placement for one forward step over a ragged batch.

    Tokens are packed: N = sum of new tokens over the B sequences, row-major by sequence.
    """

    positions: torch.Tensor  # [N] absolute position of each new token
    write_slots: torch.Tensor  # [N] flat cache slot receiving each new token's K/V
    row_of_token: torch.Tensor | None  # [B, T] bool: which padded (b, t) cells hold a token; None if none are padding
    read_slots: torch.Tensor  # [B, S] flat cache slots each sequence attends over (padding points at slot 0)
    mask: torch.Tensor | None  # [B, 1, T, S] True = may attend; None when every query sees all S keys
    last_token: torch.Tensor  # [B] index into the N packed tokens of each sequence's last new token
    batch_size: int
    max_new: int


class KVCache:
    def __init__(
        self,
        config: ModelConfig,
        *,
        block_size: int = 16,
        initial_blocks: int = 64,
        dtype: torch.dtype = torch.float32,
        max_seq_len: int | None = None,
    ) -> None:
        self.block_size = block_size
        self.max_seq_len = max_seq_len or config.max_seq_len
        self._shape = (config.n_layers, config.n_kv_heads, config.head_dim)
        self.dtype = dtype
        self.kv = torch.zeros(0)
        self._refs: list[int] = []
        self._free: list[int] = []
        self._grow(initial_blocks)
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}
        self._next_id = 0

    # ----- storage -------------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return len(self._refs)

    def _grow(self, n_new_blocks: int) -> None:
        n_layers, n_kv, hd = self._shape
        old = self.n_blocks
        slots = (old + n_new_blocks) * self.block_size
        # Keys and values side by side per slot ([L, slots, 2 * KV, hd]): one write and one gather per layer.
        kv = torch.zeros(n_layers, slots, 2 * n_kv, hd, dtype=self.dtype)
        if old:
            kv[:, : old * self.block_size] = self.kv
        self.kv = kv
        self._refs.extend([0] * n_new_blocks)
        # Pop from the end: lowest free index first keeps a fresh sequence's blocks contiguous.
        self._free = list(range(old + n_new_blocks - 1, old - 1, -1)) + self._free

    def _allocate(self) -> int:
        if not self._free:
            self._grow(self.n_blocks)
        block = self._free.pop()
        self._refs[block] = 1
        return block

    def _release(self, block: int) -> None:
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self._free.append(block)

    @property
    def blocks_in_use(self) -> int:
        return sum(1 for r in self._refs if r > 0)

    # ----- sequences -----------------------------------------------------------------------------

    def new_sequence(self) -> int:
        seq = self._next_id
        self._next_id += 1
        self._tables[seq] = []
        self._lengths[seq] = 0
        return seq

    def length(self, seq: int) -> int:
        return self._lengths[seq]

    def fork(self, seq: int, n: int) -> list[int]:
        """n new sequences whose cached prefix is `seq`'s, sharing its blocks (no K/V copied)."""
        children = []
        for _ in range(n):
            child = self.new_sequence()
            self._tables[child] = list(self._tables[seq])
            self._lengths[child] = self._lengths[seq]
            for block in self._tables[child]:
                self._refs[block] += 1
            children.append(child)
        return children

    def free(self, seq: int) -> None:
        for block in self._tables.pop(seq):
            self._release(block)
        del self._lengths[seq]

    def truncate(self, seq: int, length: int) -> None:
        """Forget every cached token of `seq` from `length` on (e.g. to roll back a rejected step)."""
        if not 0 <= length <= self._lengths[seq]:
            raise ValueError(f"cannot truncate sequence of length {self._lengths[seq]} to {length}")
        table = self._tables[seq]
        keep = -(-length // self.block_size)
        for block in table[keep:]:
            self._release(block)
        del table[keep:]
        self._lengths[seq] = length

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
            self._release(block)
            table[index] = copy
            block = copy
        return block

    def append(self, seqs: list[int], n_new: list[int]) -> StepLayout:
        """Reserve room for n_new[i] tokens after each sequence's cached ones and describe the step.

        Side effect: lengths grow by n_new; the caller must run the forward step that fills the slots.
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
        for seq, start, n in zip(seqs, starts, n_new):
            for index in range(start // bs, (start + n - 1) // bs + 1):
                self._writable_block(seq, index)
            self._lengths[seq] = start + n

        ends = [start + n for start, n in zip(starts, n_new)]
        max_len, max_new = max(ends), max(n_new)
        slot_rows = torch.zeros(len(seqs), max_len, dtype=torch.long)  # [B, S]
        for row, seq in enumerate(seqs):
            table = torch.tensor(self._tables[seq], dtype=torch.long)
            slots = (table[:, None] * bs + torch.arange(bs)).flatten()[: ends[row]]
            slot_rows[row, : ends[row]] = slots

        positions = torch.cat([torch.arange(s, e) for s, e in zip(starts, ends)])
        write_slots = torch.cat([slot_rows[row, s:e] for row, (s, e) in enumerate(zip(starts, ends))])
        last_token = torch.tensor(n_new).cumsum(0) - 1

        uniform = all(n == max_new for n in n_new)
        row_of_token = None if uniform else torch.arange(max_new)[None, :] < torch.tensor(n_new)[:, None]
        mask = None
        if not (max_new == 1 and all(e == max_len for e in ends)):
            # Query t of row b sits at position starts[b] + t and may see keys at positions <= its own.
            q_pos = torch.tensor(starts)[:, None] + torch.arange(max_new)[None, :]  # [B, T]
            k_pos = torch.arange(max_len)  # [S]
            mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (k_pos[None, None, :] < torch.tensor(ends)[:, None, None])
            mask = mask.unsqueeze(1)  # [B, 1, T, S]
        return StepLayout(
            positions=positions,
            write_slots=write_slots,
            row_of_token=row_of_token,
            read_slots=slot_rows,
            mask=mask,
            last_token=last_token,
            batch_size=len(seqs),
            max_new=max_new,
        )

    def write(self, layer: int, slots: torch.Tensor, kv: torch.Tensor) -> None:
        """Store the step's new keys and values, kv [N, 2 * KV, hd] (keys first)."""
        self.kv[layer].index_copy_(0, slots, kv)

    def read(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V for slots [B, S] -> each [B, KV, S, hd]."""
        B, S = slots.shape
        kv = self.kv[layer].index_select(0, slots.view(-1)).view(B, S, *self.kv.shape[2:]).transpose(1, 2)
        n_kv = kv.shape[1] // 2
        return kv[:, :n_kv], kv[:, n_kv:]
