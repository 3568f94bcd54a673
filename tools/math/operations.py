"""The plain-Python API of the symbolic tools: check the input here, compute in the worker.

Every function checks its arguments' types and values at this boundary (`CallArguments`)
and raises only `MathToolError`. The clock for `timeout_s` starts before those checks, and
the worker gets the arguments in the normalised form that was checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from tools.math.checks import (
    _MATRIX_BINARY,
    _MATRIX_UNARY,
    DEFAULT_TIMEOUT_S,
    CallArguments,
    MathToolError,
    MatrixOperation,
    check_timeout,
)
from tools.math.worker import MathWorker, shared_worker


def _run(op: str, check: Callable[[CallArguments], dict[str, Any]], timeout_s: float, worker: MathWorker | None) -> Any:
    """Check the arguments with `check`, then run `op` in the worker; checking counts against `timeout_s`."""
    started = time.monotonic()
    timeout_s = check_timeout(timeout_s)
    args = check(CallArguments())
    return (worker or shared_worker()).call(op, args, timeout_s=timeout_s, spent_s=time.monotonic() - started)


def simplify(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Simplified form of `expression`, e.g. 'sin(x)**2 + cos(x)**2' -> '1'."""
    return _run("simplify", lambda a: {"expression": a.expression(expression)}, timeout_s, worker)


def latex(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """The expression as LaTeX, terms in the order written (for display: 'x**3*cos(x)' -> 'x^{3} \\cos{\\left(x \\right)}')."""
    return _run("latex", lambda a: {"expression": a.expression(expression)}, timeout_s, worker)


def expand(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Expanded form, e.g. '(x + 1)**2' -> 'x**2 + 2*x + 1'."""
    return _run("expand", lambda a: {"expression": a.expression(expression)}, timeout_s, worker)


def factor(expression: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> str:
    """Factored polynomial ('x**2 - 1' -> '(x - 1)*(x + 1)') or prime factors of an integer ('360' -> '2**3*3**2*5')."""
    return _run("factor", lambda a: {"expression": a.expression(expression)}, timeout_s, worker)


def solve(
    equations: str | list[str],
    variables: str | list[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> list[dict[str, str]]:
    """Solutions of one equation or a system, as a list of {variable: value} dicts.

    Each equation is 'lhs = rhs' or an expression meaning '= 0'. Without `variables`,
    solves for every free symbol. `[]` means no solution; a dict missing a variable means
    that variable is free (infinitely many solutions). Solutions may be complex.
    In one variable, inequalities ('x >= 0', <, >, <=) restrict the solutions to the reals they
    allow (every solution in [0, 2*pi] of 'sin(x) = 0'); inequalities alone give the range as a
    relation: [{'x': 'x > 3'}], [{'x': '-3 < x < 3'}].
    """

    def check(a: CallArguments) -> dict[str, Any]:
        eqs = a.items(equations, "equations", a.equation)
        if not eqs:
            raise MathToolError("no equations given")
        names = None if variables is None else a.items(variables, "variables", a.variable)
        return {"equations": eqs, "variables": names or None}

    return _run("solve", check, timeout_s, worker)


def diff(
    expression: str,
    variable: str | None = None,
    order: int = 1,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """`order`-th derivative with respect to `variable` (may be omitted if there is only one)."""
    return _run(
        "diff",
        lambda a: {
            "expression": a.expression(expression),
            "variable": a.optional_variable(variable),
            "order": a.integer(order, "order", 1, 100),
        },
        timeout_s,
        worker,
    )


def integrate(
    expression: str,
    variable: str | None = None,
    lower: str | None = None,
    upper: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """Antiderivative (no constant added), or the definite integral when `lower` and `upper` are given.

    Bounds are expressions ('0', 'pi', 'oo'). An answer containing 'Integral(' means sympy
    found no closed form.
    """
    return _run(
        "integrate",
        lambda a: {
            "expression": a.expression(expression),
            "variable": a.optional_variable(variable),
            "lower": a.optional_expression(lower, "lower bound"),
            "upper": a.optional_expression(upper, "upper bound"),
        },
        timeout_s,
        worker,
    )


def limit(
    expression: str,
    point: str,
    variable: str | None = None,
    direction: Literal["+", "-", "+-"] = "+-",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """Limit of `expression` as `variable` -> `point` ('0', 'oo', '-oo', 'pi/2').

    `direction` is '+' (from above), '-' (from below) or '+-' (two-sided; 'zoo' means the
    one-sided limits differ or are infinite with different signs).
    """
    return _run(
        "limit",
        lambda a: {
            "expression": a.expression(expression),
            "variable": a.optional_variable(variable),
            "point": a.expression(point, "point"),
            "direction": a.choice(direction, "direction", ("+", "-", "+-")),
        },
        timeout_s,
        worker,
    )


def series(
    expression: str,
    variable: str | None = None,
    point: str = "0",
    order: int = 6,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """Taylor/Laurent series around `point` up to (not including) power `order`, with an O() term."""
    return _run(
        "series",
        lambda a: {
            "expression": a.expression(expression),
            "variable": a.optional_variable(variable),
            "point": a.expression(point, "point"),
            "order": a.integer(order, "order", 1, 50),
        },
        timeout_s,
        worker,
    )


def evaluate(
    expression: str,
    digits: int = 15,
    values: dict[str, str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """Numeric value to `digits` significant digits, after substituting `values` ({'x': '2'}).

    Returns text such as '3.14159265358979' or '1.0 + 2.0*I'; symbols left unassigned stay symbolic.
    """
    return _run(
        "evaluate",
        lambda a: {
            "expression": a.expression(expression),
            "digits": a.integer(digits, "digits", 1, 1000),
            "values": a.values(values),
        },
        timeout_s,
        worker,
    )


def matrix(
    operation: MatrixOperation,
    a: str,
    b: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathWorker | None = None,
) -> str:
    """Matrix operation on `a` (and `b`), matrices written as row lists: '[[1, 2], [3, 4]]'.

    Operations: det, inverse, rank, trace, transpose, eigenvals ({value: multiplicity}),
    eigenvects ([(value, multiplicity, [vectors])]), rref, nullspace, and with `b`:
    multiply, add, subtract. Matrix results are row lists.
    """
    return _run(
        "matrix",
        lambda args: {
            "operation": args.choice(operation, "matrix operation", _MATRIX_UNARY + _MATRIX_BINARY),
            "a": args.expression(a, "matrix a", allow_lists=True),
            "b": None if b is None else args.expression(b, "matrix b", allow_lists=True),
        },
        timeout_s,
        worker,
    )


def equal(a: str, b: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> bool:
    """Whether expressions `a` and `b` are mathematically equal (for all values of their symbols).

    Symbolic first (simplify(a - b) == 0, then sympy's `equals`); if sympy cannot decide,
    compares at random points, so a True may rest on numeric evidence. Raises
    `MathToolError` if even that is inconclusive.
    """
    return _run(
        "equal",
        lambda args: {"a": args.expression(a, "first expression"), "b": args.expression(b, "second expression")},
        timeout_s,
        worker,
    )
