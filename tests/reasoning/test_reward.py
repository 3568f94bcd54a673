"""Each reward layer on its own, and their weighing (real sympy worker and sandbox behind the verifiers)."""

from __future__ import annotations

import pytest

from reasoning.reward import Correctness, Cost, LayeredReward, Problem, RewardWeights, StepValidity
from reasoning.steps import Step, parse_step

SIX_SEVEN = "What is six times seven?"


def test_correctness_uses_truth_then_substitution_then_weighted_agreement():
    correct = Correctness()
    assert correct(Problem("6*7?", "math", truth="42"), "42.0", []) == 1.0
    assert correct(Problem("6*7?", "math", truth="$1,200"), "1200 dollars", []) == 1.0
    assert correct(Problem("Solve 3*x + 4 = 19 for x.", "math"), "5", []) == 1.0
    assert correct(Problem("Solve 3*x + 4 = 19 for x.", "math"), "4", [("4", 1.0)]) == 0.0  # agreement cannot save it
    system = Problem("Solve the system x + y = 10, x - y = 2. What is x?", "math")
    assert correct(system, "6", []) == 1.0 and correct(system, "4", []) == 0.0
    riddle = Problem("A riddle", "math")
    assert correct(riddle, "7", [("7", 1.0), ("7", 1.0), ("9", 1.0), ("1", 1.0)]) == 0.5
    assert correct(riddle, "7", [("7", 0.5), ("9", 1.0)]) == pytest.approx(1 / 3)  # votes weighed by validity
    assert correct(riddle, "7", []) == 0.5 and correct(riddle, None, [("7", 1.0)]) == 0.0


def test_code_correctness_runs_given_tests_or_the_problems_examples_in_the_sandbox():
    correct = Correctness()
    tests = ("assert double(2) == 4", "assert double(-1) == -2")
    assert correct(Problem("double", "code", tests=tests), "def double(x): return 2*x", []) == 1.0
    assert correct(Problem("double", "code", tests=tests), "def double(x): return x + 2", []) == 0.5
    stated = Problem(
        'def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n    >>> double(0)\n    0\n    """', "code"
    )
    assert correct(stated, "def double(x):\n    return x + 2", []) == 0.5  # double(2) passes, double(0) fails
    assert correct(stated, "def double(x):\n    return x + x", []) == 1.0
    assert correct(stated, "import os\nos.system('echo pwned')", []) == 0.0
    assert correct(Problem("Write a function that doubles.", "code"), "def f(x): return 2*x", []) == 0.5


def test_step_validity_penalises_failed_tools_ungrounded_calls_repetition_and_no_answer():
    validity = StepValidity()
    answered = [parse_step('Calc: {"expression": "6*7"}'), parse_step("Answer: 42")]
    assert validity(answered, SIX_SEVEN.replace("six", "6").replace("seven", "7")) == 1.0
    failed_first = [
        parse_step('Calc: {"expression": "2 +* 2"}'),
        parse_step('Calc: {"expression": "2 + 2"}'),
        parse_step("Answer: 4"),
    ]
    assert validity(failed_first, "What is 2 plus 2?") == pytest.approx(2 / 3)
    repeated = [Step("thought", "hm"), Step("thought", "hm"), *answered]
    assert validity(repeated, "What is 6 times 7?") == pytest.approx(3 / 4)
    assert validity(answered[:1], "What is 6 times 7?") == 0.5  # no answer
    ungrounded = [parse_step('Calc: {"expression": "6*1000"}'), parse_step("Answer: 6000")]
    assert validity(ungrounded, "What is 6 times 7?") == 0.5
    uncomputed = [parse_step('Calc: {"expression": "6*7"}'), Step("answer", "Answer: 43")]
    assert validity(uncomputed, "What is 6 times 7?") == 0.5  # an answer no tool computed


def test_cost_counts_tokens_against_the_budget_and_a_fixed_price_per_tool_call():
    cost = Cost()
    assert cost([], 100, 400) == 0.25 and cost([], 900, 400) == 1.0
    calls = [parse_step('Calc: {"expression": "1+1"}'), parse_step('Run: {"code": "print(1)"}')]
    assert cost(calls, 0, 400) == pytest.approx(0.02 + 0.05)


def test_layered_reward_reports_every_layer_and_weighs_them():
    steps = [parse_step('Calc: {"expression": "6*7"}'), parse_step("Answer: 42")]
    breakdown = LayeredReward()(Problem("What is 6 times 7?", "math", truth="42"), steps, [], 40, 400)
    assert breakdown == {
        "correctness": 1.0,
        "validity": 1.0,
        "cost": pytest.approx(0.12),
        "total": pytest.approx(1.0 + 0.3 - 0.012),
    }
    heavy = LayeredReward(RewardWeights(correctness=0.0, validity=1.0, cost=1.0))
    assert heavy(Problem("What is 6 times 7?", "math"), steps, [], 40, 400)["total"] == pytest.approx(1.0 - 0.12)
