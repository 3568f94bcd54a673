"""Math tools: safe arithmetic and sandboxed symbolic maths (sympy).

Two layers:

* `arithmetic()` evaluates plain arithmetic in-process with a pure AST walker whose
  every step is bounded (it cannot hang), matching Python's own float arithmetic.
* The symbolic operations (`simplify`, `expand`, `factor`, `solve`, `diff`, `integrate`,
  `limit`, `series`, `evaluate`, `matrix`, `equal`) check the text against an AST
  allowlist, then run sympy in a warm worker process (`MathWorker`) under a wall-clock
  limit (the worker is killed and replaced on timeout) and an RLIMIT_AS memory limit.
  User text never reaches `eval` unchecked: after the allowlist, sympy's `parse_expr`
  runs with an explicit namespace (allowed functions + one Symbol per free name, no
  builtins) and `evaluate=False`.

`math_tools()` wraps the same functions as langchain-core tools that return
"Error: ..." text instead of raising, so an agent can read and fix its input.
"""

from __future__ import annotations

import ast
import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

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


# ---------------------------------------------------------------------------
# Symbolic input: normalisation and the AST allowlist (run in parent and worker)
# ---------------------------------------------------------------------------

MAX_RESULT_CHARS = 20_000
MAX_NESTING = 100
DEFAULT_MEMORY_MB = 1024

# Callable names the user may write -> sympy attribute. Nothing else can be called.
_FUNCTIONS = {
    **{n: n for n in (
        "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "acot", "atan2",
        "sinh", "cosh", "tanh", "coth", "asinh", "acosh", "atanh",
        "exp", "log", "sqrt", "cbrt", "root", "Abs", "sign", "floor", "ceiling",
        "factorial", "binomial", "gamma", "erf", "re", "im", "arg", "conjugate",
        "Min", "Max", "gcd", "lcm", "Mod", "Rational",
    )},
    "ln": "log", "abs": "Abs", "ceil": "ceiling", "min": "Min", "max": "Max",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan",
}
# Bare names with a fixed meaning -> sympy singleton name.
_CONSTANTS = {"pi": "pi", "E": "E", "I": "I", "oo": "oo", "inf": "oo"}
# Names that parse_expr's own transformations emit (Integer(2), Symbol('x'), Add(..., evaluate=False)):
# a user symbol with one of these names would shadow them, so they are refused.
_RESERVED = frozenset({
    "Integer", "Float", "Rational", "Symbol", "Function", "Add", "Mul", "Pow",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Not", "And", "Or", "evaluate",
})
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_ALLOWED_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod)
_OPERATOR_TEXT = {ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.FloorDiv: "//", ast.Mod: "%",
                  ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@", ast.Invert: "~", ast.Not: "not"}


def _operator_text(op: ast.AST) -> str:
    return _OPERATOR_TEXT.get(type(op), type(op).__name__)


def _normalize(text: str) -> str:
    """`^` means power in maths; Python's XOR has no use here."""
    return text.strip().replace("^", "**")


def check_expression(text: str, *, allow_lists: bool = False, what: str = "expression") -> set[str]:
    """Validate `text` against the allowlist; return the free symbol names it uses.

    Raises `MathToolError` naming the first offending construct. Pure and cheap: no
    sympy, no eval. `allow_lists` permits (nested) lists/tuples, for matrices.
    """
    _check_length(text, what)
    text = _normalize(text)
    if "=" in re.sub(r"[<>!]=", "", text):  # '=' and '==' (comparisons get their own message)
        raise MathToolError("'=' is only allowed in solve equations")
    try:
        tree = _parse_python_expr(text)
    except MathToolError as e:
        if re.search(r"\d\s*[A-Za-z_(]|\)\s*[A-Za-z_(]", text):
            raise MathToolError(f"{e} (write every product with *: 2*x, not 2x)") from None
        raise
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    # Names, then attributes, before the rest, so `__import__('os').system(...)` is reported
    # as the forbidden name it is rather than as whatever node a walk happens to meet first.
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            _check_name(node.id, as_call=id(node) in called)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            raise MathToolError(f"attribute access is not allowed (.{node.attr})")
    free: set[str] = set()
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:  # iterative, so a hostile depth cannot overflow our own stack
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise MathToolError(f"expression too deeply nested (> {MAX_NESTING} levels)")
        _check_node(node, allow_lists, free)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.expr_context, ast.operator, ast.unaryop)):
                continue
            stack.append((child, depth + 1))
    return free


def _check_node(node: ast.AST, allow_lists: bool, free: set[str]) -> None:
    if isinstance(node, ast.JoinedStr) or isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        raise MathToolError("strings are not allowed")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):  # bool is an int subclass, hence type()
            raise MathToolError(f"the literal {node.value!r} is not allowed")
    elif isinstance(node, ast.Name):  # the name itself was checked already
        if node.id not in _FUNCTIONS and node.id not in _CONSTANTS:
            free.add(node.id)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise MathToolError("only allowed functions may be called, by name, e.g. sin(x); "
                                "write products with *, e.g. (x + 1)*(x - 1)")
        if node.keywords:
            raise MathToolError(f"keyword arguments are not allowed (in call to {node.func.id!r})")
    elif isinstance(node, ast.BinOp):
        if not isinstance(node.op, _ALLOWED_BINOPS):
            raise MathToolError(f"operator {_operator_text(node.op)!r} is not allowed")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.UAdd, ast.USub)):
            raise MathToolError(f"operator {_operator_text(node.op)!r} is not allowed")
    elif isinstance(node, (ast.List, ast.Tuple)):
        if not allow_lists:
            raise MathToolError("lists are only allowed for matrices")
    elif isinstance(node, ast.Compare):
        raise MathToolError("comparisons are not allowed (write equations for solve with '=')")
    else:
        raise MathToolError(f"{_node_label(node)} is not allowed")


def _check_name(name: str, *, as_call: bool = False) -> None:
    if name.startswith("_") or not _SYMBOL_NAME.match(name):
        raise MathToolError(f"name {name!r} is not allowed")
    if name in _RESERVED and not (as_call and name in _FUNCTIONS):
        raise MathToolError(f"name {name!r} is reserved")
    if as_call and name not in _FUNCTIONS:
        raise MathToolError(f"function {name!r} is not allowed (for a product write {name}*(...); "
                            f"allowed functions: {', '.join(sorted(_FUNCTIONS))})")
    if not as_call and name in _FUNCTIONS:
        raise MathToolError(f"{name!r} is a function; call it, e.g. {name}(x)")


def check_variable(name: str) -> str:
    """Validate a variable name argument (e.g. for diff); return it stripped."""
    if not isinstance(name, str):
        raise MathToolError(f"variable must be a string, got {type(name).__name__}")
    name = name.strip()
    if not _SYMBOL_NAME.match(name) or name in _CONSTANTS:
        raise MathToolError(f"invalid variable name {name!r}")
    _check_name(name)
    return name


def _split_equation(text: str) -> tuple[str, str | None]:
    """'lhs = rhs' (or 'lhs == rhs') -> (lhs, rhs); an expression alone -> (text, None), meaning '= 0'."""
    _check_length(text, "equation")
    if re.search(r"[<>!]=|[<>]", text):
        raise MathToolError("inequalities are not supported; write an equation with '='")
    parts = re.split(r"==?", text)
    if len(parts) > 2:
        raise MathToolError(f"equation {text!r} has more than one '='")
    if len(parts) == 2:
        if not parts[0].strip() or not parts[1].strip():
            raise MathToolError(f"equation {text!r} is missing a side")
        return parts[0], parts[1]
    return text, None


# ---------------------------------------------------------------------------
# Worker side: sympy operations. These run only inside the worker process.
# ---------------------------------------------------------------------------

def _namespace(free: set[str]) -> tuple[dict, dict]:
    """(global_dict, local_dict) for parse_expr: no builtins, allowed names only."""
    import sympy

    glob: dict[str, Any] = {"__builtins__": {}}
    for name in ("Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow",
                 "Eq", "Ne", "Lt", "Le", "Gt", "Ge"):
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

    free = check_expression(text, allow_lists=allow_lists, what=what)
    glob, local = _namespace(free)
    try:
        return parse_expr(_normalize(text), local_dict=local, global_dict=glob,
                          transformations=standard_transformations, evaluate=False)
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

    eqs = []  # each as an expression meaning "= 0"
    for text in equations:
        lhs, rhs = _split_equation(text)
        e = _expr(lhs, "equation") - (0 if rhs is None else _expr(rhs, "equation"))
        if not e.free_symbols:  # e.g. 'x = x + 1' became -1: false, or always true
            if sympy.simplify(e) != 0:
                return []
            continue
        eqs.append(e)
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


_MATRIX_UNARY = ("det", "inverse", "rank", "transpose", "eigenvals", "eigenvects", "rref", "nullspace", "trace")
_MATRIX_BINARY = ("multiply", "add", "subtract")
MatrixOperation = Literal["det", "inverse", "rank", "transpose", "eigenvals", "eigenvects", "rref",
                          "nullspace", "trace", "multiply", "add", "subtract"]


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
        except Exception as e:  # sympy ShapeError
            raise MathToolError(f"cannot {operation} a {m.rows}x{m.cols} and a {n.rows}x{n.cols} matrix") from None
        return str(result.tolist())
    if operation not in _MATRIX_UNARY:
        raise MathToolError(f"unknown matrix operation {operation!r} (allowed: {', '.join(_MATRIX_UNARY + _MATRIX_BINARY)})")
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
    "simplify": _op_simplify, "expand": _op_expand, "factor": _op_factor, "solve": _op_solve,
    "diff": _op_diff, "integrate": _op_integrate, "limit": _op_limit, "series": _op_series,
    "evaluate": _op_evaluate, "matrix": _op_matrix, "equal": _op_equal,
}


def _worker_main(memory_mb: int) -> None:
    """Serve requests, one JSON line each, on stdin/stdout until stdin closes.

    Request: {"op": str, "args": dict, "timeout_s": float}. Reply: {"result": ...} or
    {"error": str, "fatal": bool}; the parent replaces the worker after a fatal error.
    """
    import resource
    import signal

    import sympy

    # Keep the real stdout for replies; anything sympy prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    sys.set_int_max_str_digits(MAX_RESULT_CHARS)
    # Import sympy's lazily loaded parts now, so the first real call is not slow.
    x = sympy.Symbol("x")
    sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
    sympy.solve([x**2 - 1], [x], dict=True)
    sympy.integrate(x * sympy.exp(x), x), sympy.limit(sympy.sin(x) / x, x, 0), sympy.series(sympy.exp(x), x)
    _parse("x**2 + 1")
    # memory_mb is headroom over the warmed-up interpreter, whose own size varies with the
    # platform (thread stacks, optional gmpy2), so a small budget cannot starve start-up.
    limit_bytes = _address_space_bytes() + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    _reply(replies, {"ready": True})

    for line in sys.stdin:
        request = json.loads(line)
        # Backstop if the parent is gone: SIGALRM's default action ends the process even
        # inside a long C-level computation (no Python handler is installed).
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout_s"]) + 1.0)
        fatal = False
        try:
            result = _OPS[request["op"]](**request["args"])
            reply = {"result": result}
            if len(json.dumps(result)) > MAX_RESULT_CHARS:
                reply = {"error": f"result too long (> {MAX_RESULT_CHARS} chars)"}
        except MathToolError as e:
            reply = {"error": str(e)}
        except MemoryError:
            reply, fatal = {"error": f"memory limit exceeded ({memory_mb} MB)"}, True
        except RecursionError:
            reply = {"error": "expression too deeply nested"}
        except Exception as e:  # sympy's own failures are the user's answer, not a crash
            reply = {"error": f"{type(e).__name__}: {e}"}
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply["fatal"] = fatal
        _reply(replies, reply)
        if fatal:
            return


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _reply(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


# Loads this file by path (not `import tools.math`) so the worker never runs the
# package's __init__ or anything else of the parent; -P keeps the cwd off sys.path.
_WORKER_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_r1_math_worker', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "module._worker_main(int(sys.argv[2]))\n"
)


# ---------------------------------------------------------------------------
# Parent side: the warm worker process
# ---------------------------------------------------------------------------

class MathWorker:
    """A warm sympy process that runs one request at a time under time and memory limits.

    A fresh Python interpreter (not a fork of this possibly huge process) imports only
    this file and sympy, then answers JSON requests over pipes. A request that runs past
    its timeout gets the process killed and a replacement started at once; a dead worker
    is replaced on the next call. Thread-safe: calls are serialised by a lock, so time
    spent waiting for another thread's call is not part of a call's timeout.
    """

    def __init__(self, *, memory_mb: int = DEFAULT_MEMORY_MB, startup_timeout_s: float = 60.0):
        """`memory_mb`: address space a computation may use beyond the idle worker's own."""
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buffer = b""

    def call(self, op: str, args: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        """Run operation `op` with `args` in the worker; return its result or raise MathToolError."""
        if not timeout_s > 0:
            raise MathToolError(f"timeout_s must be positive, got {timeout_s}")
        request = (json.dumps({"op": op, "args": args, "timeout_s": timeout_s}) + "\n").encode()
        with self._lock:
            for attempt in range(2):  # a worker that died while idle gets one fresh replacement
                proc = self._ensure_ready()
                try:
                    proc.stdin.write(request)
                    proc.stdin.flush()
                    break
                except OSError:
                    self._kill()
                    if attempt:
                        raise MathToolError("math worker is not accepting requests") from None
            line = self._read_line(proc, time.monotonic() + timeout_s)
            if line is None:
                self._restart()
                raise MathToolError(f"timed out after {timeout_s} s")
            if line == b"":
                code = proc.wait()
                self._restart()
                raise MathToolError(f"math worker died (exit code {code}); the computation may have "
                                    f"exceeded the {self.memory_mb} MB memory limit")
            reply = json.loads(line)
            if reply.get("fatal"):
                self._restart()
            if "error" in reply:
                raise MathToolError(reply["error"])
            return reply["result"]

    def start(self) -> None:
        """Start the worker now and wait until it is ready (otherwise the first call does)."""
        with self._lock:
            self._ensure_ready()

    def close(self) -> None:
        """Kill the worker process, if any. A later call starts a new one."""
        with self._lock:
            self._kill()

    def __enter__(self) -> MathWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals; the caller holds self._lock --

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_BOOT, os.path.abspath(__file__), str(self.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            start_new_session=True,  # not in the terminal's process group: Ctrl-C goes to the parent
        )
        self._ready = False
        self._buffer = b""

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:  # unflushed bytes to a dead process
                    pass
            self._proc = None

    def _restart(self) -> None:
        self._kill()
        self._spawn()  # start the replacement now; its imports overlap the caller's work

    def _ensure_ready(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._spawn()
        if not self._ready:
            line = self._read_line(self._proc, time.monotonic() + self.startup_timeout_s)
            if line != b'{"ready": true}':
                self._kill()
                reason = "timed out" if line is None else "exited" if line == b"" else f"said {line[:200]!r}"
                raise MathToolError(f"math worker failed to start ({reason}; see its stderr)")
            self._ready = True
        return self._proc

    def _read_line(self, proc: subprocess.Popen, deadline: float) -> bytes | None:
        """One reply line; b"" if the worker exited, None if `deadline` passed."""
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


@dataclass
class _SharedWorker:
    lock: threading.Lock
    worker: MathWorker | None = None


_SHARED = _SharedWorker(threading.Lock())


def shared_worker() -> MathWorker:
    """The process-wide worker used when no `worker` is passed; created on first use."""
    with _SHARED.lock:
        if _SHARED.worker is None:
            _SHARED.worker = MathWorker()
            atexit.register(_SHARED.worker.close)
        return _SHARED.worker


# ---------------------------------------------------------------------------
# Plain-Python API
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# LangChain tools: each declared once (name, description, typed arguments, function)
# ---------------------------------------------------------------------------

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
