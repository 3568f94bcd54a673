"""A chat turn answered through the tools: what the search found, what the chat says about it, and how it shows.

The chat never states a computed figure that no tool computed. A maths turn states an answer only when it is
*verified*: a result a tool computed on the chosen path, every step of that path valid (the reward's validity
layer is 1), and no verifier refuted it (correctness above 0). Otherwise it says `NO_VERIFIED_ANSWER` and shows
the tool calls it tried, but no figure. A code turn's function is run in the sandbox on an example input
chosen from its signature (`example_call`), and the chat shows the call and what it returned; it is verified
when that run succeeds and the problem's own stated examples, if any, passed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from reasoning.solution_sets import split_top_level
from reasoning.steps import MATH_TOOLS, Step, answer_choices, parse_step
from reasoning.tasks import stated_examples
from tools.math import MathToolError, latex

NO_VERIFIED_ANSWER = (
    "I could not find an answer that the tools verified, so I won't guess one. The tool calls I tried are shown above."
)
STATUSES = ("searching", "verified", "unverified")


@dataclass(frozen=True)
class ToolTurn:
    """The record of one tool-answered turn, stored with the assistant's message."""

    problem: str  # what the search solved (a follow-up rewritten into a standalone problem)
    task_type: str  # "math" | "code"
    status: str = "searching"  # one of STATUSES
    steps: tuple[dict[str, Any], ...] = ()  # the chosen path (and, for code, the example run), as Solution.steps
    tried: tuple[dict[str, Any], ...] = ()  # each distinct tool call the search ran, in the order found
    answer: str | None = None  # the verified answer (math: as the tool printed it; code: the function)
    reward: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    rewritten_from: str | None = None  # the follow-up as the user wrote it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ToolTurn | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(**{**data, "steps": tuple(data["steps"]), "tried": tuple(data["tried"])})

    def with_step(self, step: dict[str, Any]) -> ToolTurn:
        """This turn with one more tool call the search ran (a call it ran before is not shown twice)."""
        if step.get("kind") != "tool" or any(s["text"] == step["text"] for s in self.tried):
            return self
        return replace(self, tried=(*self.tried, step))


def conclude(turn: ToolTurn, solution) -> tuple[ToolTurn, str]:
    """The finished turn for an `app.solve.Solution`, and what the chat says (plain text: the CLI prints it as is)."""
    steps = tuple(solution.steps)
    done = replace(turn, steps=steps, reward=dict(solution.reward), seconds=solution.seconds)
    if turn.task_type == "code":
        return _conclude_code(done, solution.answer)
    answer = solution.answer
    computed = answer is not None and answer in _computed(steps)
    if computed and solution.reward.get("validity", 0.0) >= 1.0 and solution.reward.get("correctness", 0.0) > 0.0:
        return replace(done, status="verified", answer=answer), answer
    return replace(done, status="unverified"), NO_VERIFIED_ANSWER


def _conclude_code(turn: ToolTurn, code: str | None) -> tuple[ToolTurn, str]:
    if code is None:
        return replace(turn, status="unverified"), "I could not write a function for that."
    call = example_call(code)
    if call is None:
        return (
            replace(turn, status="unverified", answer=code),
            f"```python\n{code}\n```\n(Not run: I could not choose an example input for its parameters.)",
        )
    run = parse_step("Run: " + json.dumps({"code": f"{code}\n\nprint(repr({call}))"})).to_dict()
    stated_ok = not stated_examples(turn.problem) or turn.reward.get("correctness", 0.0) >= 1.0
    status = "verified" if run["tool_ok"] and stated_ok else "unverified"
    said = f"```python\n{code}\n```\nRan in the sandbox: `{call}` → `{run['tool_output']}`"
    return replace(turn, status=status, answer=code, steps=(*turn.steps, run)), said


_EXAMPLE_BY_TYPE = {
    "str": "'hello'",
    "int": "7",
    "float": "2.5",
    "bool": "True",
    "list": "[3, 1, 2]",
    "List": "[3, 1, 2]",
    "tuple": "(3, 1, 2)",
    "dict": "{'a': 1}",
    "set": "{3, 1, 2}",
}
_EXAMPLE_BY_NAME = (
    (
        {"s", "text", "string", "word", "sentence", "name", "st", "txt", "input_str", "input_string", "str_", "phrase"},
        "'hello'",
    ),
    ({"n", "num", "number", "x", "k", "i", "count", "year", "value", "a", "b"}, "7"),
    ({"numbers", "nums", "lst", "items", "arr", "array", "values", "xs", "list", "data", "seq", "l"}, "[3, 1, 2]"),
    ({"words", "strings", "names"}, "['b', 'a']"),
)


def example_call(code: str) -> str | None:
    """A call of the code's first function on example inputs chosen from each parameter's annotation or name
    ("reverse_string('hello')"); None when the code has no function or a parameter's kind cannot be told."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)
    if function is None:
        return None
    params = function.args.posonlyargs + function.args.args
    required = params[: len(params) - len(function.args.defaults)]
    values = []
    for param in required:
        value = _example_for(param)
        if value is None:
            return None
        values.append(value)
    return f"{function.name}({', '.join(values)})"


def _example_for(param: ast.arg) -> str | None:
    if param.annotation is not None:
        annotation = ast.unparse(param.annotation)
        if annotation in ("list[str]", "List[str]"):
            return "['b', 'a']"
        base = annotation.split("[")[0].split(".")[-1]
        if base in _EXAMPLE_BY_TYPE:
            return _EXAMPLE_BY_TYPE[base]
    return next((value for names, value in _EXAMPLE_BY_NAME if param.arg.lower() in names), None)


def _computed(steps: tuple[dict[str, Any], ...]) -> set[str]:
    """What the path's maths tools computed, as an answer may state it: each result ("x = 2; x = 3"), each of its
    parts ("x = 2") and each part's value ("2")."""
    choices = answer_choices([Step(**step) for step in steps])
    whole = {s["tool_output"] for s in steps if s["tool"] in MATH_TOOLS.values() and s["tool_ok"] and s["tool_output"]}
    return whole | set(choices) | {c.split("=")[-1].strip() for c in choices}


@lru_cache(maxsize=1024)
def as_latex(text: str) -> str | None:
    """A tool's result as LaTeX for display ("x = 2; x = 3" -> "x = 2;\\quad x = 3", "x = {2, 3}" ->
    "x = \\left\\{2, 3\\right\\}"), or None when it is not maths sympy reads (then show it as code)."""
    try:
        return r";\quad ".join(
            " = ".join(_side_latex(side.strip()) for side in part.split("=")) for part in text.split(";")
        )
    except MathToolError:
        return None


def _side_latex(text: str) -> str:
    """One side of a result: an expression, or a set of them ("{2, 3}", "{(1, 3), (3, 1)}")."""
    if text.startswith("{") and text.endswith("}"):
        return r"\left\{" + ", ".join(_side_latex(item) for item in split_top_level(text[1:-1])) + r"\right\}"
    if text.startswith("(") and text.endswith(")") and len(items := split_top_level(text[1:-1])) > 1:
        return r"\left(" + ", ".join(_side_latex(item) for item in items) + r"\right)"
    return latex(text)
