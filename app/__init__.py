"""Public API and wiring: settings in, a loaded engine (and, as they land, solvers and agents) out."""

from typing import Any

from app.config import Settings
from app.engine import load_engine
from app.solve import Solution, solve
from app.support import Reply, Support, ToolCall, open_support

__all__ = ["ChatR1", "Reply", "Settings", "Solution", "Support", "ToolCall", "load_engine", "open_support", "solve"]


def __getattr__(name: str) -> Any:
    # ChatR1 is imported on first use: langchain-core's import costs about a second that `r1 generate` need not pay.
    if name == "ChatR1":
        from app.chat_model import ChatR1

        return ChatR1
    raise AttributeError(f"module 'app' has no attribute {name!r}")
