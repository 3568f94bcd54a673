"""The layered reward of a finished reasoning path: correctness, step validity and cost, each its own class.

Every layer returns a number in [0, 1] and is reported on its own; `LayeredReward` weighs them into the
value the search maximises (cost counts against it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasoning.steps import Step, answer_of
from reasoning.tasks import check_equation_answer, check_math_answer, run_code_checks


@dataclass(frozen=True)
class Problem:
    text: str
    task_type: str  # "math" | "code"
    truth: str | None = None  # ground truth, when a benchmark supplies it
    tests: tuple[str, ...] = ()  # for code: assert statements the answer must pass


class Correctness:
    """1/0 where the answer can be checked: ground truth, the equation substituted back, or the code's tests.

    Otherwise the share of the other finished paths that reached the same answer (agreement), so an answer
    many independent rollouts agree on scores higher.
    """

    def __call__(self, problem: Problem, answer: str | None, peer_answers: Sequence[str]) -> float:
        if answer is None:
            return 0.0
        if problem.task_type == "code":
            return run_code_checks(answer, problem.tests) if problem.tests else _agreement(answer, peer_answers)
        if problem.truth is not None:
            return float(check_math_answer(answer, problem.truth))
        substituted = check_equation_answer(problem.text, answer)
        if substituted is not None:
            return float(substituted)
        return _agreement(answer, peer_answers)


def _agreement(answer: str, peers: Sequence[str]) -> float:
    if not peers:
        return 0.5
    counts = Counter(p.strip() for p in peers)
    return counts[answer.strip()] / len(peers)


class StepValidity:
    """Share of steps that are well formed: tool calls that ran, no repeated line, a final answer present."""

    def __call__(self, steps: Sequence[Step]) -> float:
        if not steps:
            return 0.0
        seen: set[str] = set()
        good = 0
        for step in steps:
            repeated = step.text in seen
            seen.add(step.text)
            good += int(step.tool_ok and not repeated and bool(step.text))
        has_answer = any(answer_of(s) is not None for s in steps)
        return (good / len(steps)) * (1.0 if has_answer else 0.5)


class Cost:
    """Generated tokens against the budget of one path (0 = free, 1 = the whole budget)."""

    def __call__(self, generated_tokens: int, token_budget: int) -> float:
        return min(1.0, generated_tokens / max(token_budget, 1))


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

    def __call__(
        self, problem: Problem, steps: Sequence[Step], peer_answers: Sequence[str], generated_tokens: int, token_budget: int
    ) -> dict[str, float]:
        """The breakdown of one path, with "total" the weighted value."""
        answer = next((answer_of(s) for s in reversed(steps) if answer_of(s) is not None), None)
        layers = {
            "correctness": self.correctness(problem, answer, peer_answers),
            "validity": self.validity(steps),
            "cost": self.cost(generated_tokens, token_budget),
        }
        w = self.weights
        layers["total"] = w.correctness * layers["correctness"] + w.validity * layers["validity"] - w.cost * layers["cost"]
        return layers
