"""Solution sets: an equation's answer is all of its solutions, written and compared as a set.

"Solve x**2 - 5*x + 6 = 0" has the answer {2, 3}; "2" alone satisfies the equation but is not the answer. The
`Solve` tool writes one line per solution ("x = 2; x = 3", "x = 1, y = 3; x = 3, y = 1"); a path may answer with
the whole set ("x = {2, 3}", "(x, y) = {(1, 3), (3, 1)}"), and the verifier compares sets, element by element
under sympy (tools.math.equal), never by substituting one member.
"""

from __future__ import annotations

import re

from tools.math import MathToolError, equal

Solution = dict[str, str]  # variable -> value, one line of the Solve tool
_SOLUTION_SPLIT = re.compile(r";\s*")
_ASSIGNMENT_SPLIT = re.compile(r",\s*(?=[A-Za-z]\w* = )")


def parse_solutions(output: str) -> list[Solution]:
    """The Solve tool's output ("x = 2; x = 3") -> one {variable: value} per solution; [] where it is not one."""
    solutions = []
    for line in _SOLUTION_SPLIT.split(output.strip()):
        solution = {}
        for assignment in _ASSIGNMENT_SPLIT.split(line):
            name, sep, value = assignment.partition(" = ")
            if not sep or not re.fullmatch(r"[A-Za-z]\w*", name.strip()) or not value.strip():
                return []
            solution[name.strip()] = value.strip()
        solutions.append(solution)
    return solutions


def set_choices(solutions: list[Solution]) -> list[str]:
    """The complete answer a Solve result allows when it has several solutions: the whole set ("x = {2, 3}",
    "(x, y) = {(1, 3), (3, 1)}"). A system's answer is its pairs: one variable's values ("x = {1, 3}") are not
    offered, as a small model takes them for the answer."""
    if len(solutions) < 2 or any(s.keys() != solutions[0].keys() for s in solutions):
        return []
    names = list(solutions[0])
    if len(names) == 1:
        return [f"{names[0]} = {_braced(s[names[0]] for s in solutions)}"]
    return [f"({', '.join(names)}) = {_braced('(' + ', '.join(s[n] for n in names) + ')' for s in solutions)}"]


def _braced(items) -> str:
    return "{" + ", ".join(items) + "}"


def parse_set(text: str) -> list[tuple[str, ...]] | None:
    """An answer as a set of tuples: "{2, 3}" -> [("2",), ("3",)], "{(1, 3), (3, 1)}" -> [("1", "3"), ("3", "1")],
    "(6, 3)" -> [("6", "3")], "4" -> [("4",)]; None for what is no set of values (an inequality, an equation)."""
    text = text.strip()
    if re.search(r"[<>]|(?<![<>!=])=(?!=)", text) or not text:
        return None
    if text.startswith("{") and text.endswith("}"):
        members = split_top_level(text[1:-1])
    else:
        members = [text]
    parsed = []
    for member in members:
        member = member.strip()
        if member.startswith("(") and member.endswith(")") and len(split_top_level(member[1:-1])) > 1:
            parsed.append(tuple(m.strip() for m in split_top_level(member[1:-1])))
        elif member:
            parsed.append((member,))
    return parsed or None


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def same_set(a: list[tuple[str, ...]], b: list[tuple[str, ...]]) -> bool:
    """Whether two sets of tuples are equal, each member matched to one of the other under sympy."""
    a, b = list(dict.fromkeys(a)), list(dict.fromkeys(b))
    if len(a) != len(b):
        return False
    unmatched = list(b)
    for member in a:
        match = next((other for other in unmatched if _same_tuple(member, other)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return True


def _same_tuple(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if len(a) != len(b):
        return False
    try:
        return all(x.replace(" ", "") == y.replace(" ", "") or equal(x, y, timeout_s=2) for x, y in zip(a, b))
    except MathToolError:
        return False


def solution_tuples(solutions: list[Solution], names: list[str]) -> list[tuple[str, ...]]:
    """The solutions as tuples of the values of `names`, in that order."""
    return [tuple(s[n] for n in names) for s in solutions if all(n in s for n in names)]
