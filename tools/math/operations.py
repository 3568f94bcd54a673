"""The plain-Python API of the symbolic tools: check the input here, compute in the worker."""

from __future__ import annotations

from typing import Any, Literal

from tools.math.checks import (
    _MATRIX_BINARY,
    _MATRIX_UNARY,
    DEFAULT_TIMEOUT_S,
    MathToolError,
    MatrixOperation,
    _split_equation,
    check_expression,
    check_variable,
)
from tools.math.worker import MathWorker, shared_worker

def _run(op: str, args: dict[str, Any], timeout_s: float, worker: MathWorker | None) -> Any:
    return (worker or shared_worker()).call(op, args, timeout_s=timeout_s)


def _check_optional(text: str | None, what: str) -> None:
    if text is not None:
        check_expression(text, what=what)


def simplify(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Simplified form of `expression`, e.g. 'sin(x)**2 + cos(x)**2' -> '1'."""
    check_expression(expression)
    return _run("simplify", {"expression": expression}, timeout_s, worker)


def expand(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Expanded form, e.g. '(x + 1)**2' -> 'x**2 + 2*x + 1'."""
    check_expression(expression)
    return _run("expand", {"expression": expression}, timeout_s, worker)


def factor(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Factored polynomial ('x**2 - 1' -> '(x - 1)*(x + 1)') or prime factors of an integer ('360' -> '2**3*3**2*5')."""
    check_expression(expression)
    return _run("factor", {"expression": expression}, timeout_s, worker)


def solve(equations: str | list[str], variables: str | list[str] | None = None, *,
          timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> list[dict[str, str]]:
    """Solutions of one equation or a system, as a list of {variable: value} dicts.

    Each equation is 'lhs = rhs' or an expression meaning '= 0'. Without `variables`,
    solves for every free symbol. `[]` means no solution; a dict missing a variable means
    that variable is free (infinitely many solutions). Solutions may be complex.
    """
    eqs = [equations] if isinstance(equations, str) else list(equations)
    if not eqs:
        raise MathToolError("no equations given")
    for text in eqs:
        for side in _split_equation(text):
            _check_optional(side, "equation")
    names = [variables] if isinstance(variables, str) else variables
    names = [check_variable(v) for v in names] if names else None
    return _run("solve", {"equations": eqs, "variables": names}, timeout_s, worker)


def diff(expression: str, variable: str | None = None, order: int = 1, *,
         timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """`order`-th derivative with respect to `variable` (may be omitted if there is only one)."""
    check_expression(expression)
    if variable is not None:
        check_variable(variable)
    if not 1 <= order <= 100:
        raise MathToolError(f"order must be between 1 and 100, got {order}")
    return _run("diff", {"expression": expression, "variable": variable, "order": order}, timeout_s, worker)


def integrate(expression: str, variable: str | None = None, lower: str | None = None, upper: str | None = None, *,
              timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Antiderivative (no constant added), or the definite integral when `lower` and `upper` are given.

    Bounds are expressions ('0', 'pi', 'oo'). An answer containing 'Integral(' means sympy
    found no closed form.
    """
    check_expression(expression)
    if variable is not None:
        check_variable(variable)
    _check_optional(lower, "lower bound")
    _check_optional(upper, "upper bound")
    return _run("integrate", {"expression": expression, "variable": variable, "lower": lower, "upper": upper},
                timeout_s, worker)


def limit(expression: str, point: str, variable: str | None = None, direction: Literal["+", "-", "+-"] = "+-", *,
          timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Limit of `expression` as `variable` -> `point` ('0', 'oo', '-oo', 'pi/2').

    `direction` is '+' (from above), '-' (from below) or '+-' (two-sided; 'zoo' means the
    one-sided limits differ or are infinite with different signs).
    """
    check_expression(expression)
    check_expression(point, what="point")
    if variable is not None:
        check_variable(variable)
    if direction not in ("+", "-", "+-"):
        raise MathToolError(f"direction must be '+', '-' or '+-', got {direction!r}")
    return _run("limit", {"expression": expression, "variable": variable, "point": point, "direction": direction},
                timeout_s, worker)


def series(expression: str, variable: str | None = None, point: str = "0", order: int = 6, *,
           timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Taylor/Laurent series around `point` up to (not including) power `order`, with an O() term."""
    check_expression(expression)
    check_expression(point, what="point")
    if variable is not None:
        check_variable(variable)
    if not 1 <= order <= 50:
        raise MathToolError(f"order must be between 1 and 50, got {order}")
    return _run("series", {"expression": expression, "variable": variable, "point": point, "order": order},
                timeout_s, worker)


def evaluate(expression: str, digits: int = 15, values: dict[str, str] | None = None, *,
             timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Numeric value to `digits` significant digits, after substituting `values` ({'x': '2'}).

    Returns text such as '3.14159265358979' or '1.0 + 2.0*I'; symbols left unassigned stay symbolic.
    """
    check_expression(expression)
    if not 1 <= digits <= 1000:
        raise MathToolError(f"digits must be between 1 and 1000, got {digits}")
    for name, value in (values or {}).items():
        check_variable(name)
        check_expression(value, what=f"value of {name}")
    return _run("evaluate", {"expression": expression, "digits": digits, "values": values}, timeout_s, worker)


def matrix(operation: MatrixOperation, a: str, b: str | None = None, *,
           timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Matrix operation on `a` (and `b`), matrices written as row lists: '[[1, 2], [3, 4]]'.

    Operations: det, inverse, rank, trace, transpose, eigenvals ({value: multiplicity}),
    eigenvects ([(value, multiplicity, [vectors])]), rref, nullspace, and with `b`:
    multiply, add, subtract. Matrix results are row lists.
    """
    if operation not in _MATRIX_UNARY + _MATRIX_BINARY:
        raise MathToolError(f"unknown matrix operation {operation!r} (allowed: {', '.join(_MATRIX_UNARY + _MATRIX_BINARY)})")
    check_expression(a, allow_lists=True, what="matrix a")
    if b is not None:
        check_expression(b, allow_lists=True, what="matrix b")
    return _run("matrix", {"operation": operation, "a": a, "b": b}, timeout_s, worker)


def equal(a: str, b: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> bool:
    """Whether expressions `a` and `b` are mathematically equal (for all values of their symbols).

    Symbolic first (simplify(a - b) == 0, then sympy's `equals`); if sympy cannot decide,
    compares at random points, so a True may rest on numeric evidence. Raises
    `MathToolError` if even that is inconclusive.
    """
    check_expression(a, what="first expression")
    check_expression(b, what="second expression")
    return _run("equal", {"a": a, "b": b}, timeout_s, worker)

