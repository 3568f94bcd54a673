"""`solve(problem, task_type=..., strategy=...)`: the reasoning search as one call, with its whole record.

from app import solve
solution = solve("What is 12 times 7?", task_type="math", strategy="mcts", seed=0)
solution.answer, solution.reward, solution.steps, solution.tree, solution.to_dict()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.engine import describe, shared_backends
from app.solution import PathCache, Solution
from reasoning.mcts import mcts
from reasoning.reward import LayeredReward, Problem, RewardWeights
from reasoning.search import MCTSConfig, Policy, SearchBudget, Strategy, best_of_n, greedy, self_consistency
from reasoning.tasks import TASKS, classify
from reasoning.value_model import ValueHead, ValueModel, has_value_head

if TYPE_CHECKING:
    from app.memory import SolvedProblems
    from app.runtime import Runtime
    from model.backends.backend import Backend

STRATEGIES: dict[str, Strategy] = {
    "greedy": greedy,
    "best_of_n": best_of_n,
    "self_consistency": self_consistency,
    "mcts": mcts,
}


@dataclass(frozen=True)
class SolveOptions:
    """What a search is checked against and how it runs, beyond the problem, strategy, budget and seed.

    truth / tests: ground truth or code asserts, when known. weights: the reward's layers. mcts_config: how draws
    are sampled and the tree grows. constrained: decode every step under the step grammar (llguidance); False lets
    the model write free text (an ablation: the caches are not used). use_cache: serve and keep solutions in the
    caches (the path cache, tier 3).
    """

    truth: str | None = None
    tests: tuple[str, ...] = ()
    weights: RewardWeights = RewardWeights()
    mcts_config: MCTSConfig = MCTSConfig()
    constrained: bool = True
    use_cache: bool = True

    @property
    def reuses(self) -> bool:
        """Whether the caches may serve and keep this search: only the plain question, searched as shipped, is
        reusable (a given truth or tests make it a check of this run; free text is another search)."""
        return self.use_cache and self.constrained and self.truth is None and not self.tests


DEFAULT_PATH_CACHE = PathCache()  # solve() without a runtime


def solve(
    problem: str,
    task_type: str = "auto",
    strategy: str = "mcts",
    budget: int | SearchBudget | None = None,
    seed: int | None = None,
    *,
    options: SolveOptions | None = None,
    runtime: Runtime | None = None,
    engine: Backend | None = None,
    memory: SolvedProblems | None = None,
    on_progress: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    value_model: str | Path | ValueHead | bool = True,
    **knobs: Any,
) -> Solution:
    """Search for a verified answer to `problem`.

    task_type: "math", "code" or "auto" (classified from the wording). strategy: a name in STRATEGIES.
    budget: iterations (int) or a SearchBudget. options: a SolveOptions; its fields may also be given as keywords
    (`truth=`, `tests=`, `weights=`, `mcts_config=`, `constrained=`, `use_cache=`), which override it.
    runtime: the engine and the path cache to use (the front ends pass theirs); else `engine` (or the engine the
    environment's Settings load) and the default path cache. Cached solutions are keyed by the model and adapter
    that found them (`model_key`).
    memory: tier 3 (`app.memory.SolvedProblems`): a verified near-duplicate solved before by the same model is
    reused, and a solution the search did not refute is stored. The front ends pass one; the default keeps nothing
    on disk.
    The result is deterministic for a given seed (default 0) on an engine in a given state: prompt tokens served
    from the prefix cache were computed in other batch shapes, which can change the last bits of the logits and so
    flip a sampled step (docs/BENCHMARKS.md, "Run-to-run variation"). on_progress gets a line per search iteration
    (MCTS: the answer it would return if stopped then, and a last line when a verified answer ends it early);
    should_stop() -> True ends the search early with the best path so far. on_step gets every step the search
    decodes, in any path, as a dict like `Solution.steps`' (a tool step once its tool ran). value_model: a value
    head (reasoning/value_model.py; a directory or a ValueHead) that joins agreement where no verifier judges an
    answer; True (default): the one saved beside the engine's reasoning adapter, if there is one; False: none.
    Raises ValueError for bad arguments (ValueModelError for a value head that cannot be read or does not fit),
    TypeError for an unknown keyword.
    """
    options = _options(options, knobs)
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
    model, cache, backend = _searcher(runtime, engine)
    key = PathCache.key(problem, kind, strategy, model)
    if options.reuses:
        if (hit := cache.get(key)) is not None:
            return replace(hit, cached=True, seconds=0.0)
        if memory is not None and (near := memory.recall(problem, kind, strategy, model=model)) is not None:
            return Solution(
                problem,
                kind,
                strategy,
                near.answer,
                near.steps,
                near.reward,
                [],
                {"prompt": 0, "generated": 0, "reused": 0},
                0.0,
                cached=True,
                cached_from=near.problem,
            )

    start = time.perf_counter()
    model, engine = backend()  # read again with the backend: a Settings apply since the look-up changes both
    key = PathCache.key(problem, kind, strategy, model)
    # A server takes no token-level grammar: its steps are free text cut at the task's stop strings.
    grammar = engine.grammar_compiler if options.constrained else None
    target = Problem(problem.strip(), kind, options.truth, tuple(options.tests))
    policy = Policy(
        engine,
        TASKS[kind],
        budget,
        seed=0 if seed is None else seed,
        should_stop=should_stop,
        grammar=grammar,
        task_type=kind,
        problem=target.text,
        on_step=(lambda step: on_step(step.to_dict())) if on_step else None,
        on_progress=on_progress,
    )
    policy.progress(f"{strategy} on a {kind} problem, budget {budget.iterations} iterations / {budget.tokens} tokens")
    reward = LayeredReward(options.weights, value_model=_value_model(value_model, engine, policy.adapter))
    result = STRATEGIES[strategy](target, TASKS[kind].prompt(problem), policy, reward, options.mcts_config)
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
    if options.reuses and solution.answer is not None:
        cache.put(key, solution)
        if memory is not None:
            memory.remember(problem, kind, strategy, solution.answer, solution.steps, solution.reward, model=model)
    return solution


def model_key(settings: Settings) -> str:
    """What a cached solution is keyed by: the model, its precision and its adapter (or the server and model)."""
    return describe(settings)


def _options(options: SolveOptions | None, knobs: dict[str, Any]) -> SolveOptions:
    """`options` with the keywords given as SolveOptions fields applied; TypeError names an unknown one."""
    known = {f.name for f in fields(SolveOptions)}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise TypeError(f"solve() got unknown keywords {unknown}; known: {sorted(known)} and the named parameters")
    if "tests" in knobs:
        knobs = {**knobs, "tests": tuple(knobs["tests"])}
    return replace(options or SolveOptions(), **knobs)


def _searcher(
    runtime: Runtime | None, engine: Backend | None
) -> tuple[str, PathCache, Callable[[], tuple[str, Backend]]]:
    """The model key, the path cache, and a function giving the backend to search with and its model key, read
    together (the backend loads only on a cache miss)."""
    if runtime is not None:

        def current() -> tuple[str, Backend]:
            settings, backend = runtime.current()
            return model_key(settings), backend

        return model_key(runtime.settings), runtime.path_cache, current
    if engine is not None:  # no settings to read an adapter from: the backend's own name
        return engine.name, DEFAULT_PATH_CACHE, lambda: (engine.name, engine)
    settings = Settings.from_env()
    key = model_key(settings)
    return key, DEFAULT_PATH_CACHE, lambda: (key, shared_backends.get(settings))


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
