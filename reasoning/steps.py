"""Reasoning steps: one line of model output each, parsed and, for tool steps, run.

The step format is tool-first, because a 135M model cannot do arithmetic on its own (it answers
"12 times 7" with 78) but can write the expression:

    Calc: 3*12 - 5            -> a sympy call; the line becomes "Calc: 3*12 - 5 = 31"
    Solve: 2*x + 3 = 11       -> a sympy solve; the line becomes "Solve: 2*x + 3 = 11 => x = 4"
    Diff: x**3 / Integrate: 2*x from 0 to 3 / Limit: sin(x)/x as x -> 0 / Factor: x**2 - 9 / Simplify: ...
    Run: print(sum(range(5))) -> Python in the sandbox; the output is appended
    Answer: 31                -> the final answer
    anything else             -> a thought

A line that is plain arithmetic under another label ("Multiply: 12*7 = 75") is taken as a Calc step: the
tool, not the model, writes the result. Arithmetic claimed inside a thought ("so 3*4 = 13") is checked,
and a wrong claim makes the step invalid.

Tools are called through the one `Tool` type (tools/tool.py), so a failing call comes back as text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from tools.math import MathToolError, arithmetic, math_tools
from tools.sandbox import sandbox_tool
from tools.tool import Tool

TOOL_PREFIXES = {
    "Calc:": "math_simplify",
    "Simplify:": "math_simplify",
    "Factor:": "math_factor",
    "Solve:": "math_solve",
    "Diff:": "math_diff",
    "Integrate:": "math_integrate",
    "Limit:": "math_limit",
    "Run:": "python_exec",
}
ANSWER_PREFIX = "Answer:"
_ARITHMETIC = r"[-+*/^().\d\s]*\d[-+*/^().\d\s]*[-+*/^][-+*/^().\d\s]*\d[-+*/^().\d\s]*"
_LABELLED_ARITHMETIC = re.compile(rf"(?:[A-Za-z][A-Za-z ]*:)?\s*({_ARITHMETIC})(?:=\s*[^=]*)?")
_CLAIM = re.compile(rf"({_ARITHMETIC})=\s*(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Step:
    kind: str  # "thought" | "tool" | "answer"
    text: str  # the line as it enters the context (tool steps carry their result)
    tool: str | None = None
    tool_input: str | None = None
    tool_output: str | None = None
    tool_ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def _tools() -> dict[str, Tool]:
    return {t.name: t for t in [*math_tools(), sandbox_tool()]}


def tool_arguments(name: str, argument: str) -> dict[str, Any]:
    """A step's text after its prefix -> the tool's arguments."""
    if name == "math_solve":
        return {"equations": [e.strip() for e in re.split(r"[;,]", argument) if e.strip()]}
    if name == "math_integrate":
        match = re.fullmatch(r"(.+?)\s+from\s+(\S+)\s+to\s+(\S+)", argument)
        return {"expression": match.group(1), "lower": match.group(2), "upper": match.group(3)} if match else {
            "expression": argument}
    if name == "math_limit":
        match = re.fullmatch(r"(.+?)\s+as\s+([a-z])\s*->\s*(\S+)", argument)
        return {"expression": match.group(1), "variable": match.group(2), "point": match.group(3)} if match else {
            "expression": argument, "point": "0"}
    if name == "python_exec":
        return {"code": argument, "timeout_s": 5}
    return {"expression": argument}


def run_tool(name: str, argument: str) -> tuple[str, bool]:
    """Run one step's tool call; (output text, whether it ran without error)."""
    output = _tools()[name](tool_arguments(name, argument))
    ok = not output.startswith("Error")
    if name == "python_exec":  # "status: ...\n--- stdout ---\n..." -> the stdout, on one line
        ok = output.startswith("status: exit code 0")
        match = re.search(r"--- stdout ---\n(.*?)(?:\n--- stderr ---|\Z)", output, re.S)
        output = (match.group(1) if match else output).strip().replace("\n", " | ")
    return output.replace("\n", "; ")[:200], ok


def parse_step(line: str) -> Step:
    """One generated line -> a Step; tool steps are run and their result written into the line."""
    line = line.strip()
    if line.startswith(ANSWER_PREFIX):
        return Step("answer", line)
    for prefix, tool in TOOL_PREFIXES.items():
        if line.startswith(prefix):
            argument = line[len(prefix):].strip()
            if prefix == "Run:":
                joiner = " -> "
            else:  # drop a result the model guessed ("= 84", "=> x = 4"): the tool writes the real one
                argument = argument.split("=>")[0].strip()
                if prefix != "Solve:":
                    argument = re.split(r"\s=\s*[^=]*$", argument)[0]
                joiner = " => " if prefix == "Solve:" else " = "
            output, ok = run_tool(tool, argument)
            return Step("tool", f"{prefix} {argument}{joiner}{output}", tool, argument, output, ok)
    labelled = _LABELLED_ARITHMETIC.fullmatch(line)
    if labelled:
        return parse_step(f"Calc: {labelled.group(1).strip()}")
    return Step("thought", line, tool_ok=all(_claim_holds(e, v) for e, v in _CLAIM.findall(line)))


def _claim_holds(expression: str, value: str) -> bool:
    try:
        return abs(arithmetic(expression.replace("^", "**")) - float(value)) <= 1e-6 * max(1.0, abs(float(value)))
    except (MathToolError, ValueError, TypeError):
        return True  # not checkable arithmetic: no verdict


def answer_of(step: Step) -> str | None:
    """The final answer a step states; of "Answer: 180/3 = 60" that is what follows the last "="."""
    if step.kind != "answer":
        return None
    return step.text[len(ANSWER_PREFIX):].split("=")[-1].strip() or None
