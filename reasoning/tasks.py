"""Task types: for math and code, the prompt with its few-shot examples, the step forms, and the verifiers.

`classify` picks the type for task_type="auto" from the problem's wording. The verifiers are what the search
trusts without ground truth: a math answer substituted back into the problem's equation (or system), and
code run in the sandbox against the examples the problem states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from reasoning.steps import CODE_TOOLS, MATH_TOOLS, run_tool
from tools.math import MathToolError, equal, solve

MATH_PROMPT = """Solve each problem with a calculator. Each line is one step: a tool call with JSON arguments \
("Calc" for arithmetic, "Solve" for equations, "Diff", "Integrate", "Limit", "Factor", "Simplify"), after which \
the tool writes its result, or the final "Answer", a result a tool computed.

Problem: Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?
Calc: {"expression": "3*12 - 5"} => 31
Answer: 31

Problem: A baker sells 24 muffins a day at 3 dollars each. How many dollars does she make in 5 days?
Calc: {"expression": "24*3"} => 72
Calc: {"expression": "72*5"} => 360
Answer: 360

Problem: What is 30% of 70?
Calc: {"expression": "30/100*70"} => 21
Answer: 21

Problem: A shirt costs 40 dollars and is 25% off. What is the new price?
Calc: {"expression": "40 - 40*25/100"} => 30
Answer: 30

Problem: 4 pens cost 6 dollars. How many dollars do 10 pens cost?
Calc: {"expression": "6/4*10"} => 15
Answer: 15

Problem: A train goes 150 km in 2 hours. What is its speed in km per hour?
Calc: {"expression": "150/2"} => 75
Answer: 75

Problem: Solve 3*x - 2 = 10 for x.
Solve: {"equations": ["3*x - 2 = 10"]} => x = 4
Answer: x = 4

Problem: Solve the system x + y = 5, x - y = 1. What is y?
Solve: {"equations": ["x + y = 5", "x - y = 1"]} => x = 3, y = 2
Answer: y = 2

Problem: What is the derivative of x**3 + x with respect to x?
Diff: {"expression": "x**3 + x", "variable": "x"} => 3*x**2 + 1
Answer: 3*x**2 + 1

Problem: What is the integral of 3*x**2 with respect to x?
Integrate: {"expression": "3*x**2", "variable": "x"} => x**3
Answer: x**3

Problem: What is the definite integral of 4*x from 1 to 2?
Integrate: {"expression": "4*x", "variable": "x", "lower": "1", "upper": "2"} => 6
Answer: 6

Problem: What is the limit of sin(2*x)/x as x approaches 0?
Limit: {"expression": "sin(2*x)/x", "point": "0", "variable": "x"} => 2
Answer: 2

Problem: What is the limit of (5*x + 1)/x as x approaches infinity?
Limit: {"expression": "(5*x + 1)/x", "point": "oo", "variable": "x"} => 5
Answer: 5

Problem: Factor x**2 - 4.
Factor: {"expression": "x**2 - 4"} => (x - 2)*(x + 2)
Answer: (x - 2)*(x + 2)

Problem: Simplify 3*a + 2*a - a.
Simplify: {"expression": "3*a + 2*a - a"} => 4*a
Answer: 4*a

Problem: {problem}
"""

CODE_PROMPT = '''Write the Python function the task asks for. You may test an idea first with "Run" (a sandbox \
runs the code and shows what it prints). Finish with "Answer:" and the whole function in a ```python block.

Task:
def double(x: int) -> int:
    """ Return twice x.
    >>> double(4)
    8
    """
Answer:
```python
def double(x: int) -> int:
    return 2 * x
```

Task:
from typing import List


def count_evens(numbers: List[int]) -> int:
    """ Count the even numbers in the list.
    >>> count_evens([1, 2, 4])
    2
    """
Run: {"code": "print([n for n in [1, 2, 4] if n % 2 == 0])"} => [2, 4]
Answer:
```python
def count_evens(numbers: List[int]) -> int:
    count = 0
    for n in numbers:
        if n % 2 == 0:
            count += 1
    return count
```

Task:
Write a function is_palindrome(text) that returns True when text reads the same backwards.
Answer:
```python
def is_palindrome(text):
    return text == text[::-1]
```

Task:
{problem}
'''


@dataclass(frozen=True)
class TaskType:
    """A task type: its prompt (few-shot examples, then the problem), the tools its steps may call, how it
    answers, and how long a step may be."""

    name: str
    template: str
    labels: tuple[str, ...]  # tool labels of reasoning/steps.py
    code_answer: bool  # the answer is a fenced function rather than a tool's result
    step_tokens: int  # most generated tokens per step
    stop: tuple[str, ...]  # where a step ends when no grammar constrains it

    def prompt(self, problem: str) -> str:
        return self.template.replace("{problem}", problem.strip())


TASKS = {
    "math": TaskType("math", MATH_PROMPT, tuple(MATH_TOOLS), code_answer=False, step_tokens=64, stop=("\n",)),
    "code": TaskType("code", CODE_PROMPT, tuple(CODE_TOOLS), code_answer=True, step_tokens=320, stop=("\n```",)),
}

_CODE_WORDS = re.compile(r"\b(def|function|python|code|implement|program|return[s]?|list of|string)\b|>>>", re.I)


def classify(problem: str) -> str:
    """"code" when the problem asks for a program (or shows one), else "math"."""
    return "code" if _CODE_WORDS.search(problem) else "math"


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


@lru_cache(maxsize=4096)
def check_math_answer(answer: str, truth: str) -> bool:
    """Whether `answer` equals `truth` as maths (sympy). For a numeric truth, the answer's first number
    counts, so units, "$" and thousands separators around it do not matter."""
    def clean(text: str) -> str:
        return text.replace(",", "").replace("$", "").strip().rstrip(".")

    a, t = clean(answer), clean(truth)
    try:
        if equal(a, t, timeout_s=2):
            return True
    except MathToolError:
        pass
    number = _NUMBER.search(a)
    if not _NUMBER.fullmatch(t) or number is None:
        return False
    try:
        return equal(number.group(0), t, timeout_s=2)
    except MathToolError:
        return False


_MATH_RUN = r"(?:(?<![A-Za-z])[a-z](?![A-Za-z])|[\d*+\-/^().\s])+"
_EQUATION = re.compile(_MATH_RUN + "=" + _MATH_RUN)
_LETTER = r"(?<![A-Za-z])([a-z])(?![A-Za-z])"
_ASKED = re.compile(r"\bwhat is ([a-z])\s*\?", re.I)


@lru_cache(maxsize=4096)
def check_equation_answer(problem: str, answer: str) -> bool | None:
    """Substitute the answer back into the problem's equations: None when the problem states none.

    One equation in one unknown: the answer must satisfy it. A system ("x + y = 10, x - y = 2. What is x?"):
    with the asked unknown replaced by the answer, the system must still have a solution.
    """
    equations = [m.group(0).strip().rstrip(".").strip() for m in _EQUATION.finditer(problem.replace(",", " ,"))]
    equations = [e for e in (e.strip(" ,") for e in equations) if re.search(_LETTER, e)]
    if not equations:
        return None
    unknowns = sorted({v for e in equations for v in re.findall(_LETTER, e)})
    asked = _ASKED.search(problem)
    variable = asked.group(1) if asked and asked.group(1) in unknowns else unknowns[0] if len(unknowns) == 1 else None
    if variable is None:
        return None
    value = re.sub(rf"^\s*{variable}\s*=\s*", "", answer.strip())
    if "=" in value:
        return False
    substituted = [re.sub(rf"(?<![A-Za-z]){variable}(?![A-Za-z])", f"({value})", e) for e in equations]
    try:
        if len(unknowns) == 1:
            left, right = substituted[0].split("=", 1)
            return equal(f"({left}) - ({right})", "0", timeout_s=2)
        return bool(solve(substituted, [u for u in unknowns if u != variable], timeout_s=2))
    except MathToolError:
        return False


_DOCTEST = re.compile(r"^\s*>>> (.+)\n\s*([^\s>].*)$", re.M)
_STATED_CALL = re.compile(r"^\s*((?:[A-Za-z_]\w*)\(.*\))\s*(?:==|➞|=>|->)\s*(.+?)\s*$", re.M)
_IMPORT = re.compile(r"^(?:from \S+ import .+|import .+)$", re.M)


def stated_examples(problem: str) -> tuple[tuple[str, str], ...]:
    """The examples a code problem states: (call, expected) from doctests (">>> f(1)" then "2") and
    lines such as "f(1) == 2" or "f(1) ➞ 2"."""
    examples = _DOCTEST.findall(problem) or _STATED_CALL.findall(problem)
    return tuple((call.strip(), expected.strip()) for call, expected in examples)


@lru_cache(maxsize=1024)
def run_code_checks(code: str, checks: tuple[str, ...], preamble: str = "") -> float:
    """Fraction of `checks` (Python statements, usually asserts) the code passes, run together in the sandbox
    after `preamble` (the problem's imports) and the code."""
    if not checks:
        return 0.0
    script = "\n".join([preamble, code, *(
        f"try:\n    exec({check!r})\n    print('PASS')\nexcept BaseException:\n    print('FAIL')" for check in checks)])
    output, _ = run_tool("python_exec", {"code": script})
    return min(output.count("PASS"), len(checks)) / len(checks)


def check_code_answer(problem: str, code: str) -> float | None:
    """Fraction of the problem's stated examples the code reproduces (None if it states none)."""
    examples = stated_examples(problem)
    if not examples:
        return None
    checks = tuple(f"_got = {call}\ntry:\n    _want = eval({expected!r})\nexcept Exception:\n    _want = object()\n"
                   f"assert _got == _want or repr(_got) == {expected!r}" for call, expected in examples)
    return run_code_checks(code, checks, "\n".join(_IMPORT.findall(problem)))
