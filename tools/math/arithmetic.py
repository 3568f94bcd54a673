"""`arithmetic()`: plain numbers and + - * / ** with Python float semantics, without eval."""

from __future__ import annotations

import ast
import math
import time

from tools.math.checks import (
    DEFAULT_TIMEOUT_S,
    MathToolError,
    _check_length,
    _node_label,
    _operator_text,
    _parse_python_expr,
    check_timeout,
)

# arithmetic(): an int result or operand above this many bits is refused, so
# no product or power can take noticeable time or memory (10**30103 ~ 100k bits;
# float() of anything above ~1024 bits overflows anyway).
_ARITH_MAX_INT_BITS = 100_000


# ---------------------------------------------------------------------------
# arithmetic(): plain numbers and + - * / ** with Python float semantics
# ---------------------------------------------------------------------------

_ARITH_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)


def arithmetic(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Evaluate plain arithmetic exactly as Python would, without `eval`, and return a float.

    Accepts int/float literals, `+ - * / **`, unary `+`/`-` and parentheses. Ints stay
    exact until the end (so `arithmetic(s) == float(eval(s))` for every accepted `s`);
    `/` is true division. Raises `MathToolError` for anything else, for division by
    zero ("division by zero"), for results that are complex or overflow a float, and
    for integers too large to compute quickly. Runs in-process: every step is bounded,
    and `timeout_s` is checked as nodes are evaluated.
    """
    deadline = time.monotonic() + check_timeout(timeout_s)
    _check_length(expression)
    tree = _parse_python_expr(expression)
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
        if type(node.value) is int:
            return node.value
        if type(node.value) is float:
            return _finite(node.value)  # a literal such as 1e999 is already inf
        raise MathToolError(f"only numbers are allowed, got {node.value!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _arith_eval(node.operand, deadline)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH_BINOPS):
        left = _arith_eval(node.left, deadline)
        right = _arith_eval(node.right, deadline)
        return _arith_binop(type(node.op), left, right)
    if isinstance(node, ast.BinOp):
        hint = "use ** for powers" if isinstance(node.op, ast.BitXor) else "use + - * / **"
        raise MathToolError(f"operator {_operator_text(node.op)!r} is not allowed ({hint})")
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
    return _finite(result) if isinstance(result, float) else result


def _finite(value: float) -> float:
    """`value`, or MathToolError for inf (float arithmetic overflows to inf without raising,
    and inf - inf is nan): the caller gets an error, never a non-number."""
    if not math.isfinite(value):
        raise MathToolError("result too large for a float")
    return value
