"""Task types: for math and code, the prompt with its few-shot examples, the step forms, and the verifiers.

`classify` picks the type for task_type="auto" from the problem's wording. The verifiers are what the search
trusts without ground truth: a math answer substituted back into the problem's equation (or system), and
code run in the sandbox against the examples the problem states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from reasoning.fewshot import CODE_EXAMPLES, MATH_EXAMPLES, Example, nearest
from reasoning.grounding import stated_domain, stated_maths
from reasoning.solution_sets import parse_set, same_set, solution_tuples
from reasoning.steps import CODE_TOOLS, MATH_TOOLS, run_tool, stated_value
from tools.math import MathToolError, equal, solve

MATH_INTRO = """Solve each problem with a calculator. Each line is one step: a tool call with JSON arguments \
("Calc" for arithmetic, "Solve" for equations, "Diff", "Integrate", "Limit", "Factor", "Simplify"), after which \
the tool writes its result, or the final "Answer", a result a tool computed."""

CODE_INTRO = """Write the Python function the task asks for. You may test an idea first with "Run" (a sandbox runs \
the code and shows what it prints). Finish with "Answer:" and the whole function in a ```python block."""


@dataclass(frozen=True)
class TaskType:
    """A task type: its prompt (an instruction, the few-shot examples nearest the problem, then the problem), the
    tools its steps may call, how it answers, and how long a step may be."""

    name: str
    intro: str
    examples: tuple[Example, ...]
    shots: int  # examples shown per problem
    problem_label: str  # "Problem: ..." or "Task:\n..."
    labels: tuple[str, ...]  # tool labels of reasoning/steps.py
    code_answer: bool  # the answer is a fenced function rather than a tool's result
    step_tokens: int  # most generated tokens per step
    stop: tuple[str, ...]  # where a step ends when no grammar constrains it

    def prompt(self, problem: str) -> str:
        shots = [f"{self.problem_label}{e.problem}\n{e.solution}" for e in nearest(self.examples, problem, self.shots)]
        return "\n\n".join([self.intro, *shots, f"{self.problem_label}{problem.strip()}\n"])


TASKS = {
    "math": TaskType(
        "math",
        MATH_INTRO,
        MATH_EXAMPLES,
        shots=4,
        problem_label="Problem: ",
        labels=tuple(MATH_TOOLS),
        code_answer=False,
        step_tokens=64,
        stop=("\n",),
    ),
    "code": TaskType(
        "code",
        CODE_INTRO,
        CODE_EXAMPLES,
        shots=3,
        problem_label="Task:\n",
        labels=tuple(CODE_TOOLS),
        code_answer=True,
        step_tokens=320,
        stop=("\n```",),
    ),
}

_CODE = re.compile(
    r"\bdef\s+\w+\s*\(|>>>|```|\bpython\b|\b(?:write|implement|code)\b.*\b(?:function|program|script|class)\b",
    re.I | re.S,
)


def classify(problem: str) -> str:
    """ "code" when the problem shows code or asks for a program ("write a function ..."), else "math"."""
    return "code" if _CODE.search(problem) else "math"


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


@lru_cache(maxsize=4096)
def check_math_answer(answer: str, truth: str) -> bool:
    """Whether `answer` equals `truth` as maths (sympy). For a numeric truth, the answer's first number
    counts, so units, "$" and thousands separators around it do not matter. A truth that is a set ("{2, 3}",
    "{(1, 3), (3, 1)}") needs the same set: a partial one is wrong. An inequality ("x > 3") compares as written."""

    def clean(text: str) -> str:
        return text.replace(",", "").replace("$", "").strip().rstrip(".")

    if truth.strip().startswith("{"):
        wanted, got = parse_set(truth), parse_set(stated_value(answer))
        return wanted is not None and got is not None and same_set(got, wanted)
    if re.search(r"[<>]", truth):
        return _inequality(answer) == _inequality(truth)
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


def _inequality(text: str) -> str:
    """An inequality in one spelling: spaces dropped, "3 < x" as "x > 3"."""
    text = text.replace(" ", "")
    flipped = re.fullmatch(r"([^<>=]+)(<=|>=|<|>)([A-Za-z])", text)
    if flipped:
        text = flipped.group(3) + {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[flipped.group(2)] + flipped.group(1)
    return text


_LETTER = r"(?<![A-Za-z])([a-z])(?![A-Za-z])"
_ASKED = re.compile(r"\bwhat is ([a-z])\s*\?", re.I)
# wording that limits the unknown to part of its range ("in the interval [0, 2*pi]", "between 0 and 2*pi", "x > 0")
_BOUNDED = re.compile(r"\binterval\b|\bbetween\b|\b(?:in|on) \[|[<>]|\bpositive\b|\bnegative\b", re.I)


@lru_cache(maxsize=4096)
def check_equation_answer(problem: str, answer: str) -> bool | None:
    """Whether the answer is the complete solution of the problem's equations: None when the problem states none.

    One equation, or a system without an asked unknown: the answer must be the whole solution set the Solve tool
    finds ("{2, 3}" for x**2 - 5*x + 6 = 0; "2" satisfies it but is not the answer), on the interval the wording
    gives ("in [0, 2*pi]") or the inequalities it states. A system that asks for one unknown ("x + y = 10,
    x - y = 2. What is x?"): the set of that unknown's values. Inequalities alone: the range the tool finds
    ("x > 3"). Where the tool cannot solve the system, the answer is substituted back instead; where the wording
    limits the unknown in a way not read, there is no verdict.
    """
    stated = stated_maths(problem)
    equations = [e for e in stated if "=" in e and not re.search(r"[<>]", e)]
    conditions = [e for e in stated if len(re.findall(r"<=|>=|<|>", e)) == 1] + list(stated_domain(problem))
    if not equations:
        return _range_answer(conditions, answer) if conditions else None
    if _BOUNDED.search(problem) and not conditions:
        return None
    unknowns = sorted({v for e in equations for v in re.findall(_LETTER, e)})
    asked = _ASKED.search(problem)
    variable = asked.group(1) if asked and asked.group(1) in unknowns else None
    value = stated_value(answer)
    got = parse_set(value)
    if got is None:
        return False
    try:
        solutions = solve([*equations, *conditions], unknowns, timeout_s=2)
    except MathToolError:
        if conditions:
            return None
        solutions = []
    names = [variable] if variable else unknowns
    truth = solution_tuples(solutions, names)
    if not truth:
        return None if conditions else _substituted(equations, unknowns, variable, value)
    return same_set(got, truth)


def _range_answer(conditions: list[str], answer: str) -> bool | None:
    """Inequalities alone: whether the answer is the range the Solve tool finds for them (None if it finds none)."""
    try:
        solutions = solve(conditions, timeout_s=2)
    except MathToolError:
        return None
    if len(solutions) != 1 or len(solutions[0]) != 1:
        return None
    return _inequality(answer) == _inequality(next(iter(solutions[0].values())))


def _substituted(equations: list[str], unknowns: list[str], variable: str | None, value: str) -> bool | None:
    """The answer substituted into the equations (where the tool gives no solution set to compare with)."""
    variable = variable or (unknowns[0] if len(unknowns) == 1 else None)
    if variable is None:
        return None
    substituted = [re.sub(rf"(?<![A-Za-z]){variable}(?![A-Za-z])", f"({value})", e) for e in equations]
    try:
        if len(unknowns) == 1:
            left, right = substituted[0].split("=", 1)
            return equal(f"({left}) - ({right})", "0", timeout_s=2)
        return bool(solve(substituted, [u for u in unknowns if u != variable], timeout_s=2))
    except MathToolError:
        return False


_DOCTEST = re.compile(r"^\s*>>> (.+)\n\s*([^\s>].*)$", re.M)
_STATED_CALL = re.compile(
    r"^\s*(?:(?:for )?examples?:?\s*)?([A-Za-z_]\w*\(.*\))\s*(?:==|➞|=>|->)\s*(.+?)\s*$", re.M | re.I
)
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
    script = "\n".join(
        [
            preamble,
            code,
            *(
                f"try:\n    exec({check!r})\n    print('PASS')\nexcept BaseException:\n    print('FAIL')"
                for check in checks
            ),
        ]
    )
    output, _ = run_tool("python_exec", {"code": script})
    return min(output.count("PASS"), len(checks)) / len(checks)


def check_code_answer(problem: str, code: str) -> float | None:
    """Fraction of the problem's stated examples the code reproduces (None if it states none)."""
    examples = stated_examples(problem)
    if not examples:
        return None
    checks = tuple(
        f"_got = {call}\ntry:\n    _want = eval({expected!r})\nexcept Exception:\n    _want = object()\n"
        f"assert _got == _want or repr(_got) == {expected!r}"
        for call, expected in examples
    )
    return run_code_checks(code, checks, "\n".join(_IMPORT.findall(problem)))
