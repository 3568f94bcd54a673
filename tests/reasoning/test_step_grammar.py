"""The step grammar on the default model's real tokenizer: whatever the logits say (random logits stand in for a
model that tries everything), each step is one of the allowed forms, a tool call's arguments are valid for the
tool's own schema, and a math answer is one of the path's tool results."""

from __future__ import annotations

import json

import jsonschema
import pytest

from model.serving.grammar import GrammarCompiler
from reasoning.step_grammar import step_grammar
from reasoning.steps import TOOL_LABELS, step_tools
from reasoning.tasks import TASKS
from tests.model.serving.test_grammar import sample_under

MATH_LABELS = TASKS["math"].labels


def accepts(compiler: GrammarCompiler, tokenizer, grammar: str, text: str) -> bool:
    processor = compiler.processor(grammar)
    return processor.matcher.consume_tokens(tokenizer.encode(text, add_bos=False)) and processor.accepting


@pytest.mark.parametrize("seed", range(8))
def test_random_logits_always_give_a_well_formed_step(compiler, tokenizer, seed: int) -> None:
    answers = ["x = 6", "42"]
    text = tokenizer.decode(sample_under(compiler, compiler.lark(step_grammar(MATH_LABELS, answers=answers)), seed))
    assert text.endswith("\n") and text.count("\n") == 1
    label, _, rest = text.strip().partition(": ")
    assert label in (*MATH_LABELS, "Thought", "Answer"), text
    if label == "Answer":
        assert rest in answers
    elif label != "Thought":
        arguments = json.loads(rest)
        jsonschema.validate(arguments, step_tools()[TOOL_LABELS[label]].schema)
        assert text.strip() == f"{label}: {json.dumps(arguments)}"  # compact, as the few-shot examples are written


def test_the_grammar_admits_the_forms_and_refuses_what_a_small_model_gets_wrong(compiler, tokenizer) -> None:
    grammar = compiler.lark(step_grammar(MATH_LABELS, answers=["31"]))
    for good in [
        'Calc: {"expression": "3*12 - 5"}\n',
        'Calc: {"expression": "-3"}\n',
        "Answer: 31\n",
        'Solve: {"equations": ["x + y = 10", "x - y = -2"], "variables": ["x"]}\n',
        'Limit: {"expression": "sin(x)/x", "point": "oo", "variable": "x"}\n',
        'Integrate: {"expression": "6", "variable": "x", "lower": "1", "upper": "pi/2"}\n',
        "Thought: the price per pen comes first\n",
    ]:
        assert accepts(compiler, tokenizer, grammar, good), good
    for bad in [
        "Integral: 2*x\n",  # an invented label
        'Calc: {"expression": "20% of 150"}\n',  # not maths syntax
        'Calc: {"expression": "1000000000000"}\n',  # a runaway number
        'Calc: {"expression": "3*12 = 36"}\n',  # a result is the tool's to write
        'Calc: {"expression": ", "}\n',
        'Solve: {"equations": ["x + 2"]}\n',  # not an equation
        'Limit: {"expression": "1/x", "point": "infinity", "variable": "x"}\n',
        'Diff: {"expression": "x**2", "variable": null}\n',
        'Calc: {"expression": "1", "extra": "1"}\n',
        "Answer: 32\n",  # not a result any tool computed
        'Run: {"code": "print(1)"}\n',
    ]:  # not a math tool
        assert not accepts(compiler, tokenizer, grammar, bad), bad


def test_no_answer_is_allowed_before_a_tool_has_computed_one(compiler, tokenizer) -> None:
    grammar = compiler.lark(step_grammar(MATH_LABELS, answers=[]))
    assert not accepts(compiler, tokenizer, grammar, "Answer: 4\n")
    assert accepts(compiler, tokenizer, grammar, 'Factor: {"expression": "x**2 - 4"}\n')


def test_given_numbers_a_calc_call_may_use_only_those(compiler, tokenizer) -> None:
    grammar = compiler.lark(step_grammar(MATH_LABELS, numbers=["48", "2", "0.5"]))
    for good in ['Calc: {"expression": "48 + 48/2"}\n', 'Calc: {"expression": "-(48*0.5)"}\n']:
        assert accepts(compiler, tokenizer, grammar, good), good
    for bad in [
        'Calc: {"expression": "45 - 20"}\n',
        'Calc: {"expression": "480/2"}\n',
        'Calc: {"expression": "48*2.5"}\n',
        'Calc: {"expression": "0.55"}\n',
    ]:
        assert not accepts(compiler, tokenizer, grammar, bad), bad
    # a set that llguidance could not check once its length was bounded (maxLength 80) now compiles
    assert accepts(
        compiler,
        tokenizer,
        compiler.lark(step_grammar(MATH_LABELS, numbers=["10", "20", "1", "2"])),
        'Calc: {"expression": "10*20 - 1"}\n',
    )
    # other tools are not narrowed, and without numbers Calc takes any
    assert accepts(compiler, tokenizer, grammar, 'Solve: {"equations": ["3*x = 7"], "variables": ["x"]}\n')
    assert accepts(
        compiler, tokenizer, compiler.lark(step_grammar(MATH_LABELS, numbers=[])), 'Calc: {"expression": "45 - 20"}\n'
    )


def test_given_arguments_a_symbolic_call_passes_only_the_stated_expression_and_point(compiler, tokenizer) -> None:
    arguments = {"expression": ["1/x", "x", "1"], "point": ["oo"]}
    grammar = compiler.lark(step_grammar(MATH_LABELS, arguments=arguments))
    assert accepts(compiler, tokenizer, grammar, 'Limit: {"expression": "1/x", "point": "oo", "variable": "x"}\n')
    for bad in [
        'Limit: {"expression": "1/x", "point": "0", "variable": "x"}\n',
        'Limit: {"expression": "1/x + 1", "point": "oo", "variable": "x"}\n',
        'Diff: {"expression": "x**2", "variable": "x"}\n',
    ]:
        assert not accepts(compiler, tokenizer, grammar, bad), bad
    # Calc keeps its own narrowing (numbers), and Solve's equations are not narrowed
    assert accepts(compiler, tokenizer, grammar, 'Calc: {"expression": "2*3"}\n')
    assert accepts(compiler, tokenizer, grammar, 'Solve: {"equations": ["3*x = 7"], "variables": ["x"]}\n')


def test_stated_bounds_must_be_passed_and_solve_takes_inequalities(compiler, tokenizer) -> None:
    grammar = compiler.lark(step_grammar(MATH_LABELS, arguments={"expression": ["x"], "lower": ["0"], "upper": ["4"]}))
    assert accepts(compiler, tokenizer, grammar, 'Integrate: {"expression": "x", "lower": "0", "upper": "4"}\n')
    assert not accepts(compiler, tokenizer, grammar, 'Integrate: {"expression": "x", "variable": "x"}\n')
    for inequality in [
        'Solve: {"equations": ["2*x + 1 > 7"]}\n',
        'Solve: {"equations": ["sin(x) = 0", "x >= 0", "x <= 2*pi"]}\n',
    ]:
        assert accepts(compiler, tokenizer, grammar, inequality), inequality
    assert not accepts(compiler, tokenizer, grammar, 'Solve: {"equations": ["x >> 2"]}\n')
    bounded = compiler.lark(step_grammar(MATH_LABELS, arguments={"domain": ["x >= 0", "x <= 2*pi"]}))
    assert not accepts(compiler, tokenizer, bounded, 'Solve: {"equations": ["sin(x) = 0"]}\n')  # the domain left out
    assert accepts(compiler, tokenizer, bounded, 'Solve: {"equations": ["sin(x) = 0", "x >= 0", "x <= 2*pi"]}\n')


def test_code_steps_run_python_or_answer_with_a_fenced_function(compiler, tokenizer) -> None:
    grammar = compiler.lark(step_grammar(TASKS["code"].labels, code_answer=True))
    assert accepts(compiler, tokenizer, grammar, "Answer:\n```python\ndef f(x):\n    return x + 1\n```\n")
    assert accepts(compiler, tokenizer, grammar, 'Run: {"code": "print(f\'{1 + 1}\')"}\n')
    assert not accepts(compiler, tokenizer, grammar, 'Calc: {"expression": "1 + 1"}\n')
    assert not accepts(compiler, tokenizer, grammar, "Answer: def f(x): return x\n")
    assert not accepts(compiler, tokenizer, grammar, "Answer:\n```python\n" + "x = 1\n" * 61 + "```\n")
