"""Math tools: safe arithmetic and sandboxed symbolic maths (sympy).

`arithmetic()` evaluates plain arithmetic in-process with a pure AST walker.
"""

from __future__ import annotations

import ast
import time

MAX_EXPRESSION_CHARS = 10_000
DEFAULT_TIMEOUT_S = 2.0

# arithmetic(): an int result or operand above this many bits is refused, so
# no product or power can take noticeable time or memory (10**30103 ~ 100k bits;
# float() of anything above ~1024 bits overflows anyway).
_ARITH_MAX_INT_BITS = 100_000


class MathToolError(ValueError):
    """Bad input to a math tool, or a computation that hit a limit (time, memory, size)."""


def _check_length(text: str, what: str = "expression") -> None:
    if not isinstance(text, str):
        raise MathToolError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise MathToolError(f"{what} too long ({len(text)} chars > {MAX_EXPRESSION_CHARS} limit)")
    if not text.strip():
        raise MathToolError(f"{what} is empty")


def _parse_python_expr(text: str) -> ast.Expression:
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        detail = "" if e.msg == "invalid syntax" else f": {e.msg}"
        raise MathToolError(f"invalid syntax{detail}") from None
    except (RecursionError, MemoryError):
        raise MathToolError("expression too deeply nested") from None
    except ValueError as e:  # e.g. an integer literal longer than 4300 digits
        raise MathToolError(f"invalid expression: {e}") from None


# ---------------------------------------------------------------------------
# arithmetic(): plain numbers and + - * / ** with Python float semantics
# ---------------------------------------------------------------------------

_ARITH_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def arithmetic(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Evaluate plain arithmetic exactly as Python would, without `eval`, and return a float.

    Accepts int/float literals, `+ - * / **`, unary `+`/`-` and parentheses. Ints stay
    exact until the end (so `arithmetic(s) == float(eval(s))` for every accepted `s`);
    `/` is true division. Raises `MathToolError` for anything else, for division by
    zero ("division by zero"), for results that are complex or overflow a float, and
    for integers too large to compute quickly. Runs in-process: every step is bounded,
    and `timeout_s` is checked as nodes are evaluated.
    """
    _check_length(expression)
    tree = _parse_python_expr(expression)
    deadline = time.monotonic() + timeout_s
    try:
        value = _arith_eval(tree.body, deadline)
    except RecursionError:
        raise MathToolError("expression too deeply nested") from None
    if isinstance(value, complex):
        raise MathToolError("result is a complex number")
    try:
        return float(value)
    except OverflowError:
        raise MathToolError("result too large for a float") from None


def _arith_eval(node: ast.AST, deadline: float) -> int | float | complex:
    if time.monotonic() > deadline:
        raise MathToolError("arithmetic timed out")
    if isinstance(node, ast.Constant):
        # bool is an int subclass; reject it along with str, complex, None, ...
        if type(node.value) in (int, float):
            return node.value
        raise MathToolError(f"only numbers are allowed, got {node.value!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _arith_eval(node.operand, deadline)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH_BINOPS:
        left = _arith_eval(node.left, deadline)
        right = _arith_eval(node.right, deadline)
        return _arith_binop(type(node.op), left, right)
    if isinstance(node, ast.BinOp):
        raise MathToolError(f"operator {type(node.op).__name__} is not allowed (use + - * / **)")
    raise MathToolError(f"{_node_label(node)} is not allowed in arithmetic")


def _arith_binop(op: type, a, b):
    if isinstance(a, complex) or isinstance(b, complex):
        raise MathToolError("result is a complex number")
    both_int = isinstance(a, int) and isinstance(b, int)
    try:
        if op is ast.Add:
            result = a + b
        elif op is ast.Sub:
            result = a - b
        elif op is ast.Mult:
            if both_int and a.bit_length() + b.bit_length() > _ARITH_MAX_INT_BITS:
                raise MathToolError("integer result too large (over 100000 bits)")
            result = a * b
        elif op is ast.Div:
            result = a / b
        else:  # ast.Pow
            if both_int and b > 0 and abs(a) > 1 and (abs(a).bit_length() - 1) * b > _ARITH_MAX_INT_BITS:
                raise MathToolError("exponent too large (integer result over 100000 bits)")
            result = a**b
    except ZeroDivisionError:
        raise MathToolError("division by zero") from None
    except OverflowError:
        raise MathToolError("result too large for a float") from None
    if isinstance(result, int) and result.bit_length() > _ARITH_MAX_INT_BITS:
        raise MathToolError("integer result too large (over 100000 bits)")
    return result


_NODE_LABELS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripting",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "a string",
    ast.Call: "a function call",
    ast.Name: "a name",
    ast.Starred: "unpacking (*)",
    ast.NamedExpr: "assignment (:=)",
    ast.IfExp: "a conditional expression",
    ast.BoolOp: "and/or",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _node_label(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"name {node.id!r}"
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return "a string"
    return _NODE_LABELS.get(type(node), type(node).__name__)
