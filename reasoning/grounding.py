"""Whether a tool call works on what the problem states: a check of a step's inputs, not of its result.

The tools compute correctly; what a small model gets wrong is what it hands them. It differentiates
"exp(2*x) - 2*exp(x)" when asked about exp(2*x), takes a limit at 0 when the problem says infinity, or
multiplies by 1000 where no 1000 appears. So a maths tool call is grounded when

- the problem states maths in a variable (an expression, an equation) or names an operation on one: each
  expression or equation the call
  passes is one the problem states (the same text, or equal under sympy); a limit's point is what the problem
  says x approaches and an integral's bounds what it integrates from and to ("oo" for infinity); and where the
  problem names an operation ("derivative", "integral", "limit", "factor", "simplify", "solve") the call is
  one of those it names;
- otherwise (a word problem): every number in the call appears in the problem, in an earlier tool result, or is
  a number the problem spells out ("twice", "half", "a dozen", "percent" -> 100) or a conversion of a unit it
  names ("minutes" -> 60, "weeks" -> 7 and 52), and no number it writes cancels out ("150/20*20").

`StepValidity` (reward.py) counts an ungrounded call as an invalid step, and only paths whose every step is valid
vote in the reward's agreement layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache

from reasoning.steps import MATH_TOOLS, Step, answer_choices, stated_value
from tools.math import MathToolError, arithmetic, equal

_FUNCTIONS = r"sin|cos|tan|exp|log|ln|sqrt|asin|acos|atan|sinh|cosh|tanh|Abs|pi"
# a run of maths: numbers, one-letter variables, known functions, operators, brackets (English words end it)
_MATHS_RUN = re.compile(rf"(?:(?:\d+(?:\.\d+)?|(?<![A-Za-z])(?:{_FUNCTIONS}|[a-z])(?![A-Za-z])|\*\*|[-+*/^()=<>])\s*)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LITERAL = re.compile(r"(?<![\d.])(?:\d+(?:\.\d+)?|\.\d+)(?![\d.])")  # a whole number literal: "12", "2.5", ".5"
_SPELLED = {
    "half": "2",
    "twice": "2",
    "double": "2",
    "triple": "3",
    "dozen": "12",
    "percent": "100",
    "%": "100",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "hundred": "100",
    "thousand": "1000",
}
# the conversions a word problem leaves unsaid ("$12 an hour, 50 minutes" -> 12*50/60), by the unit's stem
_UNIT_CONSTANTS = {
    "minute": ("60",),
    "hour": ("60", "24"),
    "day": ("24", "7", "365"),
    "week": ("7", "52"),
    "month": ("12", "30"),
    "year": ("12", "52", "365"),
    "cent": ("100",),
    "meter": ("100", "1000"),
    "gram": ("1000",),
    "foot": ("12",),
    "feet": ("12", "3"),
    "inch": ("12",),
    "yard": ("3",),
}
_POINT_FIELDS = ("point", "lower", "upper")
_POINT_PHRASES = {
    "point": re.compile(r"(?:approaches|approaching|tends to|goes to|->|→)\s*(-?\s*[\w.+/*]+)"),
    "lower": re.compile(r"\bfrom\s+(-?[\w.+/*]+)\s+to\b"),
    "upper": re.compile(r"\bfrom\s+-?[\w.+/*]+\s+to\s+(-?[\w.+/*]+)"),
}
_INFINITY = {"infinity", "oo", "∞", "inf"}
_NAMED_OPERATIONS = {  # tool label -> how a problem names it
    "Diff": re.compile(r"derivative|differentiat", re.I),
    "Integrate": re.compile(r"integral|integrat|antiderivative", re.I),
    "Limit": re.compile(r"\blimit\b", re.I),
    "Factor": re.compile(r"\bfactor", re.I),
    "Simplify": re.compile(r"\bsimplif", re.I),
    "Solve": re.compile(r"\bsolve\b|\bsystem\b", re.I),
}
# English around numbers ("a 3-pack", "x 2 times"): two operands side by side, or a dangling operator
_MALFORMED = re.compile(r"[\w)]\s+[\w(]|[-+*/^=<>]\s*$|^\s*[+*/^=<>]")
# an interval the wording limits the unknown to: "in the interval [0, 2*pi]", "on [0, pi]", "between 0 and 2*pi"
_INTERVAL = re.compile(
    r"\b(?:in|on|over)\s+(?:the\s+interval\s+)?\[\s*([^,\]]+?)\s*,\s*([^\]]+?)\s*\]|"
    r"\bbetween\s+(-?[\w.*/+]+)\s+and\s+(-?[\w.*/+]+?)(?=[\s,.?]|$)",
    re.I,
)


@lru_cache(maxsize=1024)
def stated_maths(problem: str) -> tuple[str, ...]:
    """The expressions and equations the problem states in a variable ("x**2 + 5*x + 6", "x + y = 10")."""
    spans = []
    for run in _MATHS_RUN.findall(problem):
        for part in run.split(","):
            part = part.strip().rstrip(".").strip()
            if re.search(r"(?<![A-Za-z])[a-z](?![A-Za-z])", part) and (
                re.search(r"[\d(*/+^-]", part) or len(part) == 1
            ):
                if not _MALFORMED.search(part):
                    spans.append(part)
    return tuple(spans)


@lru_cache(maxsize=1024)
def stated_domain(problem: str) -> tuple[str, ...]:
    """The interval the wording limits the unknown to, as the two inequalities a `Solve` call passes with the
    equation: "sin(x) = 0 for x in the interval [0, 2*pi]" -> ("x >= 0", "x <= 2*pi"); () where it states none."""
    match = _INTERVAL.search(problem)
    if match is None:
        return ()
    low, high = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    letters = {v for s in stated_maths(problem) if "=" in s for v in re.findall(r"(?<![A-Za-z])[a-z](?![A-Za-z])", s)}
    variable = letters.pop() if len(letters) == 1 else "x"
    return f"{variable} >= {low.strip()}", f"{variable} <= {high.strip()}"


def grounded(step: Step, problem: str, before: Sequence[Step]) -> bool:
    """Whether a tool step's inputs come from the problem (see the module docstring); other steps pass."""
    if step.kind != "tool" or step.tool not in MATH_TOOLS.values() or not step.tool_ok:
        return True
    try:
        arguments = json.loads(step.tool_input or "{}")
    except ValueError:
        return False
    named = _named_operations(problem)
    if not is_symbolic(problem):
        if step.tool == "math_solve" and not re.search(r"[A-Za-z]", " ".join(arguments.get("equations", []))):
            return False  # an "equation" of numbers only: nothing to solve for
        expression = arguments.get("expression")
        if isinstance(expression, str) and cancelled_number(expression) is not None:
            return False  # "150/20*20" for "20% of 150": the 20 is written but not used
        return _numbers_known(json.dumps(arguments), problem, before)
    label = step.text.split(":", 1)[0]
    if named and label not in named or not wording_allows(label, arguments, problem):
        return False
    stated = _stated_expressions(problem)
    for name, value in arguments.items():
        values = value if isinstance(value, list) else [value]
        for item in (v for v in values if isinstance(v, str)):
            if name in _POINT_FIELDS:
                if not _point_stated(name, item, problem):
                    return False
            elif name not in ("variable", "variables") and not _is_stated(item, stated):
                return False
    return True


_ORDINALS = {"second": 2, "third": 3, "fourth": 4}


def wording_allows(label: str, arguments: dict, problem: str) -> bool:
    """Whether the wording leaves room for this tool call: bounds ("from 0 to 3") ask for a definite integral, so
    an `Integrate` call without them, or another operation on the expression, answers another question; a
    derivative is of the order the wording says ("second derivative" -> 2, otherwise 1)."""
    bounded = all(_POINT_PHRASES[field].search(problem) for field in ("lower", "upper"))
    if bounded and label not in ("Integrate", "Calc"):
        return False
    if bounded and label == "Integrate" and not (arguments.get("lower") and arguments.get("upper")):
        return False
    if label == "Diff":
        said = re.search(r"\b(second|third|fourth)\s+derivative", problem, re.I)
        if arguments.get("order", 1) != (_ORDINALS[said.group(1).lower()] if said else 1):
            return False
    return True


def tool_computed(problem: str, answer: str | None, steps: Sequence[Step]) -> bool:
    """Whether the answer is the result of the operation the problem names, called on what it states (a grounded
    call): "the derivative of x**3*sin(x)" answered with what `Diff` returned for x**3*sin(x). The tool is then
    the verifier. Solving is left out: a solution set is checked against the equations (tasks.py)."""
    named = set(_named_operations(problem)) - {"Solve"}
    if answer is None or not named or not is_symbolic(problem):
        return False
    for i, step in enumerate(steps):
        if (
            step.kind == "tool"
            and step.text.split(":", 1)[0] in named
            and grounded(step, problem, steps[:i])
            and any(stated_value(choice) == answer for choice in answer_choices([step]))
        ):
            return True
    return False


def cancelled_number(expression: str) -> str | None:
    """A number written in an arithmetic expression that does not change its value ("150/20*20": 20), if any.

    A calculation in which a number cancels is the same calculation without it; a small model writes one to use a
    stated number while reaching the answer it favours. (In GSM8K's own solutions 22 of the first 2,000
    problems' 6,336 steps do this, "3*(2/3)" for two thirds of three: rare enough to count as a slip.)
    """
    expression = expression.replace("^", "**")
    try:
        value = arithmetic(expression)
    except MathToolError:
        return None
    for number in dict.fromkeys(_LITERAL.findall(expression)):
        if float(number) == 0:
            continue
        moved = re.sub(rf"(?<![\d.]){re.escape(number)}(?![\d.])", f"({number}*1.37)", expression)
        try:
            if abs(arithmetic(moved) - value) <= 1e-9 * max(1.0, abs(value)):
                return number
        except MathToolError:
            continue
    return None


def _named_operations(problem: str) -> list[str]:
    return [label for label, wording in _NAMED_OPERATIONS.items() if wording.search(problem)]


def is_symbolic(problem: str) -> bool:
    """Whether the problem states maths in a variable or names an operation on one (else: a word problem)."""
    stated = stated_maths(problem)
    return bool(
        any(re.search(r"[a-z]", s) for s in stated if "=" in s or len(s) > 1)
        or set(_named_operations(problem)) - {"Solve"}
    )


def stated_arguments(problem: str) -> dict[str, tuple[str, ...]]:
    """What a symbolic problem's tool calls may pass, by argument: "expression" one of the expressions (or numbers)
    it states, "point"/"lower"/"upper" the point or bounds its wording gives ("oo" for infinity). Arguments it
    gives nothing for are left out; a word problem gives none (its Calc steps are narrowed by `known_numbers`)."""
    if not is_symbolic(problem):
        return {}
    allowed = {"expression": tuple(dict.fromkeys(s for s in _stated_expressions(problem) if "=" not in s))}
    for field, phrase in _POINT_PHRASES.items():
        said = [m.replace(" ", "").rstrip(".?,") for m in phrase.findall(problem)]
        points = tuple(dict.fromkeys(_point_value(p) for p in said if _point_value(p) is not None))
        if points:
            allowed[field] = points
    allowed["domain"] = stated_domain(problem)  # a Solve call passes these beside the equation
    return {field: values for field, values in allowed.items() if values}


def _stated_expressions(problem: str) -> tuple[str, ...]:
    """The maths a symbolic problem states; its numbers too where it states nothing beyond a bare variable ("the
    integral of 6 from 1 to 3"). Otherwise a number is no expression of the problem: "Simplify (x + 1)**2 - x**2"
    is not answered by simplifying 2."""
    stated = (*stated_maths(problem), *stated_domain(problem))
    if any(len(s) > 1 for s in stated):
        return stated
    return (*stated, *_NUMBER.findall(problem))


def _point_value(said: str) -> str | None:
    """A point as the problem says it -> as a tool takes it ("infinity" -> "oo"); None if it is no point."""
    sign, magnitude = ("-", said[1:]) if said.startswith("-") else ("", said)
    if magnitude.lower() in _INFINITY:
        return sign + "oo"
    return said if re.fullmatch(r"-?(?:\d+(?:\.\d+)?|pi|E)(?:/\d+)?", said) else None


def known_numbers(problem: str, before: Sequence[Step]) -> frozenset[str]:
    """The numbers a word problem's tool call may use (canonical form): those the problem writes or spells out,
    the conversions of the units it names, and those the earlier tool calls returned."""
    known = set(_NUMBER.findall(problem)) | spelled_numbers(problem) | unit_constants(problem)
    for step in before:
        known.update(_NUMBER.findall(step.tool_output or ""))
    return frozenset(canonical_number(k) for k in known)


@lru_cache(maxsize=1024)
def spelled_numbers(problem: str) -> frozenset[str]:
    """The numbers the problem spells out ("half" -> 2, "a dozen" -> 12, "percent" -> 100)."""
    return frozenset(
        value
        for word, value in _SPELLED.items()
        if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", problem.lower())
    )


@lru_cache(maxsize=1024)
def unit_constants(problem: str) -> frozenset[str]:
    """The conversions of the units the problem names ("minutes" -> 60, "weeks" -> 7 and 52)."""
    words = set(re.findall(r"[a-z]+", problem.lower()))
    return frozenset(
        value for unit, values in _UNIT_CONSTANTS.items() if any(w.startswith(unit) for w in words) for value in values
    )


def _numbers_known(text: str, problem: str, before: Sequence[Step]) -> bool:
    known = known_numbers(problem, before)
    return all(canonical_number(n) in known for n in _NUMBER.findall(text))


def canonical_number(number: str) -> str:
    """One spelling of a number ("2.50" -> "2.5", "8.000" -> "8")."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def _point_stated(field: str, value: str, problem: str) -> bool:
    """A limit's point or an integral's bound: what the problem's wording gives for it (a number of the problem
    when it has no such wording)."""
    said = [m.replace(" ", "").rstrip(".?,") for m in _POINT_PHRASES[field].findall(problem)]
    if not said:
        said = _NUMBER.findall(problem)
    value = value.replace(" ", "")
    sign, magnitude = ("-", value[1:]) if value.startswith("-") else ("", value)
    return any(
        value == s or (magnitude == "oo" and s.lstrip("-") in _INFINITY and s.startswith("-") == bool(sign))
        for s in said
    )


def _is_stated(value: str, stated: Sequence[str]) -> bool:
    squeezed = value.replace(" ", "")
    if any(squeezed == s.replace(" ", "") for s in stated):
        return True
    return any(_same_maths(value, s) for s in stated if ("=" in s) == ("=" in value))


@lru_cache(maxsize=4096)
def _same_maths(a: str, b: str) -> bool:
    """Equal under sympy; an equation as the difference of its sides (up to sign)."""
    if "=" in a:
        (la, ra), (lb, rb) = a.split("=", 1), b.split("=", 1)
        a, b = f"({la}) - ({ra})", f"({lb}) - ({rb})"
        if _same_maths(a, f"-({b})"):
            return True
    try:
        return equal(a, b, timeout_s=2)
    except MathToolError:
        return False
