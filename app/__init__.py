"""Public API and wiring: settings in, a loaded engine (and, as they land, solvers and agents) out."""

from app.config import Settings
from app.engine import load_engine
from app.solve import Solution, solve
from app.support import Reply, Support, ToolCall, open_support

__all__ = ["Reply", "Settings", "Solution", "Support", "ToolCall", "load_engine", "open_support", "solve"]
