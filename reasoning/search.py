"""Search strategies over reasoning steps behind one interface, `Strategy`: greedy, best-of-n, self-consistency
(and MCTS in mcts.py).

A path is a token prefix plus the steps it holds. The `Policy` decodes the next step of many paths in one
`engine.generate_batch`, with each path's token ids as its prompt: paths that share a prefix (siblings,
rollouts from one node) are served from the engine's radix prefix cache instead of being recomputed. Given a
grammar compiler, every step is decoded under the step grammar (reasoning/step_grammar.py), so it is one of
the allowed forms and a tool call's arguments are valid for the tool's schema. The Policy is the only place
the search calls the engine.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model import SamplingParams
from model.backends.backend import Backend
from model.serving.grammar import GrammarCompiler, GrammarError
from reasoning.grounding import is_symbolic, known_numbers, stated_arguments
from reasoning.reward import LayeredReward, Problem
from reasoning.step_grammar import step_grammar
from reasoning.steps import Step, answer_choices, answer_of, parse_step
from reasoning.tasks import TASKS, TaskType

log = logging.getLogger(__name__)

# The per-request adapter reasoning steps run with, when the backend holds one by this name (app/engine.py loads
# `--adapter` under it); chat and plain generation never name it, so they keep the base model.
REASONING_ADAPTER = "reasoning"
# The same, for math word problems only (`--adapter-scope word-problems`): an adapter trained on GSM8K's worked
# solutions pulls symbolic problems away from their tools
# (docs/BENCHMARKS.md, "Third pass: 2,000 more rows from adapter2").
WORD_PROBLEM_ADAPTER = "word-problems"


def step_adapter(held: Sequence[str], task_type: str | None, problem: str | None) -> str | None:
    """The per-request adapter (of those the backend `held`) a problem's steps run with, or None: the base model."""
    if REASONING_ADAPTER in held:
        return REASONING_ADAPTER
    if WORD_PROBLEM_ADAPTER in held and task_type == "math" and problem is not None and not is_symbolic(problem):
        return WORD_PROBLEM_ADAPTER
    return None


@dataclass(frozen=True)
class SearchBudget:
    iterations: int = 8  # MCTS iterations, or paths sampled by best-of-n / self-consistency
    tokens: int = 4096  # generated tokens over the whole search
    seconds: float = 120.0
    max_steps: int = 6  # steps per path
    step_tokens: int | None = None  # most tokens per step; None = the task type's


@dataclass(frozen=True)
class MCTSConfig:
    """How a search samples and grows its tree: `temperature` for every sampled draw (best-of-n, self-consistency,
    MCTS expansions; greedy samples nothing), the rest MCTS's."""

    c_puct: float = 1.0
    children: int = 4  # K draws per expansion
    temperature: float = 0.8  # for sampled draws; rollouts are greedy
    widening: float = 1.0  # a node may hold up to widening * sqrt(visits) distinct children


@dataclass
class Path:
    ids: list[int] | str  # the prompt so far, as the backend takes it (token ids locally, text for a server)
    steps: list[Step] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # len(ids) after each step
    step_tokens: list[int] = field(default_factory=list)  # tokens the model generated for each step
    reward: dict[str, float] | None = None
    verified: bool = False  # a verifier (not agreement) confirms its answer; set with the reward

    @property
    def generated_tokens(self) -> int:
        return sum(self.step_tokens)

    def prefix(self, n: int) -> Path:
        """The path's first `n` steps (n >= 1), unscored."""
        return Path(self.ids[: self.ends[n - 1]], self.steps[:n], self.ends[:n], self.step_tokens[:n])

    def grown(self, step: Step, step_ids: list[int], generated: int) -> Path:
        """This path one step longer."""
        ids = self.ids + step_ids
        return Path(ids, [*self.steps, step], [*self.ends, len(ids)], [*self.step_tokens, generated])

    @property
    def answer(self) -> str | None:
        return next((answer_of(s) for s in reversed(self.steps) if answer_of(s) is not None), None)

    @property
    def finished(self) -> bool:
        return self.answer is not None


@dataclass
class TokenCounts:
    prompt: int = 0
    generated: int = 0
    reused: int = 0  # prompt tokens served from the prefix cache


class Policy:
    """The model as a step generator: next steps for many paths at once.

    `grammar`: constrain each step to the task's step forms (None: free text, cut at the task's stop strings).
    `task_type` is passed with every request, for MoE models whose routers bias experts per task type.
    `problem`: its text; given it, a Calc step may use only the numbers `grounding.known_numbers` allows, and a
    symbolic call only the expressions and points `grounding.stated_arguments` gives.
    `on_step`: called with every step as it is decoded (tool steps after their tool ran), in whichever path, so a
    front end can show the search's tool calls while it runs. `on_progress`: called with a line per search
    iteration (`progress`), for the strategies that iterate.
    Every step runs with the backend's per-request adapter for this problem when it holds one (`step_adapter`).
    """

    def __init__(
        self,
        engine: Backend,
        task: TaskType,
        budget: SearchBudget,
        seed: int,
        should_stop: Callable[[], bool] | None = None,
        grammar: GrammarCompiler | None = None,
        task_type: str | None = None,
        problem: str | None = None,
        on_step: Callable[[Step], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.problem = problem
        self.task = task
        self.task_type = task_type
        self.budget = budget
        self.seed = seed
        self.should_stop = should_stop or (lambda: False)
        self.grammar = grammar
        self.on_step = on_step
        self.on_progress = on_progress
        self.adapter = step_adapter(getattr(engine, "adapters", ()), task_type, problem)
        self.tokens = TokenCounts()
        self.started = time.perf_counter()
        self._draws = 0
        self._compiled: dict[str, str | None] = {}  # step grammar source -> compiled grammar (None: refused)

    @classmethod
    def math_sampler(cls, engine: Backend, question: str, budget: SearchBudget, seed: int) -> Policy:
        """A math policy for sampling paths of a training problem, decoding steps as `solve` does (the step
        grammar when the engine has one, the grounding of `question`)."""
        return cls(
            engine,
            TASKS["math"],
            budget,
            seed=seed,
            grammar=getattr(engine, "grammar_compiler", None),
            task_type="math",
            problem=question,
        )

    def exhausted(self) -> bool:
        """Out of tokens or time, or asked to stop (the search then returns the best it has)."""
        return (
            self.tokens.generated >= self.budget.tokens
            or time.perf_counter() - self.started >= self.budget.seconds
            or self.should_stop()
        )

    def progress(self, line: str) -> None:
        """Report how the search stands (a line for the front end's progress display)."""
        if self.on_progress is not None:
            self.on_progress(line)

    def root(self, prompt: str) -> Path:
        return Path(self.engine.text_prompt(prompt))

    def extend(self, paths: Sequence[Path], temperature: float | Sequence[float]) -> list[Path]:
        """Each path one step longer (tool steps run), decoded as one batch; seeds make it reproducible.

        `temperature`: one for all paths, or one per path.
        """
        temperatures = [temperature] * len(paths) if isinstance(temperature, (int, float)) else list(temperature)
        params = []
        for path, t in zip(paths, temperatures):
            self._draws += 1
            params.append(
                SamplingParams(
                    max_new_tokens=self.budget.step_tokens or self.task.step_tokens,
                    temperature=t,
                    seed=self.seed * 1_000_003 + self._draws,
                    **self._constraint(path),
                )
            )
        adapter = (
            {"adapter": self.adapter} if self.adapter else {}
        )  # (a backend without adapters takes no such argument)
        done = self.engine.generate_batch([p.ids for p in paths], params, task_type=self.task_type, **adapter)
        grown = []
        for path, completion in zip(paths, done):
            self.tokens.prompt += completion.prompt_tokens
            self.tokens.generated += completion.generated_tokens
            self.tokens.reused += completion.cached_tokens
            step = parse_step(completion.text)
            step_ids = self.engine.text_prompt(step.text + "\n", continuation=True)
            grown.append(path.grown(step, step_ids, completion.generated_tokens))
            if self.on_step is not None:
                self.on_step(step)
        return grown

    def _constraint(self, path: Path) -> dict[str, Any]:
        """The sampling options that end a step: the step grammar (which ends it itself), or stop strings."""
        if self.grammar is None:
            return {"stop": self.task.stop}
        grammar = self._step_grammar(path, narrowed=self.problem is not None)
        if grammar is None:  # llguidance gave up on the narrowed grammar (see step_grammar.py): any numbers
            grammar = self._step_grammar(path, narrowed=False)
        return {"logits_processor": self.grammar.processor(grammar)}

    def _step_grammar(self, path: Path, narrowed: bool) -> str | None:
        """The compiled step grammar for `path`'s next step (cached by source); None if llguidance refuses a
        narrowed one. `narrowed`: the tool calls may pass only what the problem states (reasoning/grounding.py)."""
        numbers = known_numbers(self.problem, path.steps) if narrowed else None
        arguments = stated_arguments(self.problem) if narrowed else None
        source = step_grammar(
            self.task.labels,
            answers=answer_choices(path.steps),
            numbers=numbers,
            arguments=arguments,
            code_answer=self.task.code_answer,
        )
        if source not in self._compiled:
            try:
                self._compiled[source] = self.grammar.lark(source)
            except GrammarError:
                if not narrowed:
                    raise
                log.warning(
                    "step grammar narrowed to numbers %s and arguments %s did not compile; the step may use any",
                    sorted(numbers),
                    arguments,
                )
                self._compiled[source] = None
        return self._compiled[source]

    def rollout(self, paths: Sequence[Path], temperature: float) -> list[Path]:
        """Extend every path (in lockstep batches) until it answers, stalls or runs out of steps or budget."""
        paths = list(paths)
        active = [i for i, p in enumerate(paths) if not _done(p, self.budget)]
        while active and not self.exhausted():
            for i, grown in zip(active, self.extend([paths[i] for i in active], temperature)):
                paths[i] = grown
            active = [i for i in active if not _done(paths[i], self.budget)]
        return paths


def _done(path: Path, budget: SearchBudget) -> bool:
    """Answered, out of steps, or off the rails: an empty line or a new "Problem:" (the model copying its few-shot
    examples) ends the path without an answer."""
    last = path.steps[-1].text if path.steps else None
    derailed = last is not None and (not last or last.startswith("Problem:"))
    return path.finished or len(path.steps) >= budget.max_steps or derailed


@dataclass
class SearchResult:
    best: Path
    paths: list[Path]  # every finished or abandoned path the search scored
    tokens: TokenCounts
    tree: list[dict[str, Any]] = field(default_factory=list)


def score(paths: Sequence[Path], problem: Problem, reward: LayeredReward, budget: SearchBudget) -> None:
    """Reward every path, each against the answers of all the others (agreement, where nothing else checks, and the
    reward's value model if it has one). Only paths whose every step is valid vote: several paths that miscopied the problem the same way would
    otherwise outvote one that copied it right."""
    validity = [reward.validity(p.steps, problem.text) for p in paths]
    votes = [(i, p.answer, 1.0) for i, (p, v) in enumerate(zip(paths, validity)) if p.answer is not None and v == 1.0]
    values: list[float | None] = [None] * len(paths)
    judged = [i for i, p in enumerate(paths) if reward.needs_value(problem, p.steps)]
    if judged:  # one batch for every path the value model has a say on
        for i, value in zip(judged, reward.value_model([paths[i].ids for i in judged])):
            values[i] = value
    for i, path in enumerate(paths):
        peers = [(answer, v) for j, answer, v in votes if j != i]
        path.reward = reward(problem, path.steps, peers, path.generated_tokens, budget.tokens, values[i])
        path.verified = reward.verified(problem, path.steps)


TIE = 0.02  # rewards this close count as equal when choosing the best path


def best_path(paths: Sequence[Path], tie: float = TIE) -> Path:
    """The highest-rewarded path. Rewards within `tie` of the best count as equal. Among those, a verified path
    whose every step is valid (so every number it used is the problem's own or a result) wins, the one with the
    fewest steps first: a longer verified path only repeats or pads the work. Otherwise the path found first
    wins: the greedy one where it is among them (a few tokens of cost should not overrule the model's own first
    choice)."""
    top = max(p.reward["total"] for p in paths)
    near = [p for p in paths if p.reward["total"] >= top - tie]
    return min(
        near,
        key=lambda p: (
            (0, len(p.steps), p.generated_tokens) if p.verified and p.reward["validity"] == 1.0 else (1, 0, 0)
        ),
    )


# Every strategy: the problem, its prompt, the policy (budget, seed, callbacks), the reward, and the sampling config.
Strategy = Callable[[Problem, str, Policy, LayeredReward, MCTSConfig], SearchResult]


def greedy(problem: Problem, prompt: str, policy: Policy, reward: LayeredReward, config: MCTSConfig) -> SearchResult:
    """The model's first choice at every step (temperature 0; `config` has nothing for it)."""
    (path,) = policy.rollout([policy.root(prompt)], temperature=0.0)
    score([path], problem, reward, policy.budget)
    return SearchResult(path, [path], policy.tokens)


def _sampled(prompt: str, policy: Policy, temperature: float) -> list[Path]:
    root = policy.root(prompt)
    return policy.rollout([root] * max(1, policy.budget.iterations), temperature)


def best_of_n(problem: Problem, prompt: str, policy: Policy, reward: LayeredReward, config: MCTSConfig) -> SearchResult:
    """n sampled paths; the one the reward ranks highest (verifier-guided selection)."""
    paths = _sampled(prompt, policy, config.temperature)
    score(paths, problem, reward, policy.budget)
    return SearchResult(best_path(paths), paths, policy.tokens)


def self_consistency(
    problem: Problem, prompt: str, policy: Policy, reward: LayeredReward, config: MCTSConfig
) -> SearchResult:
    """n sampled paths; the answer most of them reach (majority vote), and the first path that reached it."""
    paths = _sampled(prompt, policy, config.temperature)
    score(paths, problem, reward, policy.budget)
    votes = Counter(p.answer.strip() for p in paths if p.answer is not None)
    if not votes:
        return SearchResult(paths[0], paths, policy.tokens)
    winner = votes.most_common(1)[0][0]
    return SearchResult(
        next(p for p in paths if p.answer is not None and p.answer.strip() == winner), paths, policy.tokens
    )
