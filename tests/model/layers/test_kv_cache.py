"""Paged KV cache bookkeeping: block sharing on fork, copy-on-write, release, truncation, limits."""

from __future__ import annotations

import pytest
import torch

from model.layers.attention import causal_mask
from model.layers.kv_cache import CacheFull, KVCache

N_LAYERS, ROW_SHAPE = 2, (2, 4)  # one KV head of dim 4: keys and values


def make_cache(**kwargs) -> KVCache:
    return KVCache(N_LAYERS, ROW_SHAPE, **{"max_seq_len": 100, **kwargs})


def fill(cache: KVCache, seq: int, n: int, value: float) -> None:
    layout = cache.append([seq], [n])
    rows = torch.full((n, *ROW_SHAPE), value)
    for layer in range(N_LAYERS):
        cache.write(layer, layout.write_slots, rows)
    cache.commit(layout)


def cached_values(cache: KVCache, seq: int) -> list[float]:
    layout = cache.append([seq], [1])  # reading goes through a step layout; roll the probe token back after
    rows = cache.read(0, layout.read_slots)  # [B, S, 2, 4]
    cache.rollback(layout)
    return rows[0, :-1, 0, 0].tolist()


def test_fork_shares_blocks_and_copies_on_write():
    cache = make_cache(block_size=4, initial_blocks=4)
    parent = cache.new_sequence()
    fill(cache, parent, 6, 1.0)  # blocks: one full, one half-filled
    assert cache.blocks_in_use == 2
    a, b = cache.fork(parent, 2)
    assert cache.blocks_in_use == 2 and cache.length(a) == 6
    fill(cache, a, 1, 2.0)  # writes into the shared half block -> a gets its own copy
    assert cache.blocks_in_use == 3
    assert cached_values(cache, a) == [1.0] * 6 + [2.0]
    assert cached_values(cache, parent) == [1.0] * 6
    assert cached_values(cache, b) == [1.0] * 6
    cache.free(parent)
    cache.free(b)
    assert cache.blocks_in_use == 2  # a's full shared block and its private copy
    cache.free(a)
    assert cache.blocks_in_use == 0


def test_pool_grows_when_blocks_run_out():
    cache = make_cache(block_size=4, initial_blocks=1)
    seq = cache.new_sequence()
    fill(cache, seq, 3, 1.0)
    fill(cache, seq, 10, 3.0)
    assert cache.n_blocks >= 4
    assert cached_values(cache, seq) == [1.0] * 3 + [3.0] * 10


def test_truncate_releases_whole_blocks():
    cache = make_cache(block_size=4, initial_blocks=8)
    seq = cache.new_sequence()
    fill(cache, seq, 13, 1.0)
    assert cache.blocks_in_use == 4
    cache.truncate(seq, 5)
    assert cache.length(seq) == 5 and cache.blocks_in_use == 2
    with pytest.raises(ValueError):
        cache.truncate(seq, 6)


def test_ragged_layout_masks_padding_and_future():
    cache = make_cache(block_size=4)
    a, b = cache.new_sequence(), cache.new_sequence()
    fill(cache, a, 3, 1.0)
    layout = cache.append([a, b], [1, 2])
    assert layout.positions.tolist() == [3, 0, 1]
    assert layout.last_token.tolist() == [0, 2]
    assert layout.row_of_token.tolist() == [[True, False], [True, True]]
    mask = causal_mask(layout)[:, 0]
    assert mask[0, 0].tolist() == [True, True, True, True]  # a's new token sees its 3 cached + itself
    assert mask[1, 0].tolist() == [True, False, False, False]  # b's first token: causal
    assert mask[1, 1].tolist() == [True, True, False, False]  # b's second token: no padding keys


def test_decode_layout_of_equal_lengths_reads_each_sequences_own_rows():
    # Equal lengths that end inside a block: the slot rows are a slice of whole blocks, and must still read.
    cache = make_cache(block_size=4)
    a, b = cache.new_sequence(), cache.new_sequence()
    fill(cache, a, 5, 1.0)
    fill(cache, b, 5, 2.0)
    layout = cache.append([a, b], [1, 1])
    assert causal_mask(layout) is None and layout.positions.tolist() == [5, 5] and layout.n_new == (1, 1)
    assert layout.write_slots.tolist() == [layout.read_slots[0, 5].item(), layout.read_slots[1, 5].item()]
    rows = cache.read(0, layout.read_slots)  # [B, S, 2, 4]
    assert rows[0, :5, 0, 0].tolist() == [1.0] * 5 and rows[1, :5, 0, 0].tolist() == [2.0] * 5


def test_context_length_is_enforced():
    cache = make_cache()
    seq = cache.new_sequence()
    fill(cache, seq, 99, 0.0)
    with pytest.raises(ValueError, match="context length of 100"):
        cache.append([seq], [2])
    assert cache.length(seq) == 99  # the refused step changed nothing


def test_bad_steps_are_refused():
    cache = make_cache()
    seq = cache.new_sequence()
    with pytest.raises(ValueError):
        cache.append([seq, seq], [1, 1])
    with pytest.raises(ValueError):
        cache.append([seq], [0])


def test_a_refused_batch_step_changes_no_sequence():
    cache = make_cache()
    short, long = cache.new_sequence(), cache.new_sequence()
    fill(cache, long, 99, 0.0)
    with pytest.raises(ValueError):
        cache.append([short, long], [1, 2])
    assert (cache.length(short), cache.length(long)) == (0, 99)


def test_lengths_move_only_on_commit_and_rollback_frees_the_step():
    cache = make_cache(block_size=4)
    seq = cache.new_sequence()
    fill(cache, seq, 3, 1.0)
    layout = cache.append([seq], [6])  # would need two more blocks
    assert cache.length(seq) == 3 and cache.blocks_in_use == 3
    cache.rollback(layout)  # the forward failed: nothing of the step stays
    assert cache.length(seq) == 3 and cache.blocks_in_use == 1
    assert cached_values(cache, seq) == [1.0] * 3


def test_pool_never_grows_past_its_capacity():
    cache = make_cache(block_size=4, initial_blocks=1, max_blocks=3)
    a, b = cache.new_sequence(), cache.new_sequence()
    fill(cache, a, 8, 1.0)
    assert cache.free_blocks == 1
    assert cache.blocks_needed([a, b], [1, 5]) == 3
    with pytest.raises(CacheFull):
        cache.append([a, b], [1, 5])
    assert cache.blocks_in_use == 2 and cache.free_blocks == 1, "a refused step must give back what it took"
    fill(cache, b, 4, 2.0)
    assert cache.n_blocks == 3 and cache.free_blocks == 0


def test_adopted_prefix_blocks_are_shared_not_copied():
    cache = make_cache(block_size=4)
    donor = cache.new_sequence()
    fill(cache, donor, 8, 5.0)
    blocks = cache.blocks(donor)
    cache.retain(blocks)  # what the radix tree does for blocks it indexes
    cache.free(donor)
    seq = cache.new_sequence(blocks)
    assert cache.length(seq) == 8 and cache.blocks_in_use == 2
    fill(cache, seq, 1, 6.0)
    assert cached_values(cache, seq) == [5.0] * 8 + [6.0]
    assert [cache.refs(b) for b in blocks] == [2, 2]
