"""Grounding: a tool call must work on the maths or numbers the problem states."""

from __future__ import annotations

from reasoning.grounding import cancelled_number, grounded, known_numbers, stated_arguments, stated_maths
from reasoning.steps import Step, parse_step


def call(text: str):
    return parse_step(text)


def test_stated_maths_finds_expressions_and_equations_but_not_english():
    assert stated_maths("Solve the system x + y = 10, x - y = 2. What is x?") == ("x + y = 10", "x - y = 2", "x")
    assert stated_maths("What is the limit of (x**2 - 9)/(x - 3) as x approaches 3?") == ("(x**2 - 9)/(x - 3)", "x")
    assert stated_maths("James writes a 3-page letter to 2 different friends") == ()


def test_symbolic_calls_must_use_the_stated_expression_operation_and_points():
    limit = "What is the limit of (x**2 - 9)/(x - 3) as x approaches 3?"
    assert grounded(call('Limit: {"expression": "(x**2 - 9)/(x - 3)", "point": "3", "variable": "x"}'), limit, [])
    assert not grounded(call('Limit: {"expression": "(x**2 - 9)/(x + 3)", "point": "3", "variable": "x"}'), limit, [])
    assert not grounded(call('Limit: {"expression": "(x**2 - 9)/(x - 3)", "point": "9", "variable": "x"}'), limit, [])
    infinity = "What is the limit of 1/x as x approaches infinity?"
    assert grounded(call('Limit: {"expression": "1/x", "point": "oo", "variable": "x"}'), infinity, [])
    assert not grounded(call('Limit: {"expression": "1/x", "point": "0", "variable": "x"}'), infinity, [])
    integral = "What is the integral of 2*x with respect to x (no constant)?"
    assert grounded(call('Integrate: {"expression": "2*x", "variable": "x"}'), integral, [])
    assert not grounded(call('Diff: {"expression": "2*x", "variable": "x"}'), integral, [])  # not the named operation
    definite = "What is the definite integral of 2*x + 1 from 0 to 3?"
    assert not grounded(call('Integrate: {"expression": "2*x + 1", "lower": "0", "upper": "2"}'), definite, [])
    simplify = "Simplify 4*a - a + 2*a."
    assert grounded(call('Simplify: {"expression": "4*a + 2*a - a"}'), simplify, [])  # equal under sympy
    assert not grounded(call('Simplify: {"expression": "2"}'), "Simplify (x + 1)**2 - x**2.", [])  # not stated
    assert grounded(
        call('Integrate: {"expression": "6", "lower": "1", "upper": "3", "variable": "x"}'),
        "What is the definite integral of 6 from 1 to 3?",
        [],
    )  # the only maths stated is a number
    system = "Solve the system x + y = 10, x - y = 2. What is x?"
    assert grounded(call('Solve: {"equations": ["y + x = 10", "x - y - 2 = 0"]}'), system, [])
    assert not grounded(call('Solve: {"equations": ["x + y = 10", "x - y = 3"]}'), system, [])


def test_word_problem_calls_must_use_the_problems_numbers_or_earlier_results():
    town = "A town of 2000 people grows by 10%. What is the new population?"
    assert grounded(call('Calc: {"expression": "2000 + 2000*10/100"}'), town, [])  # 100 from "%"
    assert not grounded(call('Calc: {"expression": "1000*1000"}'), town, [])
    baker = "A baker sells a dozen muffins a day for 5 days. How many muffins?"
    first = call('Calc: {"expression": "12*5"}')
    assert grounded(first, baker, []) and grounded(call('Calc: {"expression": "60 + 1"}'), baker, [first]) is False
    assert grounded(call('Calc: {"expression": "60*2"}'), "Twice the 60 apples", [])
    assert grounded(call("Thought: anything"), baker, [])


def test_known_numbers_are_the_problems_its_spelled_ones_and_earlier_results():
    problem = "Natalia sold 48 clips in April and half as many in May, at 1.50 dollars each."
    assert known_numbers(problem, []) == {"48", "1.5", "2"}
    result = Step("tool", 'Calc: {"expression": "48/2"}', tool="math_calculate", tool_output="24.0000", tool_ok=True)
    assert known_numbers(problem, [result]) == {"48", "1.5", "2", "24"}
    assert known_numbers("Weng earns $12 an hour. She babysat for 50 minutes.", []) == {"12", "50", "60", "24"}
    assert grounded(call('Calc: {"expression": "12*50/60"}'), "Weng earns $12 an hour. She babysat 50 minutes.", [])


def test_a_named_operation_on_a_stated_number_is_symbolic():
    constant = "What is the definite integral of 6 from 1 to 3?"
    assert grounded(call('Integrate: {"expression": "6", "variable": "x", "lower": "1", "upper": "3"}'), constant, [])
    assert not grounded(
        call('Integrate: {"expression": "6*3", "variable": "x", "lower": "1", "upper": "3"}'), constant, []
    )


def test_stated_arguments_are_what_a_symbolic_problem_lets_its_calls_pass():
    assert stated_arguments("What is the limit of 1/x as x approaches infinity?") == {
        "expression": ("1/x", "x"),
        "point": ("oo",),
    }  # the 1 of 1/x is no expression of its own
    assert stated_arguments("What is the limit of 1/x as x approaches -infinity?")["point"] == ("-oo",)
    assert stated_arguments("What is the definite integral of 6 from 1 to 3?") == {
        "expression": ("6", "1", "3"),
        "lower": ("1",),
        "upper": ("3",),
    }
    assert stated_arguments("Simplify (x + 1)**2 - x**2.") == {"expression": ("(x + 1)**2 - x**2",)}
    assert "point" not in stated_arguments("What is the limit of sin(x)/x as x approaches zero?")  # no verdict
    assert stated_arguments("A printer prints 45 pages in 3 minutes. How many pages in 8 minutes?") == {}


def test_a_number_that_cancels_out_is_not_used():
    assert cancelled_number("150/20*20") == "20" and cancelled_number("120 - 20 + 20") == "20"
    assert cancelled_number("20/100*150") is None and cancelled_number("45*8/3") is None
    assert cancelled_number("18*.5") is None and cancelled_number("2*20*.01") is None  # ".5" is one number, used
    assert cancelled_number("3*.5/.5") == ".5"
    assert cancelled_number("1/0") is None and cancelled_number("2^3") is None  # no value / nothing cancels
    percent = "What is 20% of 150?"
    assert not grounded(call('Calc: {"expression": "150/20*20"}'), percent, [])
    assert grounded(call('Calc: {"expression": "150*20/100"}'), percent, [])


def test_the_wording_picks_the_tool_and_its_arguments():
    from reasoning.grounding import stated_domain, tool_computed, wording_allows

    definite = "What is the definite integral of x from 0 to 4?"
    assert not wording_allows("Integrate", {"expression": "x"}, definite)  # bounds stated: a definite integral
    assert wording_allows("Integrate", {"expression": "x", "lower": "0", "upper": "4"}, definite)
    assert not wording_allows("Diff", {"expression": "x"}, "Find the value of x**2 from 0 to 4.")
    assert not wording_allows("Diff", {"expression": "x**3", "order": 2}, "What is the derivative of x**3?")
    assert wording_allows("Diff", {"expression": "x**3", "order": 2}, "What is the second derivative of x**3?")
    call = parse_step('Integrate: {"expression": "x", "lower": "0", "upper": "4"}')
    assert tool_computed(definite, "8", [call]) and not tool_computed(definite, "9", [call])
    assert not tool_computed("What is 4 times 2?", "8", [parse_step('Calc: {"expression": "4*2"}')])  # no operation
    assert stated_domain("Solve cos(t) = 0 for t in the interval [0, 2*pi].") == ("t >= 0", "t <= 2*pi")
    assert stated_domain("Solve x**2 = 4 for x between -3 and 0.") == ("x >= -3", "x <= 0")
    assert stated_domain("Solve x**2 = 4.") == ()
