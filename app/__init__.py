"""Public API and wiring: settings in, a loaded engine (and, as they land, solvers and agents) out."""

from app.config import Settings
from app.engine import load_engine

__all__ = ["Settings", "load_engine"]
