"""Task types: for math and code, the prompt with its few-shot examples and the verifier of an answer.

`classify` picks the type for task_type="auto" from the problem's wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from reasoning.steps import run_tool
from tools.math import MathToolError, equal

MATH_PROMPT = """Solve each problem step by step. Write arithmetic as "Calc: <expression>", equations as \
"Solve: <equation>", and use "Diff:", "Integrate:", "Limit:", "Factor:", "Simplify:"; a calculator fills in \
the result. Finish with "Answer: <result>".

Problem: Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?
Calc: 3*12 - 5 = 31
Answer: 31

Problem: A shirt costs 20 dollars and is 25% off. What is the new price?
Calc: 20 - 20*25/100 = 15
Answer: 15

Problem: Solve 2*x + 3 = 11 for x.
Solve: 2*x + 3 = 11 => x = 4
Answer: 4

Problem: What is the derivative of x**3 with respect to x?
Diff: x**3 = 3*x**2
Answer: 3*x**2

Problem: What is the definite integral of 2*x from 0 to 3?
Integrate: 2*x from 0 to 3 = 9
Answer: 9

Problem: What is the limit of sin(2*x)/x as x approaches 0?
Limit: sin(2*x)/x as x -> 0 = 2
Answer: 2

Problem: Factor x**2 - 4.
Factor: x**2 - 4 = (x - 2)*(x + 2)
Answer: (x - 2)*(x + 2)

Problem: {problem}
"""

CODE_PROMPT = """Write a Python function that solves the task. Test it with "Run: <python code>"; the output \
is shown. Finish with "Answer: <the function on one line, statements separated by ;>".

Task: Write a function double(x) that returns twice x.
Run: print((lambda x: 2*x)(4))  -> 8
Answer: def double(x): return 2*x

Task: {problem}
"""

_CODE_WORDS = re.compile(r"\b(def|function|python|code|implement|program|return[s]?|list of|string)\b", re.I)


@dataclass(frozen=True)
class TaskType:
    name: str
    template: str

    def prompt(self, problem: str) -> str:
        return self.template.format(problem=problem.strip())


TASKS = {"math": TaskType("math", MATH_PROMPT), "code": TaskType("code", CODE_PROMPT)}


def classify(problem: str) -> str:
    """"code" when the problem asks for a program, else "math"."""
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


def check_equation_answer(problem: str, answer: str) -> bool | None:
    """For "solve ... = ..." problems in one unknown: substitute the answer back (None if there is no such equation)."""
    match = _EQUATION.search(problem)
    if not match:
        return None
    equation = match.group(0).strip().rstrip(".")
    variables = set(re.findall(r"(?<![A-Za-z])([a-z])(?![A-Za-z])", equation))
    if len(variables) != 1:
        return None
    (variable,) = variables
    value = re.sub(rf"^\s*{variable}\s*=\s*", "", answer.strip())
    left, right = equation.split("=", 1)
    substituted = re.sub(rf"(?<![A-Za-z]){variable}(?![A-Za-z])", f"({value})", f"({left}) - ({right})")
    try:
        return equal(substituted, "0", timeout_s=2)
    except MathToolError:
        return False


@lru_cache(maxsize=1024)
def run_code_checks(answer: str, tests: tuple[str, ...]) -> float:
    """Fraction of `tests` (Python assert statements) the answer's code passes in the sandbox."""
    if not tests:
        return 0.0
    script = answer + "\n" + "\n".join(
        f"try:\n    {t}\n    print('PASS')\nexcept Exception:\n    print('FAIL')" for t in tests
    )
    output, _ = run_tool("python_exec", script)
    return output.count("PASS") / len(tests)
