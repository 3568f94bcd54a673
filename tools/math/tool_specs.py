"""`math_tools()`: the symbolic operations as `tools.tool.Tool`s."""

from __future__ import annotations

import functools
import re
from typing import Literal

from pydantic import BaseModel, Field

from tools.math.checks import DEFAULT_TIMEOUT_S, MathToolError, MatrixOperation
from tools.math.operations import (
    diff,
    equal,
    evaluate,
    expand,
    factor,
    integrate,
    limit,
    matrix,
    series,
    simplify,
    solve,
)
from tools.math.worker import MathWorker
from tools.tool import Tool

_SYNTAX = (
    "Python/sympy syntax: ** or ^ for powers, * for every product (2*x, not 2x), "
    "sqrt, exp, log (natural), sin, cos, tan, asin, factorial, Abs, ...; constants pi, E, I, "
    "oo (infinity). Example: 'sin(x)^2 + cos(x)^2'."
)
_VARIABLE = "Variable name, e.g. 'x'. May be omitted when the expression has exactly one variable."


class ExpressionArgs(BaseModel):
    expression: str = Field(description=f"The expression. {_SYNTAX}")


class SolveArgs(BaseModel):
    equations: list[str] = Field(
        description="One or more equations, e.g. ['x + y = 3', 'x - y = 1']; "
        "an expression alone means '= 0'. In one variable, inequalities too: "
        "alone (['2*x + 1 > 7'] -> 'x > 3') or as a domain (['sin(x) = 0', "
        f"'x >= 0', 'x <= 2*pi']). {_SYNTAX}"
    )
    variables: list[str] | None = Field(None, description="Variables to solve for; default: all of them.")


class DiffArgs(BaseModel):
    expression: str = Field(description=f"The expression to differentiate. {_SYNTAX}")
    variable: str | None = Field(None, description=_VARIABLE)
    order: int = Field(1, ge=1, le=100, description="How many times to differentiate.")


class IntegrateArgs(BaseModel):
    expression: str = Field(description=f"The integrand. {_SYNTAX}")
    variable: str | None = Field(None, description=_VARIABLE)
    lower: str | None = Field(None, description="Lower bound for a definite integral, e.g. '0' or '-oo'.")
    upper: str | None = Field(None, description="Upper bound for a definite integral, e.g. 'pi' or 'oo'.")


class LimitArgs(BaseModel):
    expression: str = Field(description=f"The expression. {_SYNTAX}")
    point: str = Field(description="The point the variable approaches, e.g. '0', 'oo', 'pi/2'.")
    variable: str | None = Field(None, description=_VARIABLE)
    direction: Literal["+", "-", "+-"] = Field("+-", description="'+' from above, '-' from below, '+-' two-sided.")


class SeriesArgs(BaseModel):
    expression: str = Field(description=f"The expression. {_SYNTAX}")
    variable: str | None = Field(None, description=_VARIABLE)
    point: str = Field("0", description="Expansion point.")
    order: int = Field(6, ge=1, le=50, description="Expand up to (not including) this power.")


class EvaluateArgs(BaseModel):
    expression: str = Field(description=f"The expression to evaluate numerically. {_SYNTAX}")
    digits: int = Field(15, ge=1, le=1000, description="Significant digits.")
    values: dict[str, str] | None = Field(None, description="Values for variables, e.g. {'x': '2', 'y': 'pi/3'}.")


class MatrixArgs(BaseModel):
    operation: MatrixOperation = Field(
        description="det, inverse, rank, trace, transpose, eigenvals, eigenvects, "
        "rref, nullspace; or with b: multiply (a*b), add, subtract."
    )
    a: str = Field(description="Matrix as a list of rows, e.g. '[[1, 2], [3, 4]]'; entries may be symbolic.")
    b: str | None = Field(None, description="Second matrix, for multiply/add/subtract.")


class EqualArgs(BaseModel):
    a: str = Field(description=f"First expression. {_SYNTAX}")
    b: str = Field(description="Second expression.")


def _render_solutions(solutions: list[dict[str, str]]) -> str:
    if not solutions:
        return "no solution"
    lines = [
        ", ".join(v if re.search(r"[<>]", v) else f"{k} = {v}" for k, v in sol.items())  # a range: 'x > 2'
        or "any value is a solution"
        for sol in solutions
    ]
    return "\n".join(lines)


# name, description, argument model, function, rendering of its result
_TOOL_SPECS = (
    ("math_simplify", "Simplify a math expression exactly (symbolic).", ExpressionArgs, simplify, str),
    ("math_expand", "Expand products and powers of a math expression.", ExpressionArgs, expand, str),
    ("math_factor", "Factor a polynomial, or an integer into primes.", ExpressionArgs, factor, str),
    (
        "math_solve",
        "Solve an equation or a system of equations exactly (inequalities in one variable too). "
        "Returns one line per solution, e.g. 'x = 2, y = 1', a range such as 'x > 3', or "
        "'no solution'.",
        SolveArgs,
        solve,
        _render_solutions,
    ),
    ("math_diff", "Differentiate an expression.", DiffArgs, diff, str),
    (
        "math_integrate",
        "Integrate an expression: antiderivative, or definite integral with bounds.",
        IntegrateArgs,
        integrate,
        str,
    ),
    ("math_limit", "Limit of an expression as a variable approaches a point.", LimitArgs, limit, str),
    ("math_series", "Taylor series of an expression around a point.", SeriesArgs, series, str),
    ("math_evaluate", "Evaluate an expression numerically to the given number of digits.", EvaluateArgs, evaluate, str),
    (
        "math_matrix",
        "Matrix operations: determinant, inverse, rank, eigenvalues, product, ...",
        MatrixArgs,
        matrix,
        str,
    ),
    (
        "math_equal",
        "Check whether two expressions are mathematically equal for all values of "
        "their variables. Returns True or False.",
        EqualArgs,
        equal,
        str,
    ),
)


def math_tools(*, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> list[Tool]:
    """The math operations as `Tool`s (math_simplify, math_solve, ...).

    Each tool validates its typed arguments and returns its answer as text; on bad input
    or a limit hit it returns "Error: <reason>" instead of raising. All tools share
    `worker` (default: the process-wide one), started lazily on the first call.
    """
    return [
        Tool(
            name,
            description,
            args,
            functools.partial(func, timeout_s=timeout_s, worker=worker),
            render=render,
            error_types=(MathToolError,),
        )
        for name, description, args, func, render in _TOOL_SPECS
    ]
