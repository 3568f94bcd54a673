"""Monte Carlo tree search over reasoning steps.

Each iteration selects a leaf by PUCT, expands it into K sibling next steps (decoded as one batch from the
node's cached prefix; one is the greedy step, the rest sampled), evaluates every new child by a greedy rollout to an answer (all K rollouts in
lockstep batches), scores the rollouts with the layered reward, and backs the values up the tree.
The result is the best-rewarded finished path and the whole tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reasoning.reward import LayeredReward, Problem
from reasoning.search import Path, Policy, SearchResult, _done, score


@dataclass(frozen=True)
class MCTSConfig:
    c_puct: float = 1.0
    children: int = 4  # K siblings per expansion
    temperature: float = 0.8  # for expansions; rollouts are greedy


@dataclass(eq=False)
class Node:
    path: Path
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    reward: dict[str, float] | None = None  # of the rollout that evaluated this node

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def puct(self, c_puct: float) -> float:
        prior = 1.0 / len(self.parent.children)
        return self.value + c_puct * prior * math.sqrt(self.parent.visits) / (1 + self.visits)


def mcts(
    problem: Problem, prompt: str, policy: Policy, reward: LayeredReward, config: MCTSConfig = MCTSConfig(),
    on_iteration: Callable[[str], None] | None = None,
) -> SearchResult:
    root = Node(policy.root(prompt))
    finished: list[Path] = []
    for iteration in range(policy.budget.iterations):
        if policy.exhausted():
            break
        if on_iteration is not None and finished:
            best = max(finished, key=lambda p: p.reward["total"])
            on_iteration(f"iteration {iteration + 1}/{policy.budget.iterations}: {len(finished)} paths scored, "
                         f"best so far {best.answer!r} (reward {best.reward['total']:.2f})")
        leaf = _select(root, config.c_puct)
        if _done(leaf.path, policy.budget):  # a terminal node: revisit its value
            _backpropagate(leaf, leaf.value if leaf.visits else 0.0)
            continue
        # One sibling is the model's own first choice (greedy), so the search never misses the greedy path.
        temperatures = [0.0] + [config.temperature] * (config.children - 1)
        children = [Node(p, leaf) for p in policy.extend([leaf.path] * config.children, temperatures)]
        leaf.children = children
        rollouts = policy.rollout([c.path for c in children], temperature=0.0)
        finished.extend(rollouts)
        score(finished, problem, reward, policy.budget)
        for child, rollout in zip(children, rollouts):
            child.reward = rollout.reward
            _backpropagate(child, rollout.reward["total"])
    if not finished:  # no iteration ran (budget already spent): one greedy path
        finished = policy.rollout([root.path], temperature=0.0)
        score(finished, problem, reward, policy.budget)
    best = max(finished, key=lambda p: (p.reward["total"], p.finished))
    return SearchResult(best, finished, policy.tokens, tree=_tree(root))


def _select(node: Node, c_puct: float) -> Node:
    while node.children:
        node = max(node.children, key=lambda c: c.puct(c_puct))
    return node


def _backpropagate(node: Node | None, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


def _tree(root: Node) -> list[dict[str, Any]]:
    """Every node: id, parent id, its step, visits, mean value and its rollout's reward breakdown."""
    nodes, ids, stack = [], {}, [root]
    while stack:
        node = stack.pop()
        ids[node] = len(ids)
        nodes.append({
            "id": ids[node],
            "parent": ids[node.parent] if node.parent is not None else None,
            "step": node.path.steps[-1].text if node.path.steps else "",
            "visits": node.visits,
            "value": round(node.value, 4),
            "reward": node.reward,
        })
        stack.extend(reversed(node.children))
    return nodes
