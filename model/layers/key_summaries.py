"""Per-page key summaries kept next to the paged KV cache: the elementwise min and max of the keys in each page.

Sparse attention (model/layers/sparse_attention.py) bounds q·k over a block of keys without reading them: for every
dimension d, q_d * k_d <= max(q_d * min_d, q_d * max_d), so sum_d of that bounds every key in the block
(Quest, Tang et al. 2024). The summaries live per physical page of the pool, not per sequence, so pages shared
by forks and by the radix tree share their summaries, and a copied page (copy-on-write) gets its own.

Invariant: a page's summary is the min/max over the rows its owner has written into it, and nothing else.
`reset` recomputes a page from its valid rows before a step writes into it (that covers reuse after eviction,
copy-on-write, and rows left behind by a truncation or a rolled-back step); `update` folds in each new row.

What "the key part of a row" is belongs to the attention class: for grouped-query attention it is the
n_kv_heads key vectors of a row; for latent attention (MLA) it is the whole cached latent + rope key, one
group, the space the absorbed query lives in. `key_part(rows [N, *row_shape]) -> [N, G, dk]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class KeySummaries:
    def __init__(
        self,
        n_layers: int,
        key_shape: tuple[int, int],
        key_part: Callable[[torch.Tensor], torch.Tensor],
        page_size: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.key_shape = tuple(key_shape)  # (G key groups, dk)
        self.key_part = key_part
        self.page_size = page_size
        self.min = torch.empty(n_layers, 0, *self.key_shape, dtype=dtype)  # [L, pages, G, dk]
        self.max = torch.empty(n_layers, 0, *self.key_shape, dtype=dtype)

    @property
    def n_pages(self) -> int:
        return self.min.shape[1]

    def grow(self, n_pages: int) -> None:
        """Make room for pages [0, n_pages) (new pages summarise nothing: min = +inf, max = -inf)."""
        extra = n_pages - self.n_pages
        if extra <= 0:
            return
        L = self.min.shape[0]
        self.min = torch.cat([self.min, self.min.new_full((L, extra, *self.key_shape), torch.inf)], dim=1)
        self.max = torch.cat([self.max, self.max.new_full((L, extra, *self.key_shape), -torch.inf)], dim=1)

    def reset(self, kv: torch.Tensor, pages: Sequence[int], valid_rows: Sequence[int]) -> None:
        """Recompute `pages` (all layers) from their first valid_rows[i] rows of `kv` [L, slots, *row_shape]."""
        if not pages:
            return
        ps = self.page_size
        page_index = torch.tensor(list(pages), dtype=torch.long)
        self.min[:, page_index] = torch.inf
        self.max[:, page_index] = -torch.inf
        partial = [(p, n) for p, n in zip(pages, valid_rows) if n > 0]
        if not partial:
            return
        L, P = kv.shape[0], len(partial)
        page_index = torch.tensor([p for p, _ in partial], dtype=torch.long)
        slots = (page_index[:, None] * ps + torch.arange(ps)).view(-1)  # [P * ps]
        rows = kv.index_select(1, slots).view(L * P * ps, *kv.shape[2:])
        keys = self.key_part(rows).reshape(L, P, ps, *self.key_shape)  # [L, P, ps, G, dk]
        valid = (torch.arange(ps)[None, :] < torch.tensor([n for _, n in partial])[:, None])[None, :, :, None, None]
        self.min[:, page_index] = keys.masked_fill(~valid, torch.inf).amin(dim=2)
        self.max[:, page_index] = keys.masked_fill(~valid, -torch.inf).amax(dim=2)

    def update(self, layer: int, slots: torch.Tensor, rows: torch.Tensor) -> None:
        """Fold the rows [N, *row_shape] just written at `slots` [N] into their pages' summaries."""
        keys = self.key_part(rows)  # [N, G, dk]
        index = (slots // self.page_size)[:, None, None].expand_as(keys)
        self.min[layer].scatter_reduce_(0, index, keys, "amin")
        self.max[layer].scatter_reduce_(0, index, keys, "amax")

    def blocks(self, layer: int, pages: torch.Tensor, pages_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Summaries of key blocks made of consecutive pages: pages [B, n * pages_per_block] -> min, max [B, n, G, dk]."""
        B, n = pages.shape[0], pages.shape[1] // pages_per_block
        flat = pages.reshape(-1)
        shape = (B, n, pages_per_block, *self.key_shape)
        block_min = self.min[layer].index_select(0, flat).view(shape).amin(dim=2)
        block_max = self.max[layer].index_select(0, flat).view(shape).amax(dim=2)
        return block_min, block_max
