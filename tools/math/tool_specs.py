"""`math_tools()`: the symbolic operations as langchain-core tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

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

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

_SYNTAX = ("Python/sympy syntax: ** or ^ for powers, * for every product (2*x, not 2x), "
           "sqrt, exp, log (natural), sin, cos, tan, asin, factorial, Abs, ...; constants pi, E, I, "
           "oo (infinity). Example: 'sin(x)^2 + cos(x)^2'.")
_VARIABLE = "Variable name, e.g. 'x'. May be omitted when the expression has exactly one variable."


class ExpressionArgs(BaseModel):
    expression: str = Field(description=f"The expression. {_SYNTAX}")


class SolveArgs(BaseModel):
    equations: list[str] = Field(description="One or more equations, e.g. ['x + y = 3', 'x - y = 1']; "
                                             f"an expression alone means '= 0'. {_SYNTAX}")
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
    operation: MatrixOperation = Field(description="det, inverse, rank, trace, transpose, eigenvals, eigenvects, "
                                                   "rref, nullspace; or with b: multiply (a*b), add, subtract.")
    a: str = Field(description="Matrix as a list of rows, e.g. '[[1, 2], [3, 4]]'; entries may be symbolic.")
    b: str | None = Field(None, description="Second matrix, for multiply/add/subtract.")


class EqualArgs(BaseModel):
    a: str = Field(description=f"First expression. {_SYNTAX}")
    b: str = Field(description="Second expression.")


def _render_solutions(solutions: list[dict[str, str]]) -> str:
    if not solutions:
        return "no solution"
    lines = [", ".join(f"{k} = {v}" for k, v in sol.items()) or "any value is a solution" for sol in solutions]
    return "\n".join(lines)


@dataclass(frozen=True)
class _ToolSpec:
    name: str
    description: str
    args: type[BaseModel]
    func: Callable[..., Any]
    render: Callable[[Any], str] = str


_TOOL_SPECS = (
    _ToolSpec("math_simplify", "Simplify a math expression exactly (symbolic).", ExpressionArgs, simplify),
    _ToolSpec("math_expand", "Expand products and powers of a math expression.", ExpressionArgs, expand),
    _ToolSpec("math_factor", "Factor a polynomial, or an integer into primes.", ExpressionArgs, factor),
    _ToolSpec("math_solve", "Solve an equation or a system of equations exactly. Returns one line per "
                            "solution, e.g. 'x = 2, y = 1', or 'no solution'.", SolveArgs, solve, _render_solutions),
    _ToolSpec("math_diff", "Differentiate an expression.", DiffArgs, diff),
    _ToolSpec("math_integrate", "Integrate an expression: antiderivative, or definite integral with bounds.",
              IntegrateArgs, integrate),
    _ToolSpec("math_limit", "Limit of an expression as a variable approaches a point.", LimitArgs, limit),
    _ToolSpec("math_series", "Taylor series of an expression around a point.", SeriesArgs, series),
    _ToolSpec("math_evaluate", "Evaluate an expression numerically to the given number of digits.",
              EvaluateArgs, evaluate),
    _ToolSpec("math_matrix", "Matrix operations: determinant, inverse, rank, eigenvalues, product, ...",
              MatrixArgs, matrix),
    _ToolSpec("math_equal", "Check whether two expressions are mathematically equal for all values of "
                            "their variables. Returns True or False.", EqualArgs, equal),
)


def _check_spec(spec: _ToolSpec) -> None:
    """The argument model must match the function it feeds: same names, same defaults."""
    import inspect

    params = inspect.signature(spec.func).parameters
    for name, field in spec.args.model_fields.items():
        if name not in params or params[name].kind is inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"tool {spec.name}: argument {name!r} is not a parameter of {spec.func.__name__}()")
        default = params[name].default
        if field.is_required() != (default is inspect.Parameter.empty):
            raise TypeError(f"tool {spec.name}: argument {name!r} is required in only one of model and function")
        if not field.is_required() and field.default != default:
            raise TypeError(f"tool {spec.name}: argument {name!r} defaults differ ({field.default!r} vs {default!r})")
    for name, param in params.items():
        if (param.kind is not inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty
                and name not in spec.args.model_fields):
            raise TypeError(f"tool {spec.name}: required parameter {name!r} has no argument field")


def _format_validation_error(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        return "Error: invalid arguments: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in errors())
    return f"Error: invalid arguments: {error}"


def math_tools(*, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathWorker | None = None) -> list[BaseTool]:
    """The math operations as langchain-core tools (math_simplify, math_solve, ...).

    Each tool validates its typed arguments and returns its answer as text; on bad input
    or a limit hit it returns "Error: <reason>" instead of raising. All tools share
    `worker` (default: the process-wide one), started lazily on the first call.
    """
    from langchain_core.tools import StructuredTool

    def runner(spec: _ToolSpec) -> Callable[..., str]:
        def run(**kwargs: Any) -> str:
            try:
                return spec.render(spec.func(**kwargs, timeout_s=timeout_s, worker=worker))
            except MathToolError as e:
                return f"Error: {e}"
        return run

    tools: list[BaseTool] = []
    for spec in _TOOL_SPECS:
        _check_spec(spec)
        tools.append(StructuredTool.from_function(
            func=runner(spec), name=spec.name, description=spec.description, args_schema=spec.args,
            handle_validation_error=_format_validation_error,
        ))
    return tools
