"""Reasoning steps: what the model writes at each step, parsed and, for tool steps, run.

The step format is tool-first, because a 135M model cannot do arithmetic on its own (it answers
"12 times 7" with 78) but can write the expression. A tool call is a label and the tool's arguments as JSON;
the tool, not the model, writes the result after " => ":

    Calc: {"expression": "3*12 - 5"} => 31                    (sympy, through the `Tool`s of tools.math)
    Solve: {"equations": ["2*x + 3 = 11"]} => x = 4
    Diff: / Integrate: / Limit: / Factor: / Simplify: {...} => ...
    Run: {"code": "print(sum(range(5)))"} => 10               (Python in tools.sandbox)
    Thought: <one line of reasoning>
    Answer: 31                                                (math: a result a tool computed)
    Answer:
    ```python
    def f(x): ...                                             (code: the whole function)
    ```

With the step grammar (reasoning/step_grammar.py) the model can write nothing else. Without it, the parser
also takes the older plain form ("Calc: 3*12 - 5"), runs arithmetic written under any other label as a
`Calc` ("Multiply: 12*7 = 75"), and checks arithmetic claimed in a thought ("so 3*4 = 13" makes it invalid).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from reasoning.solution_sets import parse_solutions, set_choices
from tools.math import MathToolError, arithmetic, math_tools
from tools.sandbox import sandbox_tool
from tools.tool import Tool

MATH_TOOLS = {
    "Calc": "math_simplify",
    "Solve": "math_solve",
    "Diff": "math_diff",
    "Integrate": "math_integrate",
    "Limit": "math_limit",
    "Factor": "math_factor",
    "Simplify": "math_simplify",
}
CODE_TOOLS = {"Run": "python_exec"}
TOOL_LABELS = {**MATH_TOOLS, **CODE_TOOLS}  # label -> tool name
ANSWER_PREFIX = "Answer:"
THOUGHT_PREFIX = "Thought:"
RESULT_MARK = " => "  # between a tool call and the result the tool wrote
CODE_FENCE = "```"
NO_VALUE = {"no solution", "any value is a solution"}  # math_solve results that are not an answer
_ARITHMETIC = r"[-+*/^().\d\s]*\d[-+*/^().\d\s]*[-+*/^][-+*/^().\d\s]*\d[-+*/^().\d\s]*"
_LABELLED_ARITHMETIC = re.compile(rf"(?:[A-Za-z][A-Za-z ]*:)?\s*({_ARITHMETIC})(?:=\s*[^=]*)?")
_CLAIM = re.compile(rf"({_ARITHMETIC})=\s*(-?\d+(?:\.\d+)?)")
_ASSIGNMENT = re.compile(r"(?<![<>!=])=(?!=)")  # an "=" that is not part of "<=", ">=", "!=" or "=="
_CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)(?:\n```|\Z)", re.S)


@dataclass(frozen=True)
class Step:
    kind: str  # "thought" | "tool" | "answer"
    text: str  # the step as it enters the context (tool steps carry their result)
    tool: str | None = None
    tool_input: str | None = None  # the arguments, as JSON
    tool_output: str | None = None
    tool_ok: bool = True  # the tool ran without error; for a thought: no false arithmetic claim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def step_tools() -> dict[str, Tool]:
    """The tools steps can call, by name."""
    return {t.name: t for t in [*math_tools(), sandbox_tool()]}


def plain_arguments(name: str, argument: str) -> dict[str, Any]:
    """The older plain form of a step's arguments ("2*x from 0 to 3") -> the tool's arguments."""
    if name == "math_solve":
        return {"equations": [e.strip() for e in re.split(r"[;,]", argument) if e.strip()]}
    if name == "math_integrate":
        match = re.fullmatch(r"(.+?)\s+from\s+(\S+)\s+to\s+(\S+)", argument)
        return (
            {"expression": match.group(1), "lower": match.group(2), "upper": match.group(3)}
            if match
            else {"expression": argument}
        )
    if name == "math_limit":
        match = re.fullmatch(r"(.+?)\s+as\s+([a-z])\s*->\s*(\S+)", argument)
        return (
            {"expression": match.group(1), "variable": match.group(2), "point": match.group(3)}
            if match
            else {"expression": argument, "point": "0"}
        )
    if name == "python_exec":
        return {"code": argument}
    return {"expression": argument}


def run_tool(name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
    """Run one tool call; (its output on one line, whether it ran without error)."""
    if name == "python_exec":
        arguments = {"timeout_s": 5, **arguments}
    output = step_tools()[name](arguments)
    ok = not output.startswith("Error")
    if name == "python_exec" and ok:  # "status: ...\n--- stdout ---\n..." -> the stdout (or the error's last line)
        ok = output.startswith("status: exit code 0")
        stdout = re.search(r"--- stdout ---\n(.*?)(?:\n--- stderr ---|\Z)", output, re.S)
        stderr = re.search(r"--- stderr ---\n(.*)\Z", output, re.S)
        shown = stdout.group(1) if ok or not stderr else "Error: " + stderr.group(1).strip().splitlines()[-1]
        output = shown.strip()
    return output.replace("\n", "; ")[:200], ok


def parse_step(text: str) -> Step:
    """What the model wrote for one step -> a Step; tool steps are run and their result written into the text."""
    text = text.strip()
    if text.startswith(ANSWER_PREFIX):
        return Step("answer", text)
    line = text.split("\n", 1)[0].strip()
    for label, tool in TOOL_LABELS.items():
        if line.startswith(label + ":"):
            return _tool_step(label, tool, line[len(label) + 1 :].strip())
    labelled = _LABELLED_ARITHMETIC.fullmatch(line)
    if labelled:
        return _tool_step("Calc", MATH_TOOLS["Calc"], labelled.group(1).strip())
    return Step("thought", line, tool_ok=all(_claim_holds(e, v) for e, v in _CLAIM.findall(line)))


def _tool_step(label: str, tool: str, argument: str) -> Step:
    argument = argument.split(RESULT_MARK)[0].strip()  # a result the model guessed: the tool writes the real one
    if argument.startswith("{"):
        try:
            arguments = json.loads(argument)
        except ValueError:
            return Step(
                "tool", f"{label}: {argument}", tool, argument, "Error: the arguments are not valid JSON", False
            )
    else:
        if tool != "python_exec":  # "3*12 - 5 = 31" -> "3*12 - 5", but an equation keeps its "="
            argument = argument.split("=>")[0].strip()
            if tool != "math_solve":
                argument = argument.split(" = ")[0].split("=")[0].strip()
        arguments = plain_arguments(tool, argument)
    if not isinstance(arguments, dict):
        return Step("tool", f"{label}: {argument}", tool, argument, "Error: the arguments must be a JSON object", False)
    call = json.dumps(arguments)
    output, ok = run_tool(tool, arguments)
    return Step("tool", f"{label}: {call}{RESULT_MARK}{output}", tool, call, output, ok)


def _claim_holds(expression: str, value: str) -> bool:
    try:
        return abs(arithmetic(expression.replace("^", "**")) - float(value)) <= 1e-6 * max(1.0, abs(float(value)))
    except (MathToolError, ValueError, TypeError):
        return True  # not checkable arithmetic: no verdict


def answer_of(step: Step) -> str | None:
    """The final answer a step states: the code of a code block, else what follows the last "="
    ("Answer: 180/3 = 60" -> "60", "Answer: x = 4" -> "4")."""
    if step.kind != "answer":
        return None
    body = step.text[len(ANSWER_PREFIX) :].strip()
    if CODE_FENCE in body:
        match = _CODE_BLOCK.search(body)
        return match.group(1).strip() or None if match else None
    return stated_value(body) or None


def stated_value(text: str) -> str:
    """What a result or answer states after its last "=" ("x = 4" -> "4", "x = {2, 3}" -> "{2, 3}"); an inequality
    ("x >= 2") is kept whole."""
    return _ASSIGNMENT.split(text)[-1].strip()


def answer_choices(steps: list[Step]) -> list[str]:
    """What a math answer may state: the results the path's tool calls computed, a solution split per variable
    ("x = 6, y = 4" -> "x = 6", "y = 4"), several solutions only as their whole set ("x = 2; x = 3" ->
    "x = {2, 3}"). The step grammar allows only these, so an answer is never the model's own arithmetic."""
    choices: list[str] = []
    for step in steps:
        if step.kind != "tool" or not step.tool_ok or step.tool not in MATH_TOOLS.values() or not step.tool_output:
            continue
        parts = [step.tool_output]
        if step.tool == "math_solve":  # several solutions: only the whole set answers (solution_sets.py)
            parts = set_choices(parse_solutions(step.tool_output)) or re.split(r";\s*|,\s*(?=\w+ = )", step.tool_output)
        for part in parts:
            part = part.strip()
            if part in NO_VALUE or not part:
                continue
            if part not in choices and "\n" not in part and len(part) <= 120:
                choices.append(part)
    return choices
