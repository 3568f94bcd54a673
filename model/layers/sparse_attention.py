"""Block-sparse attention over the paged KV cache: local windows with a sink, and Quest-style top-k blocks.

A sequence's keys are cut into blocks of `block_size` (64) positions. New tokens are grouped by the block
they sit in (a decode token is a group of one; a 512-token prefill chunk is eight groups of 64), and each
group attends to a few key blocks only:
- its own block (causally), the `local_blocks` blocks before it, and block 0, the attention sink;
- top-k (modes "topk" and "auto"): the k other blocks with the largest estimated attention, per key head.
  A block's score is an upper bound of q·k from the per-page key min/max that the cache keeps
  (model/layers/key_summaries.py): sum_d max(q_d min_d, q_d max_d) = q⁺·max + q⁻·min, two matmuls. Per query head the
  bounds over the visible blocks go through a softmax (an estimate of the attention mass per block); a group
  takes the largest mass over its queries and sums it over the query heads sharing a key head.
Only the chosen blocks are gathered from the pool, so the work is proportional to the blocks chosen, not to
the context: no dense matmul with a mask.

Modes: "dense" (every key), "local", "topk", and "auto" (top-k, but a query whose context is at most
`auto_dense_up_to` tokens (512) sees every key; a step where all queries do runs the dense path).

The plan of a step (`plan_step`, once per forward, shared by all layers) fixes the query groups, the local
and sink blocks and the mask; a layer adds its top-k blocks (`select_slots`) from its own summaries.
Attention over another cache layout plugs in through the same three calls: `group_queries` (queries
[N, H, dk] in the key space of the cache rows), `select_slots` (the cache slots each group attends, per key
group), then its own gather and softmax with `plan.bias` added to the scores (`attend_gathered`), and
`ungroup_outputs`. `attend_gqa` is that for grouped-query attention; `attend_latent` for latent attention (MLA),
which passes its absorbed query [N, H, kv_rank + rope_dim], its softmax scale and one key group (the whole
cached latent + rope key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.layers.key_summaries import KeySummaries

ATTENTION_MODES = ("dense", "local", "topk", "auto")


@dataclass(frozen=True)
class AttentionConfig:
    mode: str = "dense"  # one of ATTENTION_MODES
    block_size: int = 64  # tokens per key block (a multiple of the cache's page size)
    local_blocks: int = 2  # blocks before its own that a query block always sees (besides the sink, block 0)
    topk: float = 0.05  # top-k blocks: a fraction (< 1) of the blocks in a query's context, or a count (>= 1)
    auto_dense_up_to: int = 512  # "auto": a query with at most this many tokens of context attends densely

    def __post_init__(self) -> None:
        if self.mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {self.mode!r}; choose one of {', '.join(ATTENTION_MODES)}")
        if self.block_size < 1 or self.local_blocks < 0 or self.topk <= 0 or self.auto_dense_up_to < 0:
            raise ValueError(f"invalid sparse attention settings: {self}")

    @property
    def uses_key_summaries(self) -> bool:
        return self.mode in ("topk", "auto")

    def describe(self) -> str:
        if self.mode == "dense":
            return "dense"
        parts = [f"{self.block_size}-token blocks", f"{self.local_blocks} local + sink"]
        if self.mode != "local":
            parts.append(f"top-{self.topk:.0%}" if self.topk < 1 else f"top-{int(self.topk)}")
        if self.mode == "auto":
            parts.append(f"dense up to {self.auto_dense_up_to} tokens")
        return f"{self.mode} ({', '.join(parts)})"


@dataclass(frozen=True)
class SparsePlan:
    """Which keys the query groups of one step attend, up to the per-layer top-k choice.

    Gq query groups of at most Tg tokens; each attends K = max_topk * bs + F * bs keys: the top-k part
    first (chosen per layer and key group), then F fixed blocks (local blocks, sink, own block).
    """

    block_size: int
    n_groups: int  # Gq
    group_size: int  # Tg
    token_index: torch.Tensor  # [N] where each packed new token sits in the flattened [Gq * Tg] groups
    query_padding: torch.Tensor | None  # [Gq, Tg] bool: a padding cell, not a token; None if there is none
    group_row: torch.Tensor  # [Gq] the layout row (sequence) of each group
    read_slots: torch.Tensor  # [B, S] the layout's cache slot of every position of every sequence
    fixed_slots: torch.Tensor  # [Gq, F * bs] cache slots of the local, sink and own blocks
    bias: torch.Tensor  # [Gq, 1, Tg, K] added to the scores: 0 = may attend, -inf = may not (built once per step)
    max_topk: int  # top-k blocks per group (0: no top-k part, no summaries needed)
    pages: torch.Tensor | None  # [B, NB * pages_per_block] cache pages of each sequence's blocks (top-k only)
    pages_per_block: int
    visible_bias: torch.Tensor | None  # [Gq, 1, 1, 1, NB] 0 for blocks before the group's own, else -inf
    candidate_bias: torch.Tensor | None  # [Gq, 1, NB] 0 for blocks top-k may pick (not sink, local, own), else -inf
    group_is_row: bool  # one group per sequence (a decode step): group_row is the identity


def plan_step(config: AttentionConfig, layout, page_size: int, has_summaries: bool) -> SparsePlan | None:
    """The sparse plan of a step described by `layout` (a kv_cache.StepLayout); None = attend densely."""
    if config.mode == "dense":
        return None
    bs, n_local = config.block_size, config.local_blocks
    if bs % page_size:
        raise ValueError(f"sparse blocks of {bs} tokens do not split into the cache's {page_size}-token pages")
    B = layout.batch_size
    n_new = layout.last_token.diff(prepend=torch.tensor([-1]))  # [B]
    starts = torch.tensor(layout.starts)
    ends = starts + n_new
    first_block, last_block = starts // bs, (ends - 1) // bs
    groups_per_row = last_block - first_block + 1
    Gq = int(groups_per_row.sum())
    group_row = torch.repeat_interleave(torch.arange(B), groups_per_row)  # [Gq]
    first_group = groups_per_row.cumsum(0) - groups_per_row  # [B]
    block = first_block[group_row] + torch.arange(Gq) - first_group[group_row]  # [Gq] each group's own block j
    lo = torch.maximum(starts[group_row], block * bs)  # first position of the group
    hi = torch.minimum(ends[group_row], (block + 1) * bs)  # one past its last
    context = hi  # tokens the group's last query sees
    if config.mode == "auto" and int(context.max()) <= config.auto_dense_up_to:
        return None
    Tg = int((hi - lo).max())

    # Packed tokens -> (group, index in group); padding queries copy their group's last position.
    token_row = torch.repeat_interleave(torch.arange(B), n_new)
    positions = layout.positions
    token_group = first_group[token_row] + positions // bs - first_block[token_row]
    token_index = token_group * Tg + positions - lo[token_group]
    query_pos = (hi - 1)[:, None].repeat(1, Tg)  # [Gq, Tg]
    query_pos.view(-1)[token_index] = positions
    query_padding = torch.ones(Gq * Tg, dtype=torch.bool)
    query_padding[token_index] = False
    query_padding = query_padding.view(Gq, Tg) if query_padding.any() else None

    # Fixed blocks: the local ones (j - n_local .. j - 1), the sink (0), the own block (j).
    local = block[:, None] - n_local + torch.arange(n_local)  # [Gq, n_local]
    fixed = torch.cat([local, torch.zeros(Gq, 1, dtype=torch.long), block[:, None]], dim=1)  # [Gq, F]
    fixed_ok = torch.cat([local >= 1, (block > 0)[:, None], torch.ones(Gq, 1, dtype=torch.bool)], dim=1)
    fixed_pos = (fixed.clamp(min=0)[:, :, None] * bs + torch.arange(bs)).flatten(1)  # [Gq, F * bs]
    fixed_ok = fixed_ok.repeat_interleave(bs, dim=1) & (fixed_pos < ends[group_row][:, None])
    S = layout.read_slots.shape[1]
    fixed_slots = layout.read_slots[group_row[:, None], fixed_pos.clamp(max=S - 1)]
    fixed_mask = fixed_ok[:, None, :] & (fixed_pos[:, None, :] <= query_pos[:, :, None])  # [Gq, Tg, F * bs]

    # Top-k: how many blocks each group picks among the candidates 1 .. j - n_local - 1.
    candidates = (block - n_local - 1).clamp(min=0)
    if config.mode == "local":
        topk_count = torch.zeros(Gq, dtype=torch.long)
    else:
        k = (
            torch.ceil(config.topk * (block + 1)).long()
            if config.topk < 1
            else torch.full((Gq,), int(config.topk), dtype=torch.long)
        )
        topk_count = torch.minimum(k, candidates)
        if config.mode == "auto":
            topk_count = torch.where(context <= config.auto_dense_up_to, candidates, topk_count)
    max_topk = int(topk_count.max())
    pages = visible_bias = candidate_bias = None
    ppb = bs // page_size
    if max_topk:
        if not has_summaries:
            raise ValueError(f"attention mode {config.mode!r} needs a KV cache built with key summaries")
        n_blocks = -(-S // bs)
        page_slots = torch.zeros(B, n_blocks * bs, dtype=torch.long)
        page_slots[:, :S] = layout.read_slots
        pages = page_slots[:, ::page_size] // page_size  # [B, NB * ppb]
        n = torch.arange(n_blocks)
        visible = n[None, :] < block[:, None]
        candidate = (n[None, :] >= 1) & (n[None, :] < (block - n_local)[:, None])
        visible_bias = torch.zeros(Gq, 1, 1, 1, n_blocks).masked_fill_(~visible[:, None, None, None], -torch.inf)
        candidate_bias = torch.zeros(Gq, 1, n_blocks).masked_fill_(~candidate[:, None], -torch.inf)
    topk_ok = (torch.arange(max_topk)[None, :] < topk_count[:, None]).repeat_interleave(bs, dim=1)  # [Gq, k * bs]
    mask = torch.cat([topk_ok[:, None, :].expand(Gq, Tg, max_topk * bs), fixed_mask], dim=2)  # [Gq, Tg, K]
    bias = torch.zeros(mask.shape).masked_fill_(~mask, -torch.inf).unsqueeze(1)
    return SparsePlan(
        block_size=bs,
        n_groups=Gq,
        group_size=Tg,
        token_index=token_index,
        query_padding=query_padding,
        group_row=group_row,
        read_slots=layout.read_slots,
        fixed_slots=fixed_slots,
        bias=bias,
        max_topk=max_topk,
        pages=pages,
        pages_per_block=ppb,
        visible_bias=visible_bias,
        candidate_bias=candidate_bias,
        group_is_row=Gq == B,
    )


def group_queries(plan: SparsePlan, q: torch.Tensor) -> torch.Tensor:
    """Packed queries [N, H, d] -> [Gq, Tg, H, d] (padding rows are zero)."""
    grouped = q.new_zeros(plan.n_groups * plan.group_size, *q.shape[1:])
    grouped[plan.token_index] = q
    return grouped.view(plan.n_groups, plan.group_size, *q.shape[1:])


def ungroup_outputs(plan: SparsePlan, out: torch.Tensor) -> torch.Tensor:
    """[Gq, Tg, H, d] -> packed [N, H, d]."""
    return out.reshape(plan.n_groups * plan.group_size, *out.shape[2:])[plan.token_index]


def qk_upper_bound(q: torch.Tensor, block_min: torch.Tensor, block_max: torch.Tensor) -> torch.Tensor:
    """max over a block's keys k of q·k, bounded from above by the block's elementwise key min/max.

    q [Gq, Tg, G, g, dk] (g query heads per key group), block_min / block_max [Gq, NB, G, dk] -> [Gq, G, g, Tg, NB].
    sum_d max(q_d min_d, q_d max_d) = q⁺·max + q⁻·min: two matmuls instead of a pass over the keys.
    """
    return torch.einsum("qtGgd,qnGd->qGgtn", q.clamp(min=0), block_max) + torch.einsum(
        "qtGgd,qnGd->qGgtn", q.clamp(max=0), block_min
    )


def topk_blocks(
    plan: SparsePlan, summaries: KeySummaries, layer: int, queries: torch.Tensor, scale: float
) -> torch.Tensor:
    """The top-k key blocks of every group and key group: queries [Gq, Tg, H, dk] -> block indices [Gq, G, k].

    Heads h share key group h // (H / G), as in grouped-query attention.
    """
    # Gq query groups, Tg queries each, G key groups of g query heads, NB key blocks, dk key dims.
    Gq, Tg, H, dk = queries.shape
    G = summaries.key_shape[0]
    block_min, block_max = summaries.blocks(layer, plan.pages, plan.pages_per_block)  # [B, NB, G, dk]
    if not plan.group_is_row:
        block_min, block_max = block_min[plan.group_row], block_max[plan.group_row]  # [Gq, NB, G, dk]
    bound = qk_upper_bound(queries.view(Gq, Tg, G, H // G, dk), block_min, block_max)  # [Gq, G, g, Tg, NB]
    # Estimated attention mass per block: a softmax over the blocks before the own one. A group with none
    # (its own block is the first) gets NaN here; it has no candidates either, so none of its picks is used.
    mass = torch.softmax(torch.add(plan.visible_bias, bound, alpha=scale), dim=-1)
    if plan.query_padding is not None:  # padding queries are zero: their flat softmax must not count
        mass = mass.masked_fill(plan.query_padding[:, None, None, :, None], 0.0)
    mass = mass.amax(dim=3).sum(dim=2)  # [Gq, G, NB]: the largest over the queries, summed over the heads
    return torch.add(mass, plan.candidate_bias).topk(plan.max_topk, dim=-1).indices


def select_slots(
    plan: SparsePlan, summaries: KeySummaries | None, layer: int, queries: torch.Tensor, scale: float, n_groups: int
) -> torch.Tensor:
    """Cache slots each query group attends, per key group: [Gq, G, K] (those to skip are -inf in `plan.bias`).

    queries: [Gq, Tg, H, dk] in the key space of the cache rows (see `group_queries`); n_groups: G.
    """
    fixed = plan.fixed_slots[:, None, :].expand(plan.n_groups, n_groups, plan.fixed_slots.shape[1])
    if not plan.max_topk:
        return fixed
    blocks = topk_blocks(plan, summaries, layer, queries, scale)  # [Gq, G, k]
    bs = plan.block_size
    positions = (blocks[..., None] * bs + torch.arange(bs)).flatten(2)  # [Gq, G, k * bs]
    # Picks past a group's count (masked) may name any block, even one past the end: clamp, they are never read.
    slots = plan.read_slots[plan.group_row[:, None, None], positions.clamp(max=plan.read_slots.shape[1] - 1)]
    return torch.cat([slots, fixed], dim=2)


def attend_gqa(
    plan: SparsePlan, kv: torch.Tensor, summaries: KeySummaries | None, layer: int, q: torch.Tensor
) -> torch.Tensor:
    """Grouped-query attention over the chosen blocks only: q [N, H, hd], kv = one layer's rows [slots, 2KV, hd]."""
    # Gq groups of Tg queries; H query heads sharing KV key-value heads; K gathered keys.
    hd, KV, Gq = q.shape[2], kv.shape[1] // 2, plan.n_groups
    scale = 1.0 / math.sqrt(hd)
    queries = group_queries(plan, q)  # [Gq, Tg, H, hd]
    slots = select_slots(plan, summaries, layer, queries, scale, KV)  # [Gq, KV, K]
    K = slots.shape[2]
    rows = kv.view(-1, hd)  # row r * 2KV + h is head h's key of slot r; + KV its value
    index = slots * (2 * KV) + torch.arange(KV)[None, :, None]
    keys = rows.index_select(0, index.view(-1)).view(Gq, KV, K, hd)
    values = rows.index_select(0, (index + KV).view(-1)).view(Gq, KV, K, hd)
    return attend_gathered(plan, queries, keys, values, scale)


def attend_latent(
    plan: SparsePlan,
    rows: torch.Tensor,
    summaries: KeySummaries | None,
    layer: int,
    q: torch.Tensor,
    scale: float,
    value_dim: int,
) -> torch.Tensor:
    """Multi-query attention over the chosen blocks, for cache rows that are both key and value (latent attention).

    q [N, H, d]: every head's query in the space of the whole row (MLA: the absorbed query, latent + rope key);
    rows: one layer's cache rows [slots, d], the value being each row's first `value_dim` entries (the latent).
    All heads share the rows, one key group. -> [N, H, value_dim]
    """
    Gq, d = plan.n_groups, q.shape[2]
    queries = group_queries(plan, q)  # [Gq, Tg, H, d]
    slots = select_slots(plan, summaries, layer, queries, scale, 1)  # [Gq, 1, K]
    keys = rows.index_select(0, slots.reshape(-1)).view(Gq, 1, slots.shape[2], d)
    return attend_gathered(plan, queries, keys, keys[..., :value_dim], scale)


def attend_gathered(
    plan: SparsePlan, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
) -> torch.Tensor:
    """Grouped queries [Gq, Tg, H, dk] over their gathered keys / values [Gq, G, K, dk / dv] (plan.bias masks
    the keys to skip) -> packed [N, H, dv]."""
    out = F.scaled_dot_product_attention(
        queries.transpose(1, 2), keys, values, attn_mask=plan.bias, scale=scale, enable_gqa=True
    )  # [Gq, H, Tg, dv]
    return ungroup_outputs(plan, out.transpose(1, 2))
