"""Input checking for the symbolic math tools: limits, normalisation and the AST allowlist.

Pure and cheap (no sympy, no eval); runs in the caller and again in the worker.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

MAX_EXPRESSION_CHARS = 10_000
# One call's text arguments together (equations, values, bounds, two matrices), and how many
# equations, variables or values it may list: the caller checks all of them, so both are capped.
MAX_TOTAL_CHARS = 2 * MAX_EXPRESSION_CHARS
MAX_LIST_ITEMS = 50
DEFAULT_TIMEOUT_S = 2.0
MAX_TIMEOUT_S = 86_400.0  # a day: far beyond any use, and safe for every timer and deadline
# A result, and an error's text, both go back to the model: neither may be longer than this.
MAX_RESULT_CHARS = 20_000


def capped_error(text: str) -> str:
    """`text` cut to MAX_RESULT_CHARS: sympy's messages can quote a huge expanded expression."""
    if len(text) <= MAX_RESULT_CHARS:
        return text
    marker = f" [... error text cut: {len(text) - MAX_RESULT_CHARS} more chars]"
    return text[: MAX_RESULT_CHARS - len(marker)] + marker


class MathToolError(ValueError):
    """Bad input to a math tool, or a computation that hit a limit (time, memory, size).
    Its text is capped (`capped_error`), since it goes back to the model like a result."""

    def __init__(self, message: str) -> None:
        super().__init__(capped_error(str(message)))


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
    except (RecursionError, MemoryError):  # Python's own parser: deep nesting, or a chain of ~2,500+ terms
        raise MathToolError("expression too deeply nested (or a chain of thousands of terms)") from None
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

MAX_NESTING = 100

# Callable names the user may write -> sympy attribute. Nothing else can be called.
_FUNCTIONS = {
    **{
        n: n
        for n in (
            "sin",
            "cos",
            "tan",
            "cot",
            "sec",
            "csc",
            "asin",
            "acos",
            "atan",
            "acot",
            "atan2",
            "sinh",
            "cosh",
            "tanh",
            "coth",
            "asinh",
            "acosh",
            "atanh",
            "exp",
            "log",
            "sqrt",
            "cbrt",
            "root",
            "Abs",
            "sign",
            "floor",
            "ceiling",
            "factorial",
            "binomial",
            "gamma",
            "erf",
            "re",
            "im",
            "arg",
            "conjugate",
            "Min",
            "Max",
            "gcd",
            "lcm",
            "Mod",
            "Rational",
        )
    },
    "ln": "log",
    "abs": "Abs",
    "ceil": "ceiling",
    "min": "Min",
    "max": "Max",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
}
# Bare names with a fixed meaning -> sympy singleton name.
_CONSTANTS = {"pi": "pi", "E": "E", "I": "I", "oo": "oo", "inf": "oo"}
# Names that parse_expr's own transformations emit (Integer(2), Symbol('x'), Add(..., evaluate=False)):
# a user symbol with one of these names would shadow them, so they are refused.
_RESERVED = frozenset(
    {
        "Integer",
        "Float",
        "Rational",
        "Symbol",
        "Function",
        "Add",
        "Mul",
        "Pow",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Not",
        "And",
        "Or",
        "evaluate",
    }
)
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_ALLOWED_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod)
_OPERATOR_TEXT = {
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


def _operator_text(op: ast.AST) -> str:
    return _OPERATOR_TEXT.get(type(op), type(op).__name__)


def normalize_expression(text: str, what: str = "expression") -> str:
    """The one form of `text` that is checked and then parsed: NFKC-normalised (as Python
    normalises identifiers, so 'ｘ' is 'x' for the allowlist and for sympy alike), stripped,
    and with `^` as power (Python's XOR has no use here). Idempotent.

    Refuses non-strings, over-long or empty text, lone surrogates, and characters that
    NFKC would turn into other text silently ('x²' would become the symbol 'x2').
    """
    _check_length(text, what)
    if not text.isascii():
        for char in text:
            category = unicodedata.category(char)
            if category == "Cs":
                raise MathToolError(f"{what} is not valid Unicode (lone surrogate {char!r})")
            if category == "No":  # superscripts, subscripts, vulgar fractions
                raise MathToolError(
                    f"{what}: the character {char!r} is not allowed (write powers as x**2, fractions as 1/2)"
                )
        text = unicodedata.normalize("NFKC", text)
    text = text.strip().replace("^", "**")
    _check_length(text, what)
    return text


def check_expression(text: str, *, allow_lists: bool = False, what: str = "expression") -> set[str]:
    """Validate `text` against the allowlist; return the free symbol names it uses.

    Raises `MathToolError` naming the first offending construct. Pure and cheap: no
    sympy, no eval. `allow_lists` permits (nested) lists/tuples, for matrices.
    """
    return checked_expression(text, allow_lists=allow_lists, what=what)[1]


def checked_expression(text: str, *, allow_lists: bool = False, what: str = "expression") -> tuple[str, set[str]]:
    """`normalize_expression(text)` checked against the allowlist, with its free symbol names."""
    text = normalize_expression(text, what)
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
            stack.append((child, depth if _continues_chain(node, child) else depth + 1))
    return text, free


# Python parses 'a + b - c + d' as a left-leaning chain of BinOps; it is one level of nesting
# (width), not as many levels as it has terms. Each tuple is one precedence level.
_CHAIN_OPS = ((ast.Add, ast.Sub), (ast.Mult, ast.Div, ast.Mod))


def _continues_chain(parent: ast.AST, child: ast.AST) -> bool:
    """Whether `child` is the left operand of `parent` in one chain of same-precedence operators."""
    if not (isinstance(parent, ast.BinOp) and isinstance(child, ast.BinOp) and child is parent.left):
        return False
    return any(isinstance(parent.op, ops) and isinstance(child.op, ops) for ops in _CHAIN_OPS)


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
            raise MathToolError(
                "only allowed functions may be called, by name, e.g. sin(x); "
                "write products with *, e.g. (x + 1)*(x - 1)"
            )
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
        raise MathToolError(
            f"function {name!r} is not allowed (for a product write {name}*(...); "
            f"allowed functions: {', '.join(sorted(_FUNCTIONS))})"
        )
    if not as_call and name in _FUNCTIONS:
        raise MathToolError(f"{name!r} is a function; call it, e.g. {name}(x)")


def check_variable(name: str) -> str:
    """Validate a variable name argument (e.g. for diff); return it normalised as expressions are."""
    if not isinstance(name, str):
        raise MathToolError(f"variable must be a string, got {type(name).__name__}")
    name = normalize_expression(name, "variable")
    if not _SYMBOL_NAME.match(name) or name in _CONSTANTS:
        raise MathToolError(f"invalid variable name {name!r}")
    _check_name(name)
    return name


def split_inequality(text: str) -> tuple[str, str, str] | None:
    """'lhs < rhs' (or >, <=, >=) -> (lhs, op, rhs); None for text without one. One relation per inequality: a
    range 'a < x < b' is written as two."""
    parts = re.split(r"(<=|>=|<|>)", text)
    if len(parts) == 1:
        return None
    if len(parts) != 3 or "=" in parts[0] + parts[2] or "!" in parts[0]:
        raise MathToolError(f"inequality {text!r}: write one <, >, <= or >= per inequality (a < x < b as two)")
    if not parts[0].strip() or not parts[2].strip():
        raise MathToolError(f"inequality {text!r} is missing a side")
    return parts[0].strip(), parts[1], parts[2].strip()


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
MatrixOperation = Literal[
    "det",
    "inverse",
    "rank",
    "transpose",
    "eigenvals",
    "eigenvects",
    "rref",
    "nullspace",
    "trace",
    "multiply",
    "add",
    "subtract",
]


def check_timeout(timeout_s: float) -> float:
    """A positive number of seconds up to MAX_TIMEOUT_S (not a bool, not a string, not nan)."""
    if type(timeout_s) not in (int, float):
        raise MathToolError(f"timeout_s must be a number of seconds, got {_short(timeout_s)}")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:  # false for nan too; an int compares without overflow
        shown = repr(timeout_s) if isinstance(timeout_s, float) or abs(timeout_s) < 10**20 else "a huge int"
        raise MathToolError(f"timeout_s must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {shown}")
    return float(timeout_s)


class CallArguments:
    """Checks one call's arguments at the boundary and returns them in the form the worker gets.

    Every method raises `MathToolError` for a wrong type or value, so no argument reaches a
    comparison or a method call it could break (TypeError, AttributeError). Expressions come
    back normalised (`normalize_expression`) and are counted against `MAX_TOTAL_CHARS`.
    """

    def __init__(self) -> None:
        self.total_chars = 0

    def _count(self, value: Any, what: str) -> None:
        """Type and length of one text, then the call's running total: before any work on the text."""
        _check_length(value, what)
        self.total_chars += len(value)
        if self.total_chars > MAX_TOTAL_CHARS:
            raise MathToolError(f"arguments too long in total (> {MAX_TOTAL_CHARS} chars)")

    def expression(self, value: Any, what: str = "expression", *, allow_lists: bool = False) -> str:
        self._count(value, what)
        return checked_expression(value, allow_lists=allow_lists, what=what)[0]

    def optional_expression(self, value: Any, what: str) -> str | None:
        return None if value is None else self.expression(value, what)

    def equation(self, value: Any) -> str:
        """'lhs = rhs', an expression meaning '= 0', or an inequality 'lhs < rhs' (<, >, <=, >=); returned
        normalised, sides checked."""
        self._count(value, "equation")
        text = normalize_expression(value, "equation")
        inequality = split_inequality(text)
        if inequality is not None:
            for side in (inequality[0], inequality[2]):
                checked_expression(side, what="inequality")
            return text
        for side in _split_equation(text):
            if side is not None:
                checked_expression(side, what="equation")
        return text

    @staticmethod
    def variable(value: Any) -> str:
        return check_variable(value)

    @staticmethod
    def optional_variable(value: Any) -> str | None:
        return None if value is None else check_variable(value)

    @staticmethod
    def integer(value: Any, what: str, low: int, high: int) -> int:
        if type(value) is not int:  # not bool, not float, not str
            raise MathToolError(f"{what} must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise MathToolError(f"{what} must be between {low} and {high}, got {value}")
        return value

    @staticmethod
    def choice(value: Any, what: str, allowed: Iterable[str]) -> str:
        allowed = tuple(allowed)
        if not isinstance(value, str) or value not in allowed:
            raise MathToolError(f"{what} must be one of {', '.join(map(repr, allowed))}, got {_short(value)}")
        return value

    def items(self, value: Any, what: str, check: Callable[[Any], str]) -> list[str]:
        """One string or a list/tuple of at most `MAX_LIST_ITEMS` of them, each passed through `check`."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise MathToolError(f"{what} must be a string or a list of strings, got {type(value).__name__}")
        if len(items) > MAX_LIST_ITEMS:
            raise MathToolError(f"too many {what} ({len(items)} > {MAX_LIST_ITEMS})")
        return [check(item) for item in items]

    def values(self, value: Any) -> dict[str, str] | None:
        """{variable: expression}, at most `MAX_LIST_ITEMS` entries, keys normalised and distinct."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise MathToolError(
                f"values must be a mapping of variable names to expressions, got {type(value).__name__}"
            )
        if len(value) > MAX_LIST_ITEMS:
            raise MathToolError(f"too many values ({len(value)} > {MAX_LIST_ITEMS})")
        checked: dict[str, str] = {}
        for name, text in value.items():
            variable = check_variable(name)
            if variable in checked:
                raise MathToolError(f"value of {variable!r} given twice")
            checked[variable] = self.expression(text, f"value of {variable}")
        return checked


def _short(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return f"a {type(value).__name__}"  # not repr(): a 5,000-digit int cannot even be printed
