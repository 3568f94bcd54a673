"""The sympy operations. These run only inside the worker process (`tools.math.worker`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tools.math.checks import (
    _CONSTANTS,
    _FUNCTIONS,
    _MATRIX_BINARY,
    _MATRIX_UNARY,
    MathToolError,
    _split_equation,
    check_variable,
    checked_expression,
    normalize_expression,
    split_inequality,
)


def _namespace(free: set[str]) -> tuple[dict, dict]:
    """(global_dict, local_dict) for parse_expr: no builtins, allowed names only."""
    import sympy

    glob: dict[str, Any] = {"__builtins__": {}}
    for name in ("Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow", "Eq", "Ne", "Lt", "Le", "Gt", "Ge"):
        glob[name] = getattr(sympy, name)
    for name, target in _FUNCTIONS.items():
        glob[name] = getattr(sympy, target)
    for name, target in _CONSTANTS.items():
        glob[name] = getattr(sympy, target)
    local = {name: sympy.Symbol(name) for name in free}
    return glob, local


def _parse(text: str, *, allow_lists: bool = False, what: str = "expression") -> Any:
    """Allowlist-check `text`, then parse it with sympy (evaluate=False). Worker only."""
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    text, free = checked_expression(text, allow_lists=allow_lists, what=what)  # sympy parses what was checked
    glob, local = _namespace(free)
    try:
        return parse_expr(
            text, local_dict=local, global_dict=glob, transformations=standard_transformations, evaluate=False
        )
    except MathToolError:
        raise
    except Exception as e:  # e.g. a wrong number of arguments to a function
        raise MathToolError(f"could not parse {what}: {type(e).__name__}: {e}") from None


def _expr(text: str, what: str = "expression") -> Any:
    """Parse and then evaluate the tree normally (parse_expr left it unevaluated)."""
    import sympy

    e = _parse(text, what=what)
    if not isinstance(e, sympy.Basic):
        raise MathToolError(f"{what} is not a math expression")
    return e.doit()


def _symbol(name: str):
    import sympy

    return sympy.Symbol(check_variable(name))


def _pick_variable(e, variable: str | None):
    if variable is not None:
        return _symbol(variable)
    free = sorted(e.free_symbols, key=str)
    if len(free) == 1:
        return free[0]
    if not free:
        raise MathToolError("expression has no variable; pass `variable`")
    raise MathToolError(f"expression has several variables ({', '.join(map(str, free))}); pass `variable`")


def _op_simplify(expression: str) -> str:
    import sympy

    return str(sympy.simplify(_expr(expression)))


def _op_latex(expression: str) -> str:
    import sympy

    return sympy.latex(_parse(expression))  # unevaluated: the terms as the text wrote them


def _op_expand(expression: str) -> str:
    import sympy

    return str(sympy.expand(_expr(expression)))


def _op_factor(expression: str) -> str:
    import sympy

    e = _expr(expression)
    if e.is_Integer and abs(e) > 1:  # factor an integer into primes, e.g. 360 -> 2**3*3**2*5
        sign = "-" if e < 0 else ""
        return sign + "*".join(f"{p}**{k}" if k > 1 else f"{p}" for p, k in sorted(sympy.factorint(abs(e)).items()))
    return str(sympy.factor(e))


def _op_solve(equations: list[str], variables: list[str] | None) -> list[dict[str, str]]:
    import sympy

    eqs, conditions = [], []  # equations as expressions meaning "= 0"; inequalities as relations
    for text in equations:
        inequality = split_inequality(normalize_expression(text, "equation"))
        if inequality is not None:
            lhs, op, rhs = inequality
            conditions.append(sympy.Rel(_expr(lhs, "inequality"), _expr(rhs, "inequality"), op))
            continue
        lhs, rhs = _split_equation(normalize_expression(text, "equation"))
        e = _expr(lhs, "equation") - (0 if rhs is None else _expr(rhs, "equation"))
        if not e.free_symbols:  # e.g. 'x = x + 1' became -1: false, or always true
            if sympy.simplify(e) != 0:
                return []
            continue
        eqs.append(e)
    if conditions:
        return _solve_on_reals(eqs, conditions, variables)
    if not eqs:
        return [{}]  # every equation holds for any value
    if variables:
        syms = [_symbol(v) for v in variables]
    else:
        syms = sorted(set().union(*(e.free_symbols for e in eqs)), key=str)
    try:
        solutions = sympy.solve(eqs, syms, dict=True)
    except NotImplementedError as e:
        raise MathToolError(f"sympy cannot solve this: {e}") from None
    return [{str(k): str(v) for k, v in sol.items()} for sol in solutions]


def _solve_on_reals(eqs: list, conditions: list, variables: list[str] | None) -> list[dict[str, str]]:
    """Equations on the real numbers the inequalities allow (a domain such as 'x >= 0', 'x <= 2*pi'): every
    solution there; or, inequalities alone, the range they allow as a relation ('x > 2', '-3 < x < 3'). One
    variable only."""
    import sympy

    free = set().union(*(c.free_symbols for c in conditions), *(e.free_symbols for e in eqs))
    syms = [_symbol(v) for v in variables] if variables else sorted(free, key=str)
    if len(syms) != 1 or free - set(syms):
        raise MathToolError("inequalities are supported in one variable only")
    x = syms[0]
    domain = sympy.S.Reals
    for condition in conditions:
        domain = domain.intersect(sympy.solveset(condition, x, sympy.S.Reals))
    if not eqs:
        if domain is sympy.S.EmptySet:
            return []
        return [{}] if domain == sympy.S.Reals else [{str(x): _relation_text(domain, x)}]
    found = domain
    for e in eqs:
        found = found.intersect(sympy.solveset(e, x, domain))
    if isinstance(found, sympy.FiniteSet):
        return [{str(x): str(v)} for v in sorted(found, key=sympy.default_sort_key)]
    if found is sympy.S.EmptySet:
        return []
    raise MathToolError(f"the solutions are not a finite set: {found}")


def _relation_text(found, x) -> str:
    """A set of reals as the relation that describes it: 'x > 2', '-3 < x <= 3', 'x < -1 or x > 1'."""
    import sympy

    parts = []
    for piece in found.args if isinstance(found, sympy.Union) else (found,):
        if isinstance(piece, sympy.FiniteSet):
            parts.extend(f"{x} = {v}" for v in piece)
        elif isinstance(piece, sympy.Interval):
            low = "" if piece.start == -sympy.oo else f"{piece.start} {'<' if piece.left_open else '<='} "
            high = "" if piece.end == sympy.oo else f" {'<' if piece.right_open else '<='} {piece.end}"
            if not low:
                parts.append(f"{x}{high}")
            elif not high:
                parts.append(f"{x} {'>' if piece.left_open else '>='} {piece.start}")
            else:
                parts.append(f"{low}{x}{high}")
        else:
            raise MathToolError(f"the solutions are not a range of reals: {found}")
    return " or ".join(parts)


def _op_diff(expression: str, variable: str | None, order: int) -> str:
    import sympy

    e = _expr(expression)
    return str(sympy.diff(e, _pick_variable(e, variable), order))


def _op_integrate(expression: str, variable: str | None, lower: str | None, upper: str | None) -> str:
    import sympy

    e = _expr(expression)
    x = _pick_variable(e, variable)
    if (lower is None) != (upper is None):
        raise MathToolError("give both `lower` and `upper` for a definite integral, or neither")
    if lower is None:
        return str(sympy.integrate(e, x))
    return str(sympy.integrate(e, (x, _expr(lower, "lower bound"), _expr(upper, "upper bound"))))


def _op_limit(expression: str, variable: str | None, point: str, direction: str) -> str:
    import sympy

    e = _expr(expression)
    x = _pick_variable(e, variable)
    p = _expr(point, "point")
    if p in (sympy.oo, -sympy.oo):
        direction = "-" if p == sympy.oo else "+"  # only one side exists
    return str(sympy.limit(e, x, p, direction))


def _op_series(expression: str, variable: str | None, point: str, order: int) -> str:
    import sympy

    e = _expr(expression)
    return str(sympy.series(e, _pick_variable(e, variable), _expr(point, "point"), order))


def _op_evaluate(expression: str, digits: int, values: dict[str, str] | None) -> str:
    import sympy

    # Not doit(): evalf works on the unevaluated tree, so 9**9**9 gives 4.28e+369693099
    # instead of building a 370-million-digit integer.
    e = _parse(expression)
    if not isinstance(e, sympy.Basic):
        raise MathToolError("expression is not a math expression")
    subs = {_symbol(k): _expr(v, f"value of {k}") for k, v in (values or {}).items()}
    result = sympy.N(e, digits, subs=subs) if subs else sympy.N(e, digits)
    return str(result)


def _matrix(text: str, what: str):
    import sympy

    rows = _parse(text, allow_lists=True, what=what)
    if not isinstance(rows, (list, tuple)) or not rows:
        raise MathToolError(f"{what} must be a list of rows, e.g. [[1, 2], [3, 4]]")
    try:
        m = sympy.Matrix(rows)
    except Exception as e:  # ragged rows, nested too deep
        raise MathToolError(f"{what} is not a matrix: {e}") from None
    return m.applyfunc(lambda v: v.doit())


def _op_matrix(operation: str, a: str, b: str | None) -> str:
    m = _matrix(a, "matrix a")
    if operation in _MATRIX_BINARY:
        if b is None:
            raise MathToolError(f"matrix operation {operation!r} needs a second matrix `b`")
        n = _matrix(b, "matrix b")
        try:
            result = {"multiply": lambda: m * n, "add": lambda: m + n, "subtract": lambda: m - n}[operation]()
        except Exception:  # sympy ShapeError
            raise MathToolError(f"cannot {operation} a {m.rows}x{m.cols} and a {n.rows}x{n.cols} matrix") from None
        return str(result.tolist())
    if operation not in _MATRIX_UNARY:
        raise MathToolError(
            f"unknown matrix operation {operation!r} (allowed: {', '.join(_MATRIX_UNARY + _MATRIX_BINARY)})"
        )
    if operation in ("det", "inverse", "eigenvals", "eigenvects", "trace") and not m.is_square:
        raise MathToolError(f"{operation} needs a square matrix, got {m.rows}x{m.cols}")
    if operation == "det":
        return str(m.det())
    if operation == "inverse":
        if m.det() == 0:
            raise MathToolError("matrix is singular (determinant 0), it has no inverse")
        return str(m.inv().tolist())
    if operation == "rank":
        return str(m.rank())
    if operation == "trace":
        return str(m.trace())
    if operation == "transpose":
        return str(m.T.tolist())
    if operation == "eigenvals":
        return str(m.eigenvals())
    if operation == "eigenvects":
        return str([(val, mult, [v.tolist() for v in vecs]) for val, mult, vecs in m.eigenvects()])
    if operation == "rref":
        return str(m.rref()[0].tolist())
    return str([v.tolist() for v in m.nullspace()])  # nullspace


def _op_equal(a: str, b: str) -> bool:
    import random

    import sympy

    diff = _expr(a, "first expression") - _expr(b, "second expression")
    d = sympy.simplify(diff)
    if d == 0:
        return True
    verdict = d.equals(0)
    if verdict is not None:
        return bool(verdict)
    # sympy could not decide: compare at random points (deterministic seed).
    syms = sorted(d.free_symbols, key=str)
    rng = random.Random(0)
    checked = 0
    for _ in range(20):
        point = {s: sympy.Float(rng.uniform(0.1, 2.0), 30) for s in syms}
        value = complex(sympy.N(d.subs(point), 30))
        if value != value or abs(value) == float("inf"):  # nan/inf: a singular point, try another
            continue
        if abs(value) > 1e-12:
            return False
        checked += 1
        if checked == 5:
            return True
    raise MathToolError("could not decide whether the expressions are equal")


_OPS: dict[str, Callable[..., Any]] = {
    "simplify": _op_simplify,
    "expand": _op_expand,
    "factor": _op_factor,
    "solve": _op_solve,
    "diff": _op_diff,
    "integrate": _op_integrate,
    "limit": _op_limit,
    "series": _op_series,
    "evaluate": _op_evaluate,
    "matrix": _op_matrix,
    "equal": _op_equal,
    "latex": _op_latex,
}
