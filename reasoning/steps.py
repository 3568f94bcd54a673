"""Reasoning steps: one line of model output each, parsed and, for tool steps, run.

The step format is tool-first, because a 135M model cannot do arithmetic on its own (it answers
"12 times 7" with 78) but can write the expression:

    Calc: 3*12 - 5            -> a sympy call; the line becomes "Calc: 3*12 - 5 = 31"
    Solve: 2*x + 3 = 11       -> a sympy solve; the line becomes "Solve: 2*x + 3 = 11 => x = 4"
    Run: print(sum(range(5))) -> Python in the sandbox; the output is appended
    Answer: 31                -> the final answer
    anything else             -> a thought

Tools are called through the one `Tool` type (tools/tool.py), so a failing call comes back as text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from tools.math import math_tools
from tools.sandbox import sandbox_tool
from tools.tool import Tool

TOOL_PREFIXES = {"Calc:": "math_simplify", "Solve:": "math_solve", "Run:": "python_exec"}
ANSWER_PREFIX = "Answer:"


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


def run_tool(name: str, argument: str) -> tuple[str, bool]:
    """Run one step's tool call; (output text, whether it ran without error)."""
    tool = _tools()[name]
    if name == "math_simplify":
        output = tool({"expression": argument})
    elif name == "math_solve":
        output = tool({"equations": [e.strip() for e in argument.split(";") if e.strip()]})
    else:
        output = tool({"code": argument, "timeout_s": 5})
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
            if prefix == "Calc:":  # drop a result the model guessed ("= 84"): the tool writes the real one
                argument = re.split(r"\s=\s*[^=]*$", argument)[0]
            elif prefix == "Solve:":
                argument = argument.split("=>")[0].strip()
            output, ok = run_tool(tool, argument)
            joiner = " => " if prefix == "Solve:" else (" -> " if prefix == "Run:" else " = ")
            return Step("tool", f"{prefix} {argument}{joiner}{output}", tool, argument, output, ok)
    return Step("thought", line)


def answer_of(step: Step) -> str | None:
    if step.kind != "answer":
        return None
    return step.text[len(ANSWER_PREFIX):].strip() or None
