"""Per-request LoRA adapters (S-LoRA / Punica style): low-rank deltas beside one set of base weights, each applied
only to the token rows of the requests that asked for it, so requests with and without an adapter share a batch.

A model holds one `AdapterRouting`; every `Linear` that carries a per-request pair points at it. The scheduler
builds the step's `AdapterRows` (which rows use which adapter slot) from its requests, `Transformer.forward` puts
it on the routing for the duration of the forward, and each such Linear adds its deltas to those rows only:
y[rows] += (x[rows] A^T) B^T. Rows of requests without an adapter get none, so they compute what the base model
computes. The pairs are never merged into the weights (base requests need them as they are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

LowRankPair = tuple[torch.Tensor, torch.Tensor]  # (down [r, in], up [out, r]), alpha / r folded into up


@dataclass(frozen=True)
class AdapterRows:
    """The token rows of one step that each adapter slot applies to: (slot, row indices or None = every row)."""

    groups: tuple[tuple[int, torch.Tensor | None], ...]

    @classmethod
    def of(cls, slots: Sequence[int | None], lengths: Sequence[int]) -> AdapterRows | None:
        """From each sequence's adapter slot (None: the base model) and how many tokens it feeds this step;
        None when no sequence uses an adapter."""
        used = sorted({s for s in slots if s is not None})
        if not used:
            return None
        if len(used) == 1 and all(s is not None for s in slots):
            return cls(((used[0], None),))
        starts = [0]
        for n in lengths:
            starts.append(starts[-1] + n)
        groups = []
        for slot in used:
            rows = [torch.arange(starts[i], starts[i + 1]) for i, s in enumerate(slots) if s == slot]
            groups.append((slot, torch.cat(rows)))
        return cls(tuple(groups))

    def add_delta(self, x: torch.Tensor, y: torch.Tensor, pairs: dict[int, LowRankPair]) -> torch.Tensor:
        """y (x's output rows [M, out]) with each slot's low-rank delta added to its rows; x is [M, in]."""
        for slot, rows in self.groups:
            pair = pairs.get(slot)
            if pair is None:  # this adapter does not target this Linear
                continue
            down, up = pair
            if rows is None:
                y = y + (x.float() @ down.t()) @ up.t()
            else:
                y = y.index_add(0, rows, (x[rows].float() @ down.t()) @ up.t())
        return y


class AdapterRouting:
    """What a model's adapter-carrying Linears read during a forward: the names of its per-request adapters (a
    slot is an index into them) and the rows of the step now running (None outside a forward, or when no row of
    the step uses an adapter)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.rows: AdapterRows | None = None

    def slot(self, name: str) -> int:
        """The slot of adapter `name`. Raises ValueError naming the loaded ones."""
        try:
            return self.names.index(name)
        except ValueError:
            loaded = ", ".join(self.names) or "none"
            raise ValueError(f"unknown adapter {name!r}; loaded per-request adapters: {loaded}") from None
