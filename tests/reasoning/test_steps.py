"""Steps: parsing what the model wrote, running its tool calls (real sympy worker and sandbox), and answers."""

from __future__ import annotations

import json

from reasoning.steps import answer_choices, answer_of, parse_step


def test_a_json_tool_call_runs_and_the_tool_writes_the_result():
    step = parse_step('Calc: {"expression": "3*12 - 5"} => 30')  # the model's guessed result is replaced
    assert step.kind == "tool" and step.tool == "math_simplify" and step.tool_ok
    assert step.text == 'Calc: {"expression": "3*12 - 5"} => 31'
    assert json.loads(step.tool_input) == {"expression": "3*12 - 5"} and step.tool_output == "31"
    solved = parse_step('Solve: {"equations": ["x + y = 10", "x - y = 2"]}')
    assert solved.text.endswith("=> x = 6, y = 4") and solved.tool == "math_solve"


def test_the_plain_form_and_arithmetic_under_any_label_become_tool_calls():
    assert parse_step("Calc: 3*12 - 5 = 30").text == 'Calc: {"expression": "3*12 - 5"} => 31'
    assert parse_step("Integrate: 2*x from 0 to 3").tool_output == "9"
    assert parse_step("Limit: sin(x)/x as x -> 0").tool_output == "1"
    relabelled = parse_step("Multiply: 12*7 = 75")
    assert relabelled.text == 'Calc: {"expression": "12*7"} => 84' and relabelled.tool == "math_simplify"


def test_bad_tool_calls_come_back_as_error_text_and_invalid_steps():
    broken_json = parse_step('Calc: {"expression": "3*')
    assert broken_json.kind == "tool" and not broken_json.tool_ok and "not valid JSON" in broken_json.tool_output
    bad_syntax = parse_step('Calc: {"expression": "2 +* 2"}')
    assert not bad_syntax.tool_ok and bad_syntax.tool_output.startswith("Error")
    wrong_field = parse_step('Diff: {"formula": "x**2"}')
    assert not wrong_field.tool_ok and "expression" in wrong_field.tool_output


def test_thoughts_are_checked_for_false_arithmetic():
    assert parse_step("Thought: so 3*4 = 13 apples").kind == "thought"
    assert not parse_step("Thought: so 3*4 = 13 apples").tool_ok
    assert parse_step("Thought: so 3*4 = 12 apples").tool_ok and parse_step("He has 3 apples.").tool_ok


def test_run_steps_execute_in_the_sandbox():
    ran = parse_step('Run: {"code": "print(sum(range(5)))"}')
    assert ran.tool == "python_exec" and ran.tool_ok and ran.tool_output == "10" and ran.text.endswith("=> 10")
    failed = parse_step('Run: {"code": "print(1/0)"}')
    assert not failed.tool_ok and "ZeroDivisionError" in failed.tool_output
    hostile = parse_step('Run: {"code": "import socket; socket.create_connection((\'1.1.1.1\', 80))"}')
    assert not hostile.tool_ok


def test_answers_of_math_and_code():
    assert answer_of(parse_step("Answer: 180/3 = 60")) == "60" and answer_of(parse_step("Answer: x = 5")) == "5"
    code = parse_step("Answer:\n```python\ndef f(x):\n    return x + 1\n```")
    assert code.kind == "answer" and answer_of(code) == "def f(x):\n    return x + 1"
    assert answer_of(parse_step('Calc: {"expression": "1"}')) is None


def test_answer_choices_are_the_results_tools_computed():
    steps = [
        parse_step('Solve: {"equations": ["x + y = 10", "x - y = 2"]}'),
        parse_step('Calc: {"expression": "6*7"}'),
        parse_step('Calc: {"expression": "2 +* 2"}'),
        parse_step("Thought: maybe 5"),
    ]
    assert answer_choices(steps) == ["x = 6", "y = 4", "42"]
    # several solutions: only the whole set is an answer, never one root of it
    assert answer_choices([parse_step('Solve: {"equations": ["x**2 = 4"]}')]) == ["x = {-2, 2}"]
    assert (
        answer_of(parse_step("Answer: x = {-2, 2}")) == "{-2, 2}"
        and answer_of(parse_step("Answer: x >= 2")) == "x >= 2"
    )
