"""The grammar of one reasoning step, for llguidance (model/serving/grammar.py): what the model may write next.

A step is one of the forms of reasoning/steps.py, ended by a newline (or, for a code answer, by the closing
fence); once it is complete the grammar allows only end-of-sequence, so the grammar, not a stop string, ends
the step. A tool call's arguments are JSON valid under that tool's schema, tightened for a small model: no
nulls, no extra keys, and strings limited to maths syntax (or to an identifier for a variable). A math answer
must be one of the results the path's tool calls computed; a code answer is a fenced block. Given `numbers`, a
Calc call may use only those (the problem's and the earlier results: reasoning/grounding.py), so the model
cannot hand the calculator a number it made up; given `arguments`, a symbolic call may pass only the expression,
point or bounds the problem states (a limit "as x approaches infinity" is taken at "oo", not at 0), and an integral
with stated bounds must pass them.

    source = step_grammar(["Calc", "Solve"], answers=["31"])      # Lark source with %json tool schemas
    processor = compiler.processor(compiler.lark(source))        # model.serving.grammar.GrammarCompiler
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from model.serving.grammar import JSON_OPTIONS
from reasoning.steps import ANSWER_PREFIX, THOUGHT_PREFIX, TOOL_LABELS, step_tools

# JSON Schema patterns match anywhere in a string unless anchored. A number has at most 9 digits (and 6 after the
# point): left free, the model runs away into "1000000000000..." until the step's token cap.
_NUMBER = r"[0-9]{1,9}(?:\.[0-9]{1,6})?"
_SYMBOLS = r"[-+*/^(), A-Za-z_]"
# starts with a number, a name or a sign/bracket before one (so not ", "); numbers alternate with symbols
_TERM = rf"[-(]*(?:{_NUMBER}|[A-Za-z_])(?:{_SYMBOLS}+(?:{_NUMBER})?)*"
_EXPRESSION = rf"^{_TERM}$"  # sympy syntax without "=": a result is the tool's to write
_EQUATION = rf"^{_TERM}(?:=|<|>|<=|>=) ?{_TERM}$"  # an equation, or an inequality (a range, a domain)
_POINT = rf"^-?(?:oo|(?:{_NUMBER}|pi|E)(?:/[0-9]{{1,6}})?)$"  # a limit's point, an integral's bound
_IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]{0,15}$"
_FIELD_PATTERNS = {
    "variable": _IDENTIFIER,
    "variables": _IDENTIFIER,
    "equations": _EQUATION,
    "point": _POINT,
    "lower": _POINT,
    "upper": _POINT,
}
_MAX_EXPRESSION_CHARS = 80
_HIDDEN_FIELDS = {"timeout_s"}  # set by the step runner, not the model
_MAX_CODE_CHARS = 400  # of a Run call


def step_grammar(
    labels: Sequence[str],
    *,
    answers: Sequence[str] | None = None,
    numbers: Sequence[str] | None = None,
    arguments: Mapping[str, Sequence[str]] | None = None,
    code_answer: bool = False,
    thoughts: bool = True,
) -> str:
    """Lark source of one step: a call of a tool among `labels` (keys of steps.TOOL_LABELS), a thought, or an
    answer (one of `answers`; none offered while that is empty) or, with `code_answer`, a fenced function.
    `numbers`: the only numbers a Calc call may write (None or empty: any). `arguments`: the only values the other
    tools' string arguments of those names may take ({"point": ["oo"]}: a limit at infinity)."""
    calc_numbers = tuple(sorted(set(numbers), key=lambda n: (-len(n), n))) if numbers else None
    fixed = tuple((name, tuple(values)) for name, values in sorted((arguments or {}).items()) if values)
    schemas = {
        label: _call_schema(label, calc_numbers) if label == "Calc" else _call_schema(label, fixed=fixed)
        for label in labels
    }
    rules = {label.lower(): f'"{label}: " %json {json.dumps(schema)} "\\n"' for label, schema in schemas.items()}
    if thoughts:
        rules["thought"] = f'"{THOUGHT_PREFIX} " /[^\\n]{{1,200}}/ "\\n"'
    if code_answer:
        rules["answer"] = f'"{ANSWER_PREFIX}\\n```python\\n" /([^`\\n]{{0,160}}\\n){{1,60}}/ "```\\n"'
    elif answers:
        rules["answer"] = f'"{ANSWER_PREFIX} " ({" | ".join(json.dumps(a) for a in answers)}) "\\n"'
    if not rules:
        raise ValueError("a step grammar needs at least one form")
    return "\n".join([f"start: {' | '.join(rules)}", *(f"{name}: {body}" for name, body in rules.items())])


@lru_cache(maxsize=1024)
def _call_schema(
    label: str, calc_numbers: tuple[str, ...] | None = None, fixed: tuple[tuple[str, tuple[str, ...]], ...] = ()
) -> dict[str, Any]:
    """The JSON schema a step's arguments must follow: the tool's own, tightened (see the module docstring)."""
    schema = step_tools()[TOOL_LABELS[label]].schema
    properties = {
        name: _tightened(name, field) for name, field in schema["properties"].items() if name not in _HIDDEN_FIELDS
    }
    for name, values in fixed:
        if properties.get(name, {}).get("type") == "string":
            properties[name] = {"type": "string", "enum": list(values)}
    if label == "Calc" and calc_numbers:
        # No maxLength here: with a list of numbers nothing can run away, and llguidance's emptiness check of a
        # length-bounded alternation sometimes runs out of fuel (the grammar then does not compile).
        properties["expression"].pop("maxLength")
        properties["expression"]["pattern"] = _arithmetic(f"(?:{'|'.join(re.escape(n) for n in calc_numbers)})")
    elif label == "Calc":
        properties["expression"]["pattern"] = _arithmetic(_NUMBER)
    domain = dict(fixed).get("domain")
    if label == "Solve" and domain:  # an interval the wording gives: its inequalities go beside the equation
        properties["equations"] = {**properties["equations"], "minItems": len(domain) + 1}
    required = list(schema.get("required", []))
    bounds = [name for name, _ in fixed if name in ("lower", "upper") and name in properties]
    if len(bounds) == 2:  # the problem states bounds: a definite integral (grounding.wording_allows)
        required += [name for name in bounds if name not in required]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "x-guidance": JSON_OPTIONS,
    }


def _tightened(name: str, field: dict[str, Any]) -> dict[str, Any]:
    options = [f for f in field.get("anyOf", [field]) if f.get("type") != "null"]
    field = {k: v for k, v in options[0].items() if k not in ("description", "default", "title")}
    if field.get("type") == "string" and "enum" not in field:
        if name == "code":
            return {"type": "string", "minLength": 1, "maxLength": _MAX_CODE_CHARS}
        return _maths_string(name)
    if field.get("type") == "array" and field.get("items", {}).get("type") == "string":
        return {"type": "array", "items": _maths_string(name), "minItems": 1, "maxItems": 4}
    return field


def _arithmetic(number: str) -> str:
    """A Calc step's pattern: numbers (matching `number`) and operators only, no names."""
    return rf"^[-(]*{number}(?:[-+*/^() ]+(?:{number})?)*$"


def _maths_string(name: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": _MAX_EXPRESSION_CHARS,
        "pattern": _FIELD_PATTERNS.get(name, _EXPRESSION),
    }
