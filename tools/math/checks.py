"""Input checking for the symbolic math tools: limits, normalisation and the AST allowlist.

Pure and cheap (no sympy, no eval); runs in the caller and again in the worker.
"""

from __future__ import annotations

import ast
import re
from typing import Literal

MAX_EXPRESSION_CHARS = 10_000
DEFAULT_TIMEOUT_S = 2.0


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



_MATRIX_UNARY = ("det", "inverse", "rank", "transpose", "eigenvals", "eigenvects", "rref", "nullspace", "trace")
_MATRIX_BINARY = ("multiply", "add", "subtract")
MatrixOperation = Literal["det", "inverse", "rank", "transpose", "eigenvals", "eigenvects", "rref",
                          "nullspace", "trace", "multiply", "add", "subtract"]
