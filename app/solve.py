"""`solve(problem, task_type=..., strategy=...)`: the reasoning search as one call, with its whole record.

    from app import solve
    solution = solve("What is 12 times 7?", task_type="math", strategy="mcts", seed=0)
    solution.answer, solution.reward, solution.steps, solution.tree, solution.to_dict()
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.engine import shared_backends
from reasoning.mcts import MCTSConfig, mcts
from reasoning.reward import LayeredReward, Problem, RewardWeights
from reasoning.search import Policy, SearchBudget, best_of_n, greedy, self_consistency
from reasoning.tasks import TASKS, classify
from reasoning.value_model import ValueHead, ValueModel, has_value_head

if TYPE_CHECKING:
    from app.memory import SolvedProblems

STRATEGIES = ("greedy", "best_of_n", "self_consistency", "mcts")


@dataclass
class Solution:
    problem: str
    task_type: str
    strategy: str
    answer: str | None
    steps: list[dict[str, Any]]  # the chosen path: kind, text, tool, tool_input, tool_output, tool_ok
    reward: dict[str, float]  # correctness, validity, cost, total
    tree: list[dict[str, Any]]  # MCTS nodes (id, parent, step, visits, value, reward); [] for other strategies
    tokens: dict[str, int]  # prompt, generated, reused (prompt tokens served from the prefix cache)
    seconds: float
    paths: int = 0  # paths the search scored
    answers: dict[str, float] = field(default_factory=dict)  # each answer the search reached -> its best reward
    cached: bool = False  # served from the reasoning-path cache
    cached_from: str | None = None  # served from tier 3: the similar problem whose verified solution this is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PathCache:
    """Solutions of problems solved before, keyed by normalised text (an LRU of `capacity` entries).

    The memory tier's vector store can stand behind the same two methods for near-duplicates.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, Solution] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(problem: str, task_type: str, strategy: str) -> tuple:
        return (" ".join(re.sub(r"[^\w\s.=+*/^()-]", " ", problem.lower()).split()), task_type, strategy)

    def get(self, key: tuple) -> Solution | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            return None

    def put(self, key: tuple, solution: Solution) -> None:
        with self._lock:
            self._entries[key] = solution
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


_cache = PathCache()


def solve(
    problem: str,
    task_type: str = "auto",
    strategy: str = "mcts",
    budget: int | SearchBudget | None = None,
    seed: int | None = None,
    *,
    engine=None,
    truth: str | None = None,
    tests: tuple[str, ...] = (),
    weights: RewardWeights = RewardWeights(),
    mcts_config: MCTSConfig = MCTSConfig(),
    use_cache: bool = True,
    memory: SolvedProblems | None = None,
    constrained: bool = True,
    on_progress: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    value_model: str | Path | ValueHead | bool = True,
) -> Solution:
    """Search for a verified answer to `problem`.

    task_type: "math", "code" or "auto" (classified from the wording). strategy: one of STRATEGIES.
    budget: iterations (int) or a SearchBudget. truth / tests: ground truth or code asserts, when known.
    memory: tier 3 (`app.memory.SolvedProblems`): a verified near-duplicate solved before is reused, and a
    solution the search did not refute is stored. The front ends pass one; the default keeps nothing on disk.
    constrained: decode every step under the step grammar (llguidance); False lets the model write free text.
    The result is deterministic for a given seed (default 0) on an engine in a given state: prompt tokens served
    from the prefix cache were computed in other batch shapes, which can change the last bits of the logits and so
    flip a sampled step (docs/BENCHMARKS.md, "Run-to-run variation"). on_progress gets a line per search iteration
    (MCTS: the answer it would return if stopped then, and a last line when a verified answer ends it early);
    should_stop() -> True ends the search early with the best path so far. on_step gets every step the search
    decodes, in any path, as a dict like `Solution.steps`' (a tool step once its tool ran). value_model: a value
    head (reasoning/value_model.py; a directory or a ValueHead) that joins agreement where no verifier judges an
    answer; True (default): the one saved beside the engine's reasoning adapter, if there is one; False: none.
    Raises ValueError for bad arguments (ValueModelError for a value head that cannot be read or does not fit).
    """
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("problem must be a non-empty string")
    if task_type not in ("auto", *TASKS):
        raise ValueError(f"unknown task_type {task_type!r}; choose auto, {', '.join(TASKS)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    kind = classify(problem) if task_type == "auto" else task_type
    if isinstance(budget, int):
        if budget < 1:
            raise ValueError(f"budget must be at least 1 iteration, got {budget}")
        budget = SearchBudget(iterations=budget)
    budget = budget or SearchBudget()
    key = PathCache.key(problem, kind, strategy)
    if use_cache and constrained and truth is None and not tests and (hit := _cache.get(key)) is not None:
        return replace(hit, cached=True, seconds=0.0)
    if use_cache and truth is None and not tests and memory is not None:
        if (near := memory.recall(problem, kind, strategy)) is not None:
            return Solution(problem, kind, strategy, near.answer, near.steps, near.reward, [],
                            {"prompt": 0, "generated": 0, "reused": 0}, 0.0, cached=True, cached_from=near.problem)

    start = time.perf_counter()
    engine = engine or shared_backends.get(Settings.from_env())
    # A server takes no token-level grammar: its steps are free text cut at the task's stop strings.
    grammar = engine.grammar_compiler if constrained else None
    target = Problem(problem.strip(), kind, truth, tuple(tests))
    policy = Policy(engine, TASKS[kind], budget, seed=0 if seed is None else seed, should_stop=should_stop,
                    grammar=grammar, task_type=kind, problem=target.text,
                    on_step=(lambda step: on_step(step.to_dict())) if on_step else None)
    prompt = TASKS[kind].prompt(problem)
    reward = LayeredReward(weights, value_model=_value_model(value_model, engine, policy.adapter))
    if on_progress:
        on_progress(f"{strategy} on a {kind} problem, budget {budget.iterations} iterations / {budget.tokens} tokens")
    if strategy == "mcts":
        result = mcts(target, prompt, policy, reward, mcts_config, on_iteration=on_progress)
    else:
        result = {"greedy": greedy, "best_of_n": best_of_n, "self_consistency": self_consistency}[strategy](
            target, prompt, policy, reward)
    solution = Solution(
        problem=problem,
        task_type=kind,
        strategy=strategy,
        answer=result.best.answer,
        steps=[s.to_dict() for s in result.best.steps],
        reward=dict(result.best.reward),
        tree=result.tree,
        tokens={"prompt": result.tokens.prompt, "generated": result.tokens.generated, "reused": result.tokens.reused},
        seconds=time.perf_counter() - start,
        paths=len(result.paths),
        answers=_answers(result.paths),
    )
    if use_cache and constrained and truth is None and not tests and solution.answer is not None:
        _cache.put(key, solution)
        if memory is not None:
            memory.remember(problem, kind, strategy, solution.answer, solution.steps, solution.reward)
    return solution


def _value_model(choice: str | Path | ValueHead | bool, engine, adapter: str | None) -> ValueModel | None:
    """The value model `solve(value_model=)` asks for (see there), over `engine` under the steps' adapter."""
    if choice is False or choice is None:
        return None
    if choice is True:
        directory = getattr(engine, "adapter_paths", {}).get(adapter)
        if not has_value_head(directory):
            return None
        choice = directory
    head = choice if isinstance(choice, ValueHead) else ValueHead.load(choice)
    return ValueModel(head, engine, adapter)


def _answers(paths) -> dict[str, float]:
    best: dict[str, float] = {}
    for path in paths:
        if path.answer is not None:
            best[path.answer] = max(best.get(path.answer, float("-inf")), round(path.reward["total"], 4))
    return dict(sorted(best.items(), key=lambda item: -item[1]))
