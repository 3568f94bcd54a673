"""Math tools: safe arithmetic and sandboxed symbolic maths (sympy).

Two layers:

* `arithmetic()` evaluates plain arithmetic in-process with a pure AST walker whose
  every step is bounded (it cannot hang), matching Python's own float arithmetic.
* The symbolic operations (`simplify`, `expand`, `factor`, `solve`, `diff`, `integrate`,
  `limit`, `series`, `evaluate`, `matrix`, `equal`, and `latex` for display) check the text against an AST
  allowlist, then run sympy in a warm worker process (`MathWorker`) under a wall-clock
  limit (the worker is killed and replaced on timeout) and an RLIMIT_AS memory limit.
  User text never reaches `eval` unchecked: after the allowlist, sympy's `parse_expr`
  runs with an explicit namespace (allowed functions + one Symbol per free name, no
  builtins) and `evaluate=False`.

`math_tools()` wraps the same functions as langchain-core tools that return
"Error: ..." text instead of raising, so an agent can read and fix its input.

Modules, one job each: `checks` (limits, normalisation, the allowlist), `arithmetic`,
`sympy_ops` (runs inside the worker only), `worker` (the process), `operations` (the
plain-Python API) and `tool_specs` (the tools).
"""

from tools.math.arithmetic import arithmetic
from tools.math.checks import (
    DEFAULT_TIMEOUT_S,
    MAX_EXPRESSION_CHARS,
    MAX_NESTING,
    MAX_RESULT_CHARS,
    MathToolError,
    MatrixOperation,
    check_expression,
    check_variable,
)
from tools.math.operations import (
    diff,
    equal,
    evaluate,
    expand,
    factor,
    integrate,
    latex,
    limit,
    matrix,
    series,
    simplify,
    solve,
)
from tools.math.tool_specs import math_tools
from tools.math.worker import DEFAULT_MEMORY_MB, MathWorker, shared_worker

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING",
    "MAX_RESULT_CHARS",
    "MathToolError",
    "MathWorker",
    "MatrixOperation",
    "arithmetic",
    "check_expression",
    "check_variable",
    "diff",
    "equal",
    "evaluate",
    "expand",
    "factor",
    "integrate",
    "latex",
    "limit",
    "math_tools",
    "matrix",
    "series",
    "shared_worker",
    "simplify",
    "solve",
]
