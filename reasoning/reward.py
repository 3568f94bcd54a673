"""The layered reward of a finished reasoning path: correctness, step validity and cost, each its own class.

Every layer returns a number in [0, 1] and is reported on its own; `LayeredReward` weighs them into the
value the search maximises (cost counts against it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reasoning.grounding import grounded, tool_computed
from reasoning.steps import Step, answer_choices, answer_of, stated_value
from reasoning.tasks import check_code_answer, check_equation_answer, check_math_answer, run_code_checks
from reasoning.units import units_ok


@dataclass(frozen=True)
class Problem:
    text: str
    task_type: str  # "math" | "code"
    truth: str | None = None  # ground truth, when a benchmark supplies it
    tests: tuple[str, ...] = ()  # for code: statements (asserts) the answer must pass


@dataclass(frozen=True)
class Correctness:
    """How surely the answer is right, from the strongest check available (`verdict`):

    - math: the ground truth (1/0); else, where the problem states equations, whether the answer is their complete
      solution set (1/0, tasks.check_equation_answer); else, where the problem names the operation and states
      what it works on ("the derivative of x**3*sin(x)"), whether the answer is the result of that tool's call on
      it (1: the tool computed it; grounding.py checks the call);
    - code: the given tests, else the examples the problem states, run in the sandbox (share passed);
    - otherwise agreement: the share of the other finished paths that reached the same answer, each vote
      weighed (the search lets only paths whose every step is valid vote), so an answer many well-formed
      rollouts agree on scores higher; with a value model (reasoning/value_model.py), `value_share` of it is the
      head's estimate that this path is right, the rest agreement.

    `peers`: (answer, weight) of the other finished paths. `value`: the value model's estimate, if any.
    """

    value_share: float = 0.5

    def __call__(
        self,
        problem: Problem,
        answer: str | None,
        peers: Sequence[tuple[str, float]],
        steps: Sequence[Step] = (),
        value: float | None = None,
    ) -> float:
        if answer is None:
            return 0.0
        verdict = self.verdict(problem, answer, steps)
        if verdict is not None:
            return verdict
        agreement = _agreement(answer, peers)
        return agreement if value is None else self.value_share * value + (1 - self.value_share) * agreement

    def verdict(self, problem: Problem, answer: str | None, steps: Sequence[Step] = ()) -> float | None:
        """What a verifier says of the answer, in [0, 1]; None where none applies (agreement decides)."""
        if answer is None:
            return None
        if problem.task_type == "code":
            if problem.tests:
                return run_code_checks(answer, problem.tests)
            return check_code_answer(problem.text, answer)
        if problem.truth is not None:
            return float(check_math_answer(answer, problem.truth))
        substituted = check_equation_answer(problem.text, answer)
        if substituted is not None:
            return float(substituted)
        return 1.0 if tool_computed(problem.text, answer, steps) else None


def _agreement(answer: str, peers: Sequence[tuple[str, float]]) -> float:
    total = sum(weight for _, weight in peers)
    if total <= 0:
        return 0.5  # nobody to agree with
    return sum(weight for peer, weight in peers if peer.strip() == answer.strip()) / total


class StepValidity:
    """Share of steps that are well formed: tool calls that ran on what the problem states (grounding.py) in
    consistent units (units.py), thoughts without false arithmetic, no repeated step, and a math answer that states
    a result a tool computed in the unit the question asks for; halved when the path never answers."""

    def __call__(self, steps: Sequence[Step], problem: str) -> float:
        if not steps:
            return 0.0
        seen: set[str] = set()
        good = 0
        for i, step in enumerate(steps):
            repeated = step.text in seen
            seen.add(step.text)
            good += int(
                step.tool_ok
                and not repeated
                and bool(step.text)
                and _answer_computed(step, steps[:i])
                and grounded(step, problem, steps[:i])
                and units_ok(step, problem, steps[:i])
            )
        has_answer = any(answer_of(s) is not None for s in steps)
        return (good / len(steps)) * (1.0 if has_answer else 0.5)


def _answer_computed(step: Step, before: Sequence[Step]) -> bool:
    """A math answer must be what a tool computed earlier in the path (a code answer is checked by running it)."""
    answer = answer_of(step)
    if answer is None or "```" in step.text:
        return True
    return any(answer == stated_value(choice) for choice in answer_choices(list(before)))


@dataclass(frozen=True)
class Cost:
    """Generated tokens against the path's budget, plus a fixed cost per tool call (0 = free, capped at 1).

    Tool time enters as a nominal cost per call, not the measured seconds: those vary from run to run, and the
    same seed must give the same search.
    """

    per_tool_call: float = 0.02
    per_sandbox_run: float = 0.05

    def __call__(self, steps: Sequence[Step], generated_tokens: int, token_budget: int) -> float:
        tools = sum(
            self.per_sandbox_run if s.tool == "python_exec" else self.per_tool_call for s in steps if s.kind == "tool"
        )
        return min(1.0, generated_tokens / max(token_budget, 1) + tools)


@dataclass(frozen=True)
class RewardWeights:
    correctness: float = 1.0
    validity: float = 0.3
    cost: float = 0.1


@dataclass
class LayeredReward:
    weights: RewardWeights = field(default_factory=RewardWeights)
    correctness: Correctness = field(default_factory=Correctness)
    validity: StepValidity = field(default_factory=StepValidity)
    cost: Cost = field(default_factory=Cost)
    # path prompts -> estimates in [0, 1] (reasoning/value_model.ValueModel); asked only for answered paths that no
    # verifier judges
    value_model: Callable[[Sequence[Sequence[int]]], list[float]] | None = None

    def needs_value(self, problem: Problem, steps: Sequence[Step]) -> bool:
        """Whether the value model has a say on this path: it answers and no verifier judges the answer."""
        answer = next((answer_of(s) for s in reversed(steps) if answer_of(s) is not None), None)
        return (
            self.value_model is not None
            and answer is not None
            and self.correctness.verdict(problem, answer, steps) is None
        )

    def __call__(
        self,
        problem: Problem,
        steps: Sequence[Step],
        peers: Sequence[tuple[str, float]],
        generated_tokens: int,
        token_budget: int,
        value: float | None = None,
    ) -> dict[str, float]:
        """The breakdown of one path, with "total" the weighted value. `peers`: (answer, vote weight) of the other
        finished paths; `value`: the value model's estimate for the path (`value_model`), if any."""
        answer = next((answer_of(s) for s in reversed(steps) if answer_of(s) is not None), None)
        layers = {
            "correctness": self.correctness(problem, answer, peers, steps, value),
            "validity": self.validity(steps, problem.text),
            "cost": self.cost(steps, generated_tokens, token_budget),
        }
        w = self.weights
        layers["total"] = (
            w.correctness * layers["correctness"] + w.validity * layers["validity"] - w.cost * layers["cost"]
        )
        return layers

    def verified(self, problem: Problem, steps: Sequence[Step]) -> bool:
        """Whether a verifier (not agreement) confirms the path's answer: substitution into a solution set, the
        named tool's result, the stated examples or tests, the ground truth."""
        answer = next((answer_of(s) for s in reversed(steps) if answer_of(s) is not None), None)
        return self.correctness.verdict(problem, answer, steps) == 1.0

    @property
    def ceiling(self) -> float:
        """The most any path can score: correct, every step valid, at no cost."""
        return self.weights.correctness + self.weights.validity
