"""Strategies and reward layers against a tiny deterministic policy (a scripted engine), and real tools."""

from __future__ import annotations

import json

import pytest

from app.solve import solve
from model import Completion
from reasoning.reward import Correctness, Cost, LayeredReward, Problem, StepValidity
from reasoning.steps import Step, parse_step
from reasoning.tasks import check_equation_answer, check_math_answer, classify, run_code_checks


class CharTokenizer:
    eos_token_ids = ()

    def encode(self, text: str, add_bos=None) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


class ScriptedEngine:
    """Answers each request with the next line of a script chosen by the request's seed.

    `scripts(depth, seed, greedy)` -> the line; depth = lines already written after the problem.
    """

    def __init__(self, scripts) -> None:
        self.tokenizer = CharTokenizer()
        self.scripts = scripts
        self.calls: list[int] = []  # batch size of each generate_batch call
        self.task_types: set[str | None] = set()  # the task_type of every call

    def text_prompt(self, text: str, *, continuation: bool = False) -> list[int]:
        return self.tokenizer.encode(text)

    def generate_batch(self, prompts, params, task_type=None):
        self.calls.append(len(prompts))
        self.task_types.add(task_type)
        out = []
        for ids, p in zip(prompts, params):
            text = self.tokenizer.decode(ids)
            depth = len(text.split("Problem:")[-1].strip().splitlines()) - 1
            line = self.scripts(depth, p.seed, p.temperature == 0)
            out.append(Completion(text=line, token_ids=[0] * len(line), finish_reason="stop",
                                  prompt_tokens=len(ids), cached_tokens=len(ids) // 2, generated_tokens=len(line)))
        return out


def run(strategy: str, engine, truth: str | None = "42", budget: int = 6, seed: int = 0, **kw):
    return solve("What is six times seven?", task_type="math", strategy=strategy, budget=budget, seed=seed,
                 engine=engine, truth=truth, use_cache=False, **kw)


def stateful_engine():
    """The answer line repeats the Calc line's result, as a model copying the tool's output would."""
    def script(depth, seed, greedy):
        return "Calc: 6*6" if greedy and depth == 0 else (
            ["Calc: 6*7", "Calc: 6*8", "Calc: 5*7"][seed % 3] if depth == 0 else None)

    class Engine(ScriptedEngine):
        def generate_batch(self, prompts, params, task_type=None):
            self.calls.append(len(prompts))
            self.task_types.add(task_type)
            out = []
            for ids, p in zip(prompts, params):
                lines = self.tokenizer.decode(ids).split("Problem:")[-1].strip().splitlines()[1:]
                line = script(len(lines), p.seed, p.temperature == 0) or f"Answer: {lines[-1].split('= ')[-1]}"
                out.append(Completion(text=line, token_ids=[0] * len(line), finish_reason="stop",
                                      prompt_tokens=len(ids), cached_tokens=len(ids) - 10, generated_tokens=len(line)))
            return out

    return Engine(script)


def test_greedy_takes_the_models_first_choice_and_runs_its_tool_call():
    solution = run("greedy", stateful_engine())
    assert [s["text"] for s in solution.steps] == ["Calc: 6*6 = 36", "Answer: 36"]
    assert solution.steps[0]["tool"] == "math_simplify" and solution.steps[0]["tool_ok"]
    assert solution.answer == "36" and solution.reward["correctness"] == 0.0


def test_the_task_type_reaches_every_engine_call():
    """An MoE model's routers can bias experts per task type; the search passes the solved task's type on."""
    engine = stateful_engine()
    run("best_of_n", engine)
    assert engine.task_types == {"math"}


def test_best_of_n_picks_the_verified_path():
    engine = stateful_engine()
    solution = run("best_of_n", engine)
    assert solution.answer == "42" and solution.reward["correctness"] == 1.0 and solution.paths == 6
    assert max(engine.calls) == 6, "the n paths are decoded as one batch"


def test_self_consistency_returns_the_majority_answer():
    votes = iter(["Calc: 2+3", "Calc: 1+4", "Calc: 3+4"])  # 5, 5, 7

    class Engine(ScriptedEngine):
        def generate_batch(self, prompts, params, task_type=None):
            out = []
            for ids in prompts:
                lines = self.tokenizer.decode(ids).split("Problem:")[-1].strip().splitlines()[1:]
                line = next(votes) if not lines else f"Answer: {lines[-1].split('= ')[-1]}"
                out.append(Completion(line, [0], "stop", len(ids), generated_tokens=1))
            return out

    solution = run("self_consistency", Engine(None), truth=None, budget=3)
    assert solution.answer == "5"
    assert solution.reward["correctness"] == pytest.approx(0.5)  # one of the two other paths agrees


def test_mcts_finds_the_correct_sibling_and_reports_its_tree():
    engine = stateful_engine()
    solution = run("mcts", engine, budget=3)
    assert solution.answer == "42" and solution.reward["correctness"] == 1.0
    tree = solution.tree
    root = tree[0]
    assert root["parent"] is None and root["visits"] == sum(n["visits"] for n in tree if n["parent"] == 0)
    first_children = [n["step"] for n in tree if n["parent"] == 0]
    assert first_children[0] == "Calc: 6*6 = 36", "one sibling is the greedy step"
    assert set(first_children[1:]) <= {"Calc: 6*7 = 42", "Calc: 6*8 = 48", "Calc: 5*7 = 35"}
    assert engine.calls[0] == 4, "the K siblings of an expansion are one batch"
    assert solution.tokens["reused"] > 0
    again = run("mcts", stateful_engine(), budget=3)
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(again) == strip(solution), "the same seed gives the same search"
    json.dumps(solution.to_dict())


def test_solve_rejects_bad_arguments_and_caches_solved_problems():
    with pytest.raises(ValueError, match="strategy"):
        solve("1+1", strategy="beam", engine=stateful_engine())
    with pytest.raises(ValueError, match="task_type"):
        solve("1+1", task_type="poetry", engine=stateful_engine())
    with pytest.raises(ValueError, match="non-empty"):
        solve("   ", engine=stateful_engine())
    first = solve("What is six times seven??", strategy="greedy", engine=stateful_engine(), budget=2)
    second = solve("what is SIX times seven", strategy="greedy", engine=stateful_engine(), budget=2)
    assert not first.cached and second.cached and second.answer == first.answer


# ----- reward layers -------------------------------------------------------------------------------


def test_correctness_uses_truth_then_substitution_then_agreement():
    correct = Correctness()
    assert correct(Problem("6*7?", "math", truth="42"), "42.0", []) == 1.0
    assert correct(Problem("6*7?", "math", truth="$1,200"), "1200 dollars", []) == 1.0
    assert correct(Problem("Solve 3*x + 4 = 19 for x.", "math"), "x = 5", []) == 1.0
    assert correct(Problem("Solve 3*x + 4 = 19 for x.", "math"), "4", []) == 0.0
    assert correct(Problem("A riddle", "math"), "7", ["7", "7", "9", "1"]) == 0.5
    assert correct(Problem("A riddle", "math"), None, ["7"]) == 0.0


def test_code_correctness_runs_the_tests_in_the_sandbox():
    tests = ("assert double(2) == 4", "assert double(-1) == -2")
    assert run_code_checks("def double(x): return 2*x", tests) == 1.0
    assert run_code_checks("def double(x): return x + 2", tests) == 0.5
    assert run_code_checks("import os; os.system('echo pwned')", tests) == 0.0
    assert Correctness()(Problem("double", "code", tests=tests), "def double(x): return 2*x", []) == 1.0


def test_step_validity_penalises_failed_tools_repetition_and_no_answer():
    validity = StepValidity()
    good = [parse_step("Calc: 2+2"), parse_step("Answer: 4")]
    assert validity(good) == 1.0
    assert validity([parse_step("Calc: 2 +* 2"), parse_step("Answer: 4")]) == 0.5  # the tool call failed
    assert validity([Step("thought", "hm"), Step("thought", "hm"), parse_step("Answer: 1")]) == pytest.approx(2 / 3)
    assert validity([parse_step("Calc: 2+2")]) == 0.5  # no answer
    assert Cost()(100, 400) == 0.25 and Cost()(900, 400) == 1.0


def test_layered_reward_reports_every_layer_and_weighs_them():
    breakdown = LayeredReward()(Problem("6*7?", "math", truth="42"), [parse_step("Calc: 6*7"), parse_step("Answer: 42")],
                                [], generated_tokens=40, token_budget=400)
    assert breakdown == {"correctness": 1.0, "validity": 1.0, "cost": 0.1, "total": pytest.approx(1.0 + 0.3 - 0.01)}


def test_task_helpers():
    assert classify("Write a python function that reverses a string") == "code"
    assert classify("A train travels 60 km in 1.5 hours. What is its speed?") == "math"
    assert check_math_answer("0.5", "1/2") and not check_math_answer("3", "4")
    assert check_equation_answer("How many apples?", "3") is None
    run_step = parse_step("Run: print(sum(range(5)))")
    assert run_step.tool == "python_exec" and run_step.tool_output == "10" and run_step.text.endswith("-> 10")


def test_arithmetic_under_any_label_goes_to_the_tool_and_wrong_claims_are_invalid():
    relabelled = parse_step("Divide: 12*7 = 75")
    assert relabelled.text == "Calc: 12*7 = 84" and relabelled.tool == "math_simplify"
    assert parse_step("12*7 = 75").text == "Calc: 12*7 = 84"
    assert not parse_step("So 3*4 = 13 apples").tool_ok
    assert parse_step("So 3*4 = 12 apples").tool_ok and parse_step("He has 3 apples.").tool_ok


def test_a_derailed_path_ends_and_the_answer_is_what_follows_the_last_equals():
    from reasoning.search import Path, SearchBudget, _done
    from reasoning.steps import answer_of

    budget = SearchBudget()
    assert _done(Path([], [Step("thought", "")]), budget)
    assert _done(Path([], [parse_step("Calc: 1+1"), Step("thought", "Problem: Solve 2*x + 3 = 11 for x.")]), budget)
    assert not _done(Path([], [parse_step("Calc: 1+1")]), budget)
    assert answer_of(parse_step("Answer: 180/3 = 60")) == "60" and answer_of(parse_step("Answer: x = 5")) == "5"
