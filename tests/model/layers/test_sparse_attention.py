"""Block-sparse attention: equal to dense when it covers everything, exactly its pattern when it does not,
top-k picks the block holding the largest q·k, `auto` switches at 512 tokens; through the engine too.

Function-level tests use hand-made caches with small blocks (8-token blocks over 4-token pages) so that a
few dozen tokens span many blocks; the engine tests run a tiny random Llama with the real 64-token blocks.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.layers.attention import causal_mask
from model.layers.key_summaries import KeySummaries
from model.layers.kv_cache import KVCache, StepLayout
from model.layers.sparse_attention import (
    AttentionConfig,
    attend_gqa,
    attend_latent,
    group_queries,
    plan_step,
    qk_upper_bound,
    topk_blocks,
)

KV, H, HD, PAGE, BLOCK = 2, 4, 8, 4, 8  # 2 KV heads shared by 4 query heads; 8-token blocks of two pages


def make_cache(n_kv: int = KV, head_dim: int = HD) -> KVCache:
    summaries = KeySummaries(1, (n_kv, head_dim), lambda rows: rows[:, :n_kv], PAGE)
    return KVCache(1, (2 * n_kv, head_dim), max_seq_len=4096, block_size=PAGE, key_summaries=summaries)


def write_step(cache: KVCache, seqs: list[int], n_new: list[int], g: torch.Generator, commit: bool) -> StepLayout:
    layout = cache.append(seqs, n_new)
    cache.write(0, layout.write_slots, torch.randn(sum(n_new), *cache.row_shape, generator=g))
    if commit:
        cache.commit(layout)
    return layout


def ragged_step(
    g: torch.Generator, cache: KVCache | None = None, query_dim: int = HD
) -> tuple[KVCache, StepLayout, torch.Tensor]:
    """A step mixing a prefill chunk that starts mid-block, a decode token, a fresh prompt and two forks."""
    cache = cache or make_cache()
    long, mid, parent = cache.new_sequence(), cache.new_sequence(), cache.new_sequence()
    write_step(cache, [long, mid, parent], [45, 70, 38], g, commit=True)
    fresh = cache.new_sequence()
    left, right = cache.fork(parent, 2)  # share parent's pages; their writes copy the half-filled one
    layout = write_step(cache, [long, mid, fresh, left, right], [21, 1, 19, 1, 12], g, commit=False)
    q = torch.randn(layout.positions.shape[0], H, query_dim, generator=g)
    return cache, layout, q


def dense_reference(
    cache: KVCache, layout: StepLayout, q: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention over every cached key (as model/layers/attention.py's dense path), restricted to `allowed` [B, KV, T, S]."""
    kv = cache.read(0, layout.read_slots).transpose(1, 2)  # [B, 2KV, S, hd]
    n_kv = kv.shape[1] // 2
    B, T = layout.batch_size, layout.max_new
    mask = causal_mask(layout)
    mask = mask if mask is not None else torch.ones(B, 1, T, kv.shape[2], dtype=torch.bool)
    if allowed is not None:
        mask = mask & allowed.repeat_interleave(q.shape[1] // n_kv, dim=1)
    q_padded = q.new_zeros(B, T, *q.shape[1:])
    row_of_token = layout.row_of_token if layout.row_of_token is not None else torch.ones(B, T, dtype=torch.bool)
    q_padded[row_of_token] = q
    out = F.scaled_dot_product_attention(
        q_padded.transpose(1, 2), kv[:, :n_kv], kv[:, n_kv:], attn_mask=mask, enable_gqa=True
    )
    return out.transpose(1, 2)[row_of_token]


def positions_grid(layout: StepLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions [B, T] (padding repeats the last) and key positions [S]."""
    n_new = layout.last_token.diff(prepend=torch.tensor([-1]))
    t = torch.arange(layout.max_new)
    q_pos = torch.tensor(layout.starts)[:, None] + torch.minimum(t[None, :], (n_new - 1)[:, None])
    return q_pos, torch.arange(layout.read_slots.shape[1])


def sparse(cache: KVCache, layout: StepLayout, q: torch.Tensor, config: AttentionConfig) -> torch.Tensor:
    plan = plan_step(config, layout, PAGE, has_summaries=True)
    assert plan is not None
    return attend_gqa(plan, cache.kv[0], cache.key_summaries, 0, q)


def test_topk_with_every_block_equals_dense():
    cache, layout, q = ragged_step(torch.Generator().manual_seed(0))
    out = sparse(cache, layout, q, AttentionConfig(mode="topk", block_size=BLOCK, local_blocks=1, topk=1000))
    torch.testing.assert_close(out, dense_reference(cache, layout, q), rtol=0, atol=1e-5)


def test_local_with_a_covering_window_equals_dense():
    cache, layout, q = ragged_step(torch.Generator().manual_seed(1))
    out = sparse(cache, layout, q, AttentionConfig(mode="local", block_size=BLOCK, local_blocks=100))
    torch.testing.assert_close(out, dense_reference(cache, layout, q), rtol=0, atol=1e-5)


def test_local_attends_own_block_previous_blocks_and_the_sink_only():
    cache, layout, q = ragged_step(torch.Generator().manual_seed(2))
    n_local = 2
    out = sparse(cache, layout, q, AttentionConfig(mode="local", block_size=BLOCK, local_blocks=n_local))
    q_pos, k_pos = positions_grid(layout)
    q_block, k_block = q_pos[:, :, None] // BLOCK, k_pos[None, None, :] // BLOCK
    window = (k_block == 0) | (k_block >= q_block - n_local)  # [B, T, S]; causality comes from the layout's mask
    expected = dense_reference(cache, layout, q, window[:, None].expand(-1, KV, -1, -1))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (out - dense_reference(cache, layout, q)).abs().max() > 1e-3, "the window must leave keys out"


def test_topk_attends_exactly_the_chosen_blocks_per_kv_head():
    cache, layout, q = ragged_step(torch.Generator().manual_seed(3))
    config = AttentionConfig(mode="topk", block_size=BLOCK, local_blocks=1, topk=2)
    plan = plan_step(config, layout, PAGE, has_summaries=True)
    chosen = topk_blocks(plan, cache.key_summaries, 0, group_queries(plan, q), 1 / math.sqrt(HD))  # [Gq, KV, 2]
    out = attend_gqa(plan, cache.kv[0], cache.key_summaries, 0, q)
    allowed = allowed_keys(layout, plan, chosen, n_local=1, k=2)
    torch.testing.assert_close(out, dense_reference(cache, layout, q, allowed), rtol=0, atol=1e-5)


def allowed_keys(layout: StepLayout, plan, chosen: torch.Tensor, n_local: int, k: int) -> torch.Tensor:
    """[B, G, T, S]: the keys each query may see, per key group: its group's sink, local, own and chosen blocks."""
    q_pos, k_pos = positions_grid(layout)
    B, T, S, G = q_pos.shape[0], q_pos.shape[1], k_pos.shape[0], chosen.shape[1]
    allowed = torch.zeros(B, G, T, S, dtype=torch.bool)
    group = 0
    for row, start in enumerate(layout.starts):
        n = int(layout.last_token[row] - (layout.last_token[row - 1] if row else -1))
        for block in range(start // BLOCK, (start + n - 1) // BLOCK + 1):
            cells = (q_pos[row] // BLOCK == block) & (torch.arange(T) < n)
            blocks = {0, *range(block - n_local, block + 1)}
            for head in range(G):
                picked = blocks | set(chosen[group, head].tolist()[: min(k, max(0, block - n_local - 1))])
                keys = torch.isin(k_pos // BLOCK, torch.tensor(sorted(picked)))
                allowed[row, head] |= cells[:, None] & keys[None, :]
            group += 1
    assert group == plan.n_groups
    return allowed


# Latent attention (MLA): rows of a latent (the values) and a rope key, the whole row the key; one key group.
LATENT, ROPE = 12, 4


def latent_cache() -> KVCache:
    width = LATENT + ROPE
    summaries = KeySummaries(1, (1, width), lambda rows: rows.reshape(rows.shape[0], 1, width), PAGE)
    return KVCache(1, (width,), max_seq_len=4096, block_size=PAGE, key_summaries=summaries)


def dense_latent_reference(
    cache: KVCache, layout: StepLayout, q: torch.Tensor, scale: float, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Every head of q [N, H, LATENT + ROPE] over every cached row of its sequence (restricted to `allowed`
    [B, 1, T, S]), with explicit scores: softmax(q · row * scale) @ latent."""
    rows = cache.read(0, layout.read_slots)  # [B, S, LATENT + ROPE]
    B, T = layout.batch_size, layout.max_new
    mask = causal_mask(layout)
    mask = mask if mask is not None else torch.ones(B, 1, T, rows.shape[1], dtype=torch.bool)
    if allowed is not None:
        mask = mask & allowed
    row_of_token = layout.row_of_token if layout.row_of_token is not None else torch.ones(B, T, dtype=torch.bool)
    q_padded = q.new_zeros(B, T, *q.shape[1:])
    q_padded[row_of_token] = q
    scores = torch.einsum("bthd,bsd->bhts", q_padded, rows) * scale
    weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1)
    out = torch.einsum("bhts,bsc->bthc", weights, rows[..., :LATENT])
    return out[row_of_token]


@pytest.mark.parametrize(
    "config",
    [
        AttentionConfig(mode="topk", block_size=BLOCK, local_blocks=1, topk=1000),
        AttentionConfig(mode="local", block_size=BLOCK, local_blocks=100),
    ],
    ids=["topk-every-block", "local-covering"],
)
def test_latent_attention_over_every_block_equals_dense(config):
    cache, layout, q = ragged_step(torch.Generator().manual_seed(8), latent_cache(), LATENT + ROPE)
    plan = plan_step(config, layout, PAGE, has_summaries=True)
    out = attend_latent(plan, cache.kv[0], cache.key_summaries, 0, q, 0.3, LATENT)
    torch.testing.assert_close(out, dense_latent_reference(cache, layout, q, 0.3), rtol=0, atol=1e-5)


def test_latent_attention_attends_exactly_the_chosen_blocks():
    cache, layout, q = ragged_step(torch.Generator().manual_seed(9), latent_cache(), LATENT + ROPE)
    plan = plan_step(AttentionConfig(mode="topk", block_size=BLOCK, local_blocks=1, topk=2), layout, PAGE, True)
    scale = 0.3
    chosen = topk_blocks(plan, cache.key_summaries, 0, group_queries(plan, q), scale)  # [Gq, 1, 2]
    out = attend_latent(plan, cache.kv[0], cache.key_summaries, 0, q, scale, LATENT)
    expected = dense_latent_reference(cache, layout, q, scale, allowed_keys(layout, plan, chosen, n_local=1, k=2))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (out - dense_latent_reference(cache, layout, q, scale)).abs().max() > 1e-3, "top-2 must leave keys out"


def test_topk_picks_the_block_holding_the_largest_qk():
    g = torch.Generator().manual_seed(4)
    cache = make_cache(n_kv=1, head_dim=4)
    seq = cache.new_sequence()
    query = torch.tensor([1.0, -2.0, 0.5, 3.0])
    keys = torch.randn(10 * BLOCK, 4, generator=g) * 0.1  # 10 blocks of small keys
    keys[5 * BLOCK + 3] = query / query.norm() * 2  # block 5 holds the key most aligned with the query
    keys[2 * BLOCK + 6] = -query / query.norm() * 3  # block 2 the largest key, pointing away
    layout = cache.append([seq], [10 * BLOCK])
    cache.write(0, layout.write_slots, torch.stack([keys, torch.zeros_like(keys)], dim=1))
    cache.commit(layout)
    layout = write_step(cache, [seq], [1], g, commit=False)  # a decode token in block 10
    plan = plan_step(AttentionConfig(mode="topk", block_size=BLOCK, local_blocks=1, topk=1), layout, PAGE, True)
    chosen = topk_blocks(plan, cache.key_summaries, 0, query.view(1, 1, 1, 4), 0.5)
    assert chosen.tolist() == [[[5]]]


def test_block_score_bounds_every_qk_in_the_block():
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(6, BLOCK, 2, HD, generator=g)  # [NB, keys per block, G, dk]
    q = torch.randn(3, 2, 2, HD, generator=g)  # [Tg, G, g, dk]
    bound = qk_upper_bound(q[None], keys.amin(dim=1)[None], keys.amax(dim=1)[None])[0]  # [G, g, Tg, NB]
    exact = torch.einsum("tGgd,nkGd->Ggtnk", q, keys).amax(dim=-1)
    assert (bound >= exact - 1e-6).all()
    assert (bound - exact).max() > 0.1  # a bound, not the exact score


def test_auto_is_dense_up_to_512_tokens_of_context_and_sparse_above():
    config = AttentionConfig(mode="auto")
    cache = KVCache(1, (2, 4), max_seq_len=4096, block_size=16)
    seq = cache.new_sequence()
    layout = cache.append([seq], [512])
    assert plan_step(config, layout, 16, has_summaries=True) is None
    cache.commit(layout)
    layout = cache.append([seq], [1])  # the 513th token
    plan = plan_step(config, layout, 16, has_summaries=True)
    assert plan is not None and plan.max_topk == 1  # 9 blocks: ceil(5% of 9) = 1 picked, 2 local, own, sink
    cache.commit(layout)
    # In a batch, a short sequence still sees every key while a long one is sparse.
    short = cache.new_sequence()
    long_tail, short_tail = 2000, 300
    cache.commit(cache.append([seq], [long_tail]))
    cache.commit(cache.append([short], [short_tail]))
    plan = plan_step(config, cache.append([seq, short], [1, 1]), 16, has_summaries=True)
    keys_seen = (plan.bias == 0).sum(dim=(1, 2, 3)).tolist()  # one decode query per group
    assert keys_seen[1] == short_tail + 1
    assert keys_seen[0] < 0.15 * (513 + long_tail + 1)


def test_unknown_mode_and_missing_summaries_are_clear_errors():
    with pytest.raises(ValueError, match="unknown attention mode"):
        AttentionConfig(mode="sparse")
    cache = KVCache(1, (2, 4), max_seq_len=4096, block_size=16)
    seq = cache.new_sequence()
    layout = cache.append([seq], [700])
    with pytest.raises(ValueError, match="key summaries"):
        plan_step(AttentionConfig(mode="topk"), layout, 16, has_summaries=False)
    assert plan_step(AttentionConfig(mode="local"), layout, 16, has_summaries=False) is not None


# ----- through the engine: scheduler, chunked prefill, ragged decode, the radix cache ---------------------


@pytest.fixture(scope="module")
def tiny(default_checkpoint):
    from tests.model.serving.test_scheduler import tiny_transformer

    tokenizer = default_checkpoint.tokenizer
    return tiny_transformer(tokenizer.vocab_size), tokenizer


def test_engine_topk_over_every_block_generates_what_dense_does(tiny):
    from model import SamplingParams
    from model.engine import Engine
    from model.serving.scheduler import SchedulerConfig

    transformer, tokenizer = tiny
    g = torch.Generator().manual_seed(6)
    prefix = torch.randint(0, tokenizer.vocab_size, (150,), generator=g).tolist()
    prompts = [prefix + torch.randint(0, tokenizer.vocab_size, (n,), generator=g).tolist() for n in (20, 45, 70)]
    params = SamplingParams(max_new_tokens=40, stop_token_ids=())
    generated = {}
    for attention in (AttentionConfig(), AttentionConfig(mode="topk", local_blocks=0, topk=1000)):
        with Engine(
            transformer, tokenizer, kv_cache_mb=64, scheduler=SchedulerConfig(prefill_chunk=48), attention=attention
        ) as engine:
            first = engine.generate_batch(prompts[:1], params)  # caches the shared prefix
            rest = engine.generate_batch(prompts[1:], params)  # adopt it from the radix tree, decode as a batch
            assert engine.cache_stats().hit_tokens >= 2 * 144
        generated[attention.mode] = [c.token_ids for c in first + rest]
    assert generated["topk"] == generated["dense"]


def test_engine_auto_matches_dense_up_to_512_tokens_and_is_sparse_after(tiny):
    from model.engine import Engine

    transformer, tokenizer = tiny
    ids = torch.randint(0, tokenizer.vocab_size, (1200,), generator=torch.Generator().manual_seed(7)).tolist()
    with Engine(transformer, tokenizer, kv_cache_mb=64) as dense:
        expected = dense.logits(ids)
        chunked = dense.logits(ids, chunk=300)  # as a chunked prefill feeds it
    torch.testing.assert_close(chunked, expected, rtol=0, atol=1e-5 * expected.abs().max())
    with Engine(transformer, tokenizer, kv_cache_mb=64, attention=AttentionConfig(mode="auto")) as auto:
        assert torch.equal(auto.logits(ids[:512]), expected[:512]), "a step within 512 tokens runs the dense path"
        logits = auto.logits(ids)
    scale = expected.abs().max()
    torch.testing.assert_close(logits[:512], expected[:512], rtol=0, atol=1e-5 * scale)
    assert (logits[1000:] - expected[1000:]).abs().max() > 1e-2 * scale


def test_load_takes_a_mode_and_the_fallback_forces_dense(default_checkpoint, loading_cache_dir):
    import model

    with model.load("default", cache_dir=loading_cache_dir, attention="auto") as engine:
        assert engine.attention.mode == "auto" and engine.cache.key_summaries is not None
    with model.load("default", cache_dir=loading_cache_dir, attention="topk", fallback_full_attention=True) as engine:
        assert engine.attention.mode == "dense" and engine.cache.key_summaries is None
    with pytest.raises(ValueError, match="unknown attention mode"):
        model.load("default", cache_dir=loading_cache_dir, attention="sparse")
