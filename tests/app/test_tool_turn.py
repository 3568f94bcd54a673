"""What a tool-answered chat turn says: only verified maths, code run in the real sandbox on an example; LaTeX for
display from the real maths worker."""

from __future__ import annotations

from app.solve import Solution
from app.tool_turn import NO_VERIFIED_ANSWER, ToolTurn, as_latex, conclude, example_call
from reasoning.steps import Step, answer_of, parse_step


def solution(problem: str, steps: list[str], reward: dict[str, float], task_type: str = "math") -> Solution:
    """A Solution whose steps really ran (parse_step runs each tool), as the search would have built it."""
    parsed = [parse_step(text).to_dict() for text in steps]
    answer = next((answer_of(Step(**s)) for s in reversed(parsed) if s["kind"] == "answer"), None)
    return Solution(problem, task_type, "mcts", answer, parsed, reward, [], {}, 1.5)


VALID = {"correctness": 1.0, "validity": 1.0, "cost": 0.02, "total": 1.3}


def test_a_verified_maths_answer_is_stated_with_the_path_that_computed_it():
    turn = ToolTurn("What is 12 times 7?", "math")
    done, said = conclude(turn, solution("What is 12 times 7?", ['Calc: {"expression": "12*7"}', "Answer: 84"], VALID))
    assert said == "84" and done.status == "verified" and done.answer == "84"
    assert done.steps[0]["tool"] == "math_simplify" and done.steps[0]["tool_output"] == "84"


def test_no_figure_is_stated_that_no_tool_computed_or_that_did_not_verify():
    problem = "What is 12 times 7?"
    # an answer no tool on the path computed (a free-text model could write one)
    done, said = conclude(
        ToolTurn(problem, "math"), solution(problem, ['Calc: {"expression": "12*7"}', "Answer: 80"], VALID)
    )
    assert said == NO_VERIFIED_ANSWER and done.status == "unverified" and done.answer is None and "80" not in said
    # a computed answer on a path with an invalid step, or one a verifier refuted
    for reward in ({**VALID, "validity": 0.5}, {**VALID, "correctness": 0.0}):
        done, said = conclude(
            ToolTurn(problem, "math"), solution(problem, ['Calc: {"expression": "12*7"}', "Answer: 84"], reward)
        )
        assert said == NO_VERIFIED_ANSWER and done.answer is None
    done, said = conclude(ToolTurn(problem, "math"), solution(problem, [], {**VALID, "correctness": 0.0}))
    assert said == NO_VERIFIED_ANSWER


def test_a_code_answer_runs_in_the_sandbox_on_an_example():
    task = "Write a Python function that reverses a string"
    code = "Answer:\n```python\ndef reverse_string(s: str) -> str:\n    return s[::-1]\n```"
    done, said = conclude(ToolTurn(task, "code"), solution(task, [code], {**VALID, "correctness": 0.0}, "code"))
    assert done.status == "verified"
    assert said.endswith("Ran in the sandbox: `reverse_string('hello')` → `'olleh'`")
    run = done.steps[-1]
    assert run["tool"] == "python_exec" and run["tool_ok"] and run["tool_output"] == "'olleh'"

    broken = "Answer:\n```python\ndef reverse_string(s: str) -> str:\n    return s.reversed()\n```"
    done, said = conclude(ToolTurn(task, "code"), solution(task, [broken], VALID, "code"))
    assert done.status == "unverified" and "AttributeError" in said


def test_example_inputs_come_from_the_signature():
    assert example_call("def f(s: str, n: int, xs: list[int], flag=True): pass") == "f('hello', 7, [3, 1, 2])"
    assert example_call("def count(words):\n    return len(words)") == "count(['b', 'a'])"
    assert example_call("def g(thing): pass") is None  # nothing tells what a "thing" is
    assert example_call("x = 1") is None and example_call("def (:") is None


def test_tool_results_become_latex():
    assert as_latex("x**3*cos(x) + 3*x**2*sin(x)") == r"x^{3} \cos{\left(x \right)} + 3 x^{2} \sin{\left(x \right)}"
    assert as_latex("x = 2; x = 3") == r"x = 2;\quad x = 3"
    assert as_latex("x = {2, 3}") == r"x = \left\{2, 3\right\}"  # a whole solution set
    assert (
        as_latex("(x, y) = {(1, 3), (3, 1)}")
        == r"\left(x, y\right) = \left\{\left(1, 3\right), \left(3, 1\right)\right\}"
    )
    assert as_latex("Error: not maths") is None


def test_a_turn_survives_json_and_shows_each_tool_call_once():
    turn = ToolTurn("Solve x**2 - 5*x + 6 = 0", "math", rewritten_from=None)
    step = parse_step('Solve: {"equations": ["x**2 - 5*x + 6 = 0"]}').to_dict()
    grown = turn.with_step(step).with_step(step).with_step(parse_step("Thought: hmm").to_dict())
    assert len(grown.tried) == 1
    assert ToolTurn.from_json(grown.to_json()) == grown
    assert ToolTurn.from_json("") is None
