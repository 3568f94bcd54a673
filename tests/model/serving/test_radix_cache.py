"""The radix tree on its own: longest-prefix match in whole blocks, node splits, locks, LRU eviction."""

from __future__ import annotations

from model.serving.radix_cache import RadixCache

BS = 4


def ids(*runs: tuple[int, int]) -> list[int]:
    """Concatenated runs of (value, count): ids((1, 8), (2, 4)) = eight 1s then four 2s."""
    return [value for value, count in runs for _ in range(count)]


def test_match_returns_the_longest_whole_block_prefix():
    tree = RadixCache(BS)
    node, new = tree.insert(ids((1, 8), (2, 4)), [10, 11, 12])
    assert new == [10, 11, 12] and tree.cached_blocks == 3
    assert tree.match(ids((1, 8), (2, 4), (3, 3))).blocks == [10, 11, 12]
    assert tree.match(ids((1, 8), (2, 3))).blocks == [10, 11]  # the partial third block does not count
    assert tree.match(ids((1, 4), (9, 4))).blocks == [10]
    assert tree.match(ids((7, 8))).blocks == []


def test_a_diverging_insert_splits_the_edge_and_keeps_existing_blocks():
    tree = RadixCache(BS)
    tree.insert(ids((1, 12)), [10, 11, 12])
    node, new = tree.insert(ids((1, 8), (5, 8)), [20, 21, 22, 23])
    assert new == [22, 23], "the shared two blocks stay the tree's own; only the new tail is indexed"
    assert tree.cached_blocks == 5
    assert tree.match(ids((1, 8), (5, 8))).blocks == [10, 11, 22, 23]
    assert tree.match(ids((1, 12))).blocks == [10, 11, 12]
    _, again = tree.insert(ids((1, 12)), [30, 31, 32])
    assert again == []


def test_eviction_is_lru_over_unlocked_leaves():
    tree = RadixCache(BS)
    tree.insert(ids((1, 4)), [1])  # oldest
    tree.insert(ids((2, 4)), [2])
    tree.insert(ids((3, 4)), [3])
    tree.match(ids((1, 4)))  # touch the oldest: now 2 is least recently used
    assert tree.evict(1) == [2]
    assert tree.evict(1) == [3]
    assert tree.evict(5) == [1]
    assert tree.cached_blocks == 0 and tree.evict(1) == []


def test_locked_paths_are_never_evicted():
    tree = RadixCache(BS)
    leaf, _ = tree.insert(ids((1, 8)), [1, 2])
    other, _ = tree.insert(ids((1, 4), (2, 4)), [1, 3])  # splits: [1] -> {[2], [3]}
    tree.lock(leaf)
    assert tree.evictable_blocks == 1  # only the unlocked sibling [3]
    assert tree.evict(10) == [3]
    assert tree.evict(10) == [], "the locked leaf and its ancestor stay"
    tree.unlock(leaf)
    assert tree.evictable_blocks == 2
    assert sorted(tree.evict(10)) == [1, 2]  # the leaf, then its parent once it became a leaf


def test_a_split_keeps_lock_counts_consistent():
    tree = RadixCache(BS)
    leaf, _ = tree.insert(ids((1, 12)), [1, 2, 3])
    tree.lock(leaf)
    tree.match(ids((1, 8), (4, 4)))  # splits the locked edge after two blocks
    assert tree.evictable_blocks == 0
    tree.unlock(leaf)
    assert tree.evictable_blocks == 3
    assert sorted(tree.evict(3)) == [1, 2, 3]
