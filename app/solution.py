"""What `solve` returns (`Solution`), and the cache of solutions already found (`PathCache`), which a `Runtime`
owns: apart from app/solve.py so that the runtime holds a cache without importing the search."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Solution:
    problem: str
    task_type: str
    strategy: str
    answer: str | None
    steps: list[dict[str, Any]]  # the chosen path: kind, text, tool, tool_input, tool_output, tool_ok
    reward: dict[str, float]  # correctness, validity, cost, total
    tree: list[dict[str, Any]]  # MCTS nodes (id, parent, step, visits, value, reward); [] for other strategies
    tokens: dict[str, int]  # prompt, generated, reused (prompt tokens served from the prefix cache)
    seconds: float
    paths: int = 0  # paths the search scored
    answers: dict[str, float] = field(default_factory=dict)  # each answer the search reached -> its best reward
    cached: bool = False  # served from the reasoning-path cache
    cached_from: str | None = None  # served from tier 3: the similar problem whose verified solution this is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PathCache:
    """Solutions of problems solved before, keyed by normalised text and what solved them (an LRU of `capacity`
    entries). A `Runtime` owns one; `solve()` without a runtime uses the process's default one."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, Solution] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(problem: str, task_type: str, strategy: str, model: str) -> tuple:
        """`model`: what runs the search (model, quant and adapter; `model_key`): another model's or adapter's
        answer is not this one's."""
        return (" ".join(re.sub(r"[^\w\s.=+*/^()-]", " ", problem.lower()).split()), task_type, strategy, model)

    def get(self, key: tuple) -> Solution | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            return None

    def put(self, key: tuple, solution: Solution) -> None:
        with self._lock:
            self._entries[key] = solution
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
