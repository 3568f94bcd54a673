"""Per-page key min/max kept by the KV cache: exact through writes, forks, copy-on-write, eviction and reuse."""

from __future__ import annotations

import torch

from model.layers.key_summaries import KeySummaries
from model.layers.kv_cache import KVCache
from model.serving.radix_cache import RadixCache

N_LAYERS, KV_HEADS, HEAD_DIM, PAGE = 2, 2, 4, 4
ROW_SHAPE = (2 * KV_HEADS, HEAD_DIM)  # keys of the KV heads, then their values


def make_cache(**kwargs) -> KVCache:
    summaries = KeySummaries(N_LAYERS, (KV_HEADS, HEAD_DIM), lambda rows: rows[:, :KV_HEADS], PAGE)
    return KVCache(N_LAYERS, ROW_SHAPE, max_seq_len=200, block_size=PAGE, key_summaries=summaries, **kwargs)


def fill(cache: KVCache, seq: int, n: int, generator: torch.Generator) -> None:
    layout = cache.append([seq], [n])
    for layer in range(N_LAYERS):
        cache.write(layer, layout.write_slots, torch.randn(n, *ROW_SHAPE, generator=generator))
    cache.commit(layout)


def assert_summaries_exact(cache: KVCache, seq: int) -> None:
    """Each page of `seq` summarises exactly the keys `seq` holds there: no more, no fewer."""
    length, s = cache.length(seq), cache.key_summaries
    for index, page in enumerate(cache.blocks(seq)):
        n = min(PAGE, length - index * PAGE)
        if n <= 0:
            continue
        keys = cache.kv[:, page * PAGE : page * PAGE + n, :KV_HEADS]  # [L, n, KV, hd]
        torch.testing.assert_close(s.min[:, page], keys.amin(dim=1), rtol=0, atol=0)
        torch.testing.assert_close(s.max[:, page], keys.amax(dim=1), rtol=0, atol=0)


def test_summaries_follow_writes_across_pages():
    g = torch.Generator().manual_seed(0)
    cache = make_cache(initial_blocks=2)
    seq = cache.new_sequence()
    fill(cache, seq, 3, g)
    fill(cache, seq, 1, g)  # completes the first page
    fill(cache, seq, 9, g)  # three pages more, the pool grows meanwhile
    assert cache.key_summaries.n_pages == cache.n_blocks
    assert_summaries_exact(cache, seq)


def test_fork_and_copy_on_write_keep_each_copy_exact():
    g = torch.Generator().manual_seed(1)
    cache = make_cache()
    parent = cache.new_sequence()
    fill(cache, parent, 6, g)  # a full page and a half-filled one
    a, b = cache.fork(parent, 2)
    fill(cache, a, 1, g)  # a writes into the shared half page: it gets its own copy
    fill(cache, b, 5, g)  # so does b, and b moves on to a new page
    assert cache.blocks(a)[1] != cache.blocks(parent)[1] != cache.blocks(b)[1]
    for seq in (parent, a, b):
        assert_summaries_exact(cache, seq)


def test_evicted_and_reused_pages_forget_their_old_keys():
    g = torch.Generator().manual_seed(2)
    cache = make_cache(initial_blocks=4, max_blocks=4)
    tree = RadixCache(PAGE)
    donor = cache.new_sequence()
    fill(cache, donor, 16, g)
    # Large keys that a reused page must not remember.
    cache.kv[:, : 16 * 1] += 100.0
    cache.key_summaries.reset(cache.kv, cache.blocks(donor), [PAGE] * 4)
    _, new_blocks = tree.insert(list(range(16)), cache.blocks(donor))
    cache.retain(new_blocks)
    cache.free(donor)
    cache.release(tree.evict(4))  # the prefix cache drops it all: the four pages are free
    assert cache.free_blocks == 4
    seq = cache.new_sequence()
    fill(cache, seq, 2, g)  # reuses a page: 2 rows written of 4, the other 2 still hold old +100 keys
    fill(cache, seq, 7, g)
    assert_summaries_exact(cache, seq)
    assert float(cache.key_summaries.max[:, cache.blocks(seq)[0]].max()) < 50


def test_adopted_prefix_truncation_and_rollback_stay_exact():
    g = torch.Generator().manual_seed(3)
    cache = make_cache()
    donor = cache.new_sequence()
    fill(cache, donor, 8, g)
    seq = cache.new_sequence(cache.blocks(donor))  # adopts two full pages, as from the radix tree
    fill(cache, seq, 3, g)
    cache.truncate(seq, 9)  # forget two rows; the page keeps them in storage
    fill(cache, seq, 2, g)  # rewrites those positions with new keys
    layout = cache.append([seq], [5])
    for layer in range(N_LAYERS):
        cache.write(layer, layout.write_slots, torch.full((5, *ROW_SHAPE), 1000.0))
    cache.rollback(layout)  # the failed step wrote +1000 rows into seq's partial page
    fill(cache, seq, 1, g)
    for s in (donor, seq):
        assert_summaries_exact(cache, s)
