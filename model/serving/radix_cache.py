"""A radix tree over token ids whose values are KV block indices: the prefix cache (tier 1 of memory).

The tree stores block indices into the pool (model/layers/kv_cache.py), never tensors, and only whole blocks:
an edge holds k * block_size tokens and the k blocks caching them. Reference counts on the blocks are the
caller's job (the scheduler retains a block when `insert` indexes it and releases what `evict` returns).

Each node has a lock count: a running request locks the deepest node of its cached prefix, which locks the
whole path to the root, and locked nodes are never evicted. Unlocked leaves are evicted least recently
used first (a logical clock, bumped by `match` and `insert`). Modelled on SGLang's `radix_cache.py`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class RadixNode:
    tokens: tuple[int, ...] = ()  # the edge from the parent: a whole number of blocks of tokens
    blocks: list[int] = field(default_factory=list)  # one block index per block_size tokens of the edge
    parent: RadixNode | None = None
    children: dict[tuple[int, ...], RadixNode] = field(default_factory=dict)  # keyed by the child's first block
    lock: int = 0
    last_access: int = 0


@dataclass(frozen=True)
class PrefixMatch:
    blocks: list[int]  # blocks caching the matched prefix, in order
    node: RadixNode  # deepest node of the match (lock it while the blocks are in use)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


class RadixCache:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.root = RadixNode()
        self.root.lock = 1  # the root is never evicted
        self._clock = itertools.count(1)
        self.cached_blocks = 0  # blocks the tree indexes
        self.evictable_blocks = 0  # of those, blocks under no lock

    def _key(self, tokens: Sequence[int], start: int) -> tuple[int, ...]:
        return tuple(tokens[start : start + self.block_size])

    def match(self, tokens: Sequence[int]) -> PrefixMatch:
        """The longest cached prefix of `tokens`, in whole blocks.

        Side effects: touches the matched path (LRU), and may split a node so that the match ends on one.
        """
        bs, node, pos, blocks = self.block_size, self.root, 0, []
        now = next(self._clock)
        while len(tokens) - pos >= bs:
            child = node.children.get(self._key(tokens, pos))
            if child is None:
                break
            shared = self._shared_blocks(child, tokens, pos)
            partial = shared < len(child.blocks)
            if partial:
                child = self._split(child, shared)
            child.last_access = now
            blocks.extend(child.blocks)
            pos += len(child.tokens)
            node = child
            if partial:
                break
        return PrefixMatch(blocks, node)

    def _shared_blocks(self, node: RadixNode, tokens: Sequence[int], pos: int) -> int:
        """How many whole leading blocks of `node`'s edge equal tokens[pos:] (at least 1: the key matched)."""
        bs, n = self.block_size, 0
        while (
            n < len(node.blocks)
            and tuple(tokens[pos + n * bs : pos + (n + 1) * bs]) == node.tokens[n * bs : (n + 1) * bs]
        ):
            n += 1
        return n

    def _split(self, node: RadixNode, n_blocks: int) -> RadixNode:
        """Cut `node`'s edge after n_blocks; returns the new upper node (which inherits the lock count)."""
        bs = self.block_size
        upper = RadixNode(
            tokens=node.tokens[: n_blocks * bs],
            blocks=node.blocks[:n_blocks],
            parent=node.parent,
            lock=node.lock,
            last_access=node.last_access,
        )
        node.parent.children[self._key(upper.tokens, 0)] = upper
        node.tokens, node.blocks, node.parent = node.tokens[n_blocks * bs :], node.blocks[n_blocks:], upper
        upper.children[self._key(node.tokens, 0)] = node
        return upper

    def insert(self, tokens: Sequence[int], blocks: Sequence[int]) -> tuple[RadixNode, list[int]]:
        """Index the whole blocks of `tokens` (blocks[i] caches tokens[i*bs:(i+1)*bs]).

        Returns the deepest node of the inserted prefix and the blocks newly indexed (the caller retains
        those). Where the tree already caches a prefix, its own blocks stay and the caller's are not used.
        """
        n_blocks = min(len(tokens) // self.block_size, len(blocks))
        tokens = tuple(tokens[: n_blocks * self.block_size])
        found = self.match(tokens)
        if found.n_blocks == n_blocks:
            return found.node, []
        new_blocks = list(blocks[found.n_blocks : n_blocks])
        leaf = RadixNode(
            tokens=tokens[found.n_blocks * self.block_size :],
            blocks=new_blocks,
            parent=found.node,
            last_access=next(self._clock),
        )
        found.node.children[self._key(leaf.tokens, 0)] = leaf
        self.cached_blocks += len(new_blocks)
        self.evictable_blocks += len(new_blocks)
        return leaf, new_blocks

    def lock(self, node: RadixNode) -> None:
        """Protect `node` and its ancestors from eviction (counts nest)."""
        while node is not None:
            if node.lock == 0:
                self.evictable_blocks -= len(node.blocks)
            node.lock += 1
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        while node is not None:
            node.lock -= 1
            if node.lock < 0:
                raise AssertionError("radix node unlocked more often than locked")
            if node.lock == 0:
                self.evictable_blocks += len(node.blocks)
            node = node.parent

    def evict(self, n_blocks: int) -> list[int]:
        """Remove unlocked leaves, least recently used first, until n_blocks are gone (or none is left).

        Returns the removed blocks; the caller releases its references on them.
        """
        leaves = [(n.last_access, id(n), n) for n in self._nodes() if not n.children and n.lock == 0]
        heapq.heapify(leaves)
        freed: list[int] = []
        while leaves and len(freed) < n_blocks:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            del parent.children[self._key(leaf.tokens, 0)]
            freed.extend(leaf.blocks)
            self.cached_blocks -= len(leaf.blocks)
            self.evictable_blocks -= len(leaf.blocks)
            if not parent.children and parent.lock == 0:
                heapq.heappush(leaves, (parent.last_access, id(parent), parent))
        return freed

    def _nodes(self) -> list[RadixNode]:
        nodes, stack = [], [self.root]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children.values())
        return nodes
