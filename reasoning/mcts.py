"""Monte Carlo tree search over reasoning steps.

Each iteration selects a node by PUCT and expands it into K candidate next steps, decoded as one batch from the
node's cached prefix: one is the greedy step (taken from the node's own greedy rollout when it has one, not
decoded again), the rest sampled. Candidates that wrote the same step are merged; the share of the draws that
wrote a step is its prior. Every new child is evaluated by a greedy rollout to an answer (all rollouts in
lockstep batches), the rollouts are scored with the layered reward, and the values are backed up the tree.

A small model often writes the same step in all K draws, which would leave a node one child and the search
nothing to choose from. So a node is widened (progressive widening): once its visits allow more children than it
has, it is expanded again with fresh samples, until a widening brings no new step.

The search starts from the greedy path and ends early once a verifier (a solution set checked against the
equations, the named tool's result, the stated examples) confirms a path that no other path could outscore; it
never expands below a node whose rollout is verified. Progress lines name the path it would return if stopped
then.

The result is the best-rewarded finished path and the whole tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from reasoning.reward import LayeredReward, Problem
from reasoning.search import TIE, MCTSConfig, Path, Policy, SearchResult, _done, best_path, score


@dataclass(eq=False)
class Node:
    path: Path
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    draws: int = 1  # expansion draws of the parent that wrote this step
    visits: int = 0
    value_sum: float = 0.0
    saturated: bool = False  # a widening found no new step: expand no more
    rollout: Path | None = None  # the finished path that evaluated this node
    reward: dict[str, float] | None = None  # of that rollout

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def prior(self) -> float:
        return self.draws / sum(c.draws for c in self.parent.children) if self.parent else 1.0

    def puct(self, c_puct: float) -> float:
        return self.value + c_puct * self.prior * math.sqrt(self.parent.visits) / (1 + self.visits)


def mcts(problem: Problem, prompt: str, policy: Policy, reward: LayeredReward, config: MCTSConfig) -> SearchResult:
    """The search (see the module docstring). It starts from the greedy path and stops as soon as a verified path
    scores within `TIE` of the most any path can score (`settled`): no search can then change the answer.
    A progress line per iteration goes to `policy.progress`."""
    root = Node(policy.root(prompt))
    (root.rollout,) = policy.rollout([root.path], temperature=0.0)
    finished: list[Path] = [root.rollout]
    score(finished, problem, reward, policy.budget)
    for iteration in range(policy.budget.iterations):
        best = best_path(finished)
        if settled(best, reward):
            policy.progress(
                f"stopped after {iteration} iterations: {best.answer!r} is verified "
                f"(reward {best.reward['total']:.2f}); no other path can score higher"
            )
            break
        if policy.exhausted():
            break
        policy.progress(
            f"iteration {iteration + 1}/{policy.budget.iterations}: {len(finished)} paths scored, "
            f"best so far {best.answer!r} (reward {best.reward['total']:.2f})"
        )
        node = _select(root, policy, config)
        if node is None:  # every node is terminal, saturated or verified: the tree is complete
            break
        new = _expand(node, policy, config)
        fresh = [c for c in new if c.rollout is None]
        for child, path in zip(fresh, policy.rollout([c.path for c in fresh], temperature=0.0)):
            child.rollout = path
            finished.append(path)
        score(finished, problem, reward, policy.budget)
        for child in new:
            child.reward = child.rollout.reward
            _backpropagate(child, child.rollout.reward["total"])
    return SearchResult(best_path(finished), finished, policy.tokens, tree=_tree(root))


def settled(best: Path, reward: LayeredReward) -> bool:
    """Whether the search can stop: the best path is verified and within `TIE` of the reward's ceiling, so no
    path the remaining budget could find would be chosen over it."""
    return best.verified and reward.ceiling - best.reward["total"] <= TIE


def _expandable(node: Node, policy: Policy, config: MCTSConfig) -> bool:
    """Whether `node` may take (more) children: not finished, not saturated, and its rollout not verified (greedy
    tails below a verified node cannot improve on its answer, only repeat it)."""
    if node.saturated or _done(node.path, policy.budget) or (node.rollout is not None and node.rollout.verified):
        return False
    return not node.children or len(node.children) < config.widening * math.sqrt(node.visits)


def _select(root: Node, policy: Policy, config: MCTSConfig) -> Node | None:
    """The node to expand: down the tree by PUCT until a node that may take (more) children. Where the best child's
    subtree has nothing left to expand, the node itself is widened if it can be; otherwise the next child is
    tried. None when nothing in the tree can be expanded."""

    def walk(node: Node) -> Node | None:
        if _expandable(node, policy, config):
            return node
        for child in sorted(node.children, key=lambda c: -c.puct(config.c_puct)):
            found = walk(child)
            if found is not None:
                return found
            if not node.saturated and not _done(node.path, policy.budget):
                return node
        return None

    return walk(root)


def _expand(node: Node, policy: Policy, config: MCTSConfig) -> list[Node]:
    """New children of `node` from K draws; returns those that are new (an existing step only gains draws).

    The first expansion's first draw is greedy: taken from the node's greedy rollout when it has one, so the
    search never misses the greedy path and does not decode it twice.
    """
    depth = len(node.path.steps)
    greedy: list[Path] = []
    if node.children:  # widening: all sampled
        drawn = policy.extend([node.path] * config.children, config.temperature)
    elif node.rollout is not None and len(node.rollout.steps) > depth:
        greedy = [node.rollout.prefix(depth + 1)]
        drawn = greedy + policy.extend([node.path] * (config.children - 1), config.temperature)
    else:
        drawn = policy.extend([node.path] * config.children, [0.0] + [config.temperature] * (config.children - 1))
    existing = {c.path.steps[-1].text: c for c in node.children}
    new: list[Node] = []
    for path in drawn:
        text = path.steps[-1].text
        if text in existing:
            existing[text].draws += 1
        else:
            existing[text] = child = Node(path, node)
            new.append(child)
    if greedy and new:
        new[0].rollout = node.rollout  # the greedy step's evaluation is the node's own rollout
    if node.children and not new:
        node.saturated = True
    node.children.extend(new)
    return new


def _backpropagate(node: Node | None, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


def _tree(root: Node) -> list[dict[str, Any]]:
    """Every node: id, parent id, its step, prior, visits, mean value and its rollout's reward breakdown."""
    nodes, ids, stack = [], {}, [root]
    while stack:
        node = stack.pop()
        ids[node] = len(ids)
        nodes.append(
            {
                "id": ids[node],
                "parent": ids[node.parent] if node.parent is not None else None,
                "step": node.path.steps[-1].text if node.path.steps else "",
                "prior": round(node.prior, 4),
                "visits": node.visits,
                "value": round(node.value, 4),
                "reward": node.reward,
            }
        )
        stack.extend(reversed(node.children))
    return nodes
