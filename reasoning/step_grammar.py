"""The grammar of one reasoning step, for llguidance (model/grammar.py): what the model may write next.

A step is one of the forms of reasoning/steps.py, ended by a newline (or, for a code answer, by the closing
fence); once it is complete the grammar allows only end-of-sequence, so the grammar, not a stop string, ends
the step. A tool call's arguments are JSON valid under that tool's schema, tightened for a small model: no
nulls, no extra keys, and strings limited to maths syntax (or to an identifier for a variable). A math answer
must be one of the results the path's tool calls computed; a code answer is a fenced block.

    source = step_grammar(["Calc", "Solve"], answers=["31"])      # Lark source with %json tool schemas
    processor = compiler.processor(compiler.lark(source))        # model.grammar.GrammarCompiler
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from model.grammar import JSON_OPTIONS
from reasoning.steps import ANSWER_PREFIX, THOUGHT_PREFIX, TOOL_LABELS, step_tools

# JSON Schema patterns match anywhere in a string unless anchored.
_EXPRESSION = r"^[-+*/^()., 0-9A-Za-z_]{1,80}$"  # sympy syntax, no "=": a result is the tool's to write
_EQUATION = r"^[-+*/^()., 0-9A-Za-z_]{1,40}=[-+*/^()., 0-9A-Za-z_]{1,40}$"
_IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]{0,15}$"
_FIELD_PATTERNS = {"variable": _IDENTIFIER, "variables": _IDENTIFIER, "equations": _EQUATION}
_HIDDEN_FIELDS = {"timeout_s"}  # set by the step runner, not the model
_MAX_CODE_CHARS = 400  # of a Run call


def step_grammar(labels: Sequence[str], *, answers: Sequence[str] | None = None, code_answer: bool = False,
                 thoughts: bool = True) -> str:
    """Lark source of one step: a call of a tool among `labels` (keys of steps.TOOL_LABELS), a thought, or an
    answer (one of `answers`; none offered while that is empty) or, with `code_answer`, a fenced function."""
    rules = {label.lower(): f'"{label}: " %json {json.dumps(_call_schema(label))} "\\n"' for label in labels}
    if thoughts:
        rules["thought"] = f'"{THOUGHT_PREFIX} " /[^\\n]{{1,200}}/ "\\n"'
    if code_answer:
        rules["answer"] = f'"{ANSWER_PREFIX}\\n```python\\n" /([^`\\n]*\\n){{1,80}}/ "```\\n"'
    elif answers:
        rules["answer"] = f'"{ANSWER_PREFIX} " ({" | ".join(json.dumps(a) for a in answers)}) "\\n"'
    if not rules:
        raise ValueError("a step grammar needs at least one form")
    return "\n".join([f"start: {' | '.join(rules)}", *(f"{name}: {body}" for name, body in rules.items())])


@lru_cache(maxsize=None)
def _call_schema(label: str) -> dict[str, Any]:
    """The JSON schema a step's arguments must follow: the tool's own, tightened (see the module docstring)."""
    schema = step_tools()[TOOL_LABELS[label]].schema
    properties = {name: _tightened(name, field) for name, field in schema["properties"].items()
                  if name not in _HIDDEN_FIELDS}
    return {"type": "object", "properties": properties, "required": list(schema.get("required", [])),
            "additionalProperties": False, "x-guidance": JSON_OPTIONS}


def _tightened(name: str, field: dict[str, Any]) -> dict[str, Any]:
    options = [f for f in field.get("anyOf", [field]) if f.get("type") != "null"]
    field = {k: v for k, v in options[0].items() if k not in ("description", "default", "title")}
    if field.get("type") == "string" and "enum" not in field:
        if name == "code":
            return {"type": "string", "minLength": 1, "maxLength": _MAX_CODE_CHARS}
        return {"type": "string", "pattern": _FIELD_PATTERNS.get(name, _EXPRESSION)}
    if field.get("type") == "array" and field.get("items", {}).get("type") == "string":
        return {"type": "array", "items": {"type": "string", "pattern": _FIELD_PATTERNS.get(name, _EXPRESSION)},
                "minItems": 1, "maxItems": 4}
    return field
