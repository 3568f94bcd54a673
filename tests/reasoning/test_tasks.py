"""Task types: classification, prompts with the nearest few-shot examples, and the verifiers."""

from __future__ import annotations

from reasoning.fewshot import MATH_EXAMPLES, nearest
from reasoning.tasks import (
    TASKS,
    check_code_answer,
    check_equation_answer,
    check_math_answer,
    classify,
    stated_examples,
)


def test_classify_tells_code_from_math():
    assert classify("Write a python function that reverses a string") == "code"
    assert classify('def add(a, b):\n    """Add.\n    >>> add(1, 2)\n    3\n    """') == "code"
    assert classify("A train travels 60 km in 1.5 hours. What is its speed?") == "math"
    assert classify("What is the derivative of x**3?") == "math"
    assert classify("Implement a function that returns the list of primes below n.") == "code"
    assert classify("What is the derivative of the function x**2 + 1?") == "math"
    assert classify("A string of 12 lights costs 3 dollars. How much do 4 strings cost?") == "math"


def test_the_prompt_shows_the_nearest_examples_last_and_ends_with_the_problem():
    prompt = TASKS["math"].prompt("What is 20% of 150?")
    assert prompt.endswith("Problem: What is 20% of 150?\n")
    assert prompt.split("Problem: ")[-2].startswith("What is 30% of 70?\nCalc:")  # the nearest example, just before
    assert prompt.count("Problem: ") == TASKS["math"].shots + 1
    shown = nearest(MATH_EXAMPLES, "Factor x**2 + 7*x + 12.", 2)
    assert [e.problem for e in shown][-1].startswith("Factor x**2 + 3*x + 2")  # the most similar comes last
    code = TASKS["code"].prompt("def f(x):\n    pass")
    assert code.endswith("Task:\ndef f(x):\n    pass\n") and "```python" in code


def test_math_answers_compare_as_maths():
    assert check_math_answer("0.5", "1/2") and check_math_answer("x = 4", "4") and check_math_answer("$1,200", "1200")
    assert check_math_answer("(x + 3)*(x - 3)", "x**2 - 9") and not check_math_answer("3", "4")


def test_substitution_into_equations_and_systems():
    assert check_equation_answer("How many apples?", "3") is None
    assert check_equation_answer("Solve 2*(x + 3) = 16 for x.", "x = 5") is True
    assert check_equation_answer("Solve 2*(x + 3) = 16 for x.", "13/2") is False
    assert check_equation_answer("Solve the system x + 2*y = 8, x - y = 2. What is y?", "y = 2") is True
    assert check_equation_answer("Solve the system x + 2*y = 8, x - y = 2. What is y?", "4") is False


def test_an_equation_is_answered_by_its_whole_solution_set():
    quadratic = "Solve x**2 - 5*x + 6 = 0 for x."
    assert check_equation_answer(quadratic, "2") is False  # satisfies the equation, but is half the answer
    assert check_equation_answer(quadratic, "{3, 2}") is True and check_equation_answer(quadratic, "x = {2, 3}") is True
    assert check_equation_answer(quadratic, "{2, 3, 4}") is False
    system = "Solve the system x + y = 4, x*y = 3."
    assert (
        check_equation_answer(system, "{(3, 1), (1, 3)}") is True and check_equation_answer(system, "(1, 3)") is False
    )
    sine = "Solve sin(x) = 0 for x in the interval [0, 2*pi]."  # the interval's solutions, all of them
    assert check_equation_answer(sine, "{0, pi}") is False and check_equation_answer(sine, "{0, pi, 2*pi}") is True
    assert check_equation_answer("Solve sin(x) = 0 for x where x is small.", "0") is False  # not bounded: {0, pi}
    assert check_equation_answer("Solve sin(x) = 0 for x between zero and pi.", "0") is None  # bound not read
    assert check_equation_answer("Solve 3*x - 2 > 4 for x.", "x > 2") is True
    assert check_equation_answer("Solve 3*x - 2 > 4 for x.", "x > 3") is False
    assert check_math_answer("{3, 2}", "{2, 3}") and not check_math_answer("2", "{2, 3}")
    assert check_math_answer("{(3, 1), (1, 3)}", "{(1, 3), (3, 1)}") and not check_math_answer(
        "{1, 3}", "{(1, 3), (3, 1)}"
    )
    assert check_math_answer("2 < x", "x > 2") and not check_math_answer("x > 3", "x > 2")


def test_code_examples_are_read_from_the_problem_and_run_in_the_sandbox():
    problem = 'def inc(x):\n    """ Add one.\n    >>> inc(1)\n    2\n    >>> inc(-1)\n    0\n    """'
    assert stated_examples(problem) == (("inc(1)", "2"), ("inc(-1)", "0"))
    assert stated_examples("Write add(a, b).\nExample: add(1, 2) == 3\nadd(0, 0) ➞ 0") == (
        ("add(1, 2)", "3"),
        ("add(0, 0)", "0"),
    )
    assert check_code_answer(problem, "def inc(x):\n    return x + 1") == 1.0
    assert check_code_answer(problem, "def inc(x):\n    return abs(x) + 1") == 0.5
    assert check_code_answer(problem, "def inc(x):\n    while True: pass") == 0.0  # killed by the sandbox's timeout
    assert check_code_answer("Write a function.", "def f(): pass") is None
    strings = 'def hi(name):\n    """\n    >>> hi(\'Bo\')\n    \'hi Bo\'\n    """'
    assert check_code_answer(strings, "def hi(name):\n    return 'hi ' + name") == 1.0
