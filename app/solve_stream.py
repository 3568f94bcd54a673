"""`SolveStream`: `solve` run in a thread, its progress and steps yielded as they come, stoppable from any thread.

    stream = SolveStream("What is 12 times 7?", task_type="math", runtime=runtime)
    for event in stream:          # a progress line (str), a decoded step (dict), then the Solution
        ...
    stream.stop()                 # from another thread: the search ends with the best path so far

The web UI's Solve tab and the chat's tool turn both show a search while it runs; this is the one place that
runs it so.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from app.solve import Solution, solve

Event = str | dict[str, Any] | Solution


class SolveStream:
    """One search. Iterating starts it (once) and yields, in order: progress lines (`str`, solve's `on_progress`)
    and decoded steps (`dict`, its `on_step`) as the search reports them, then the `Solution`. An error of `solve`
    is raised from the iteration. Closing the iteration early stops the search."""

    def __init__(self, problem: str, **solve_args: Any) -> None:
        """`solve_args`: any of `solve`'s arguments but the callbacks, which the stream sets."""
        taken = {"on_progress", "on_step", "should_stop"} & set(solve_args)
        if taken:
            raise TypeError(f"SolveStream sets {sorted(taken)} itself")
        self.problem = problem
        self._args = solve_args
        self._stop = threading.Event()
        self._started = False

    def stop(self) -> None:
        """End the search (from any thread); the stream then yields the best Solution found so far."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def __iter__(self) -> Iterator[Event]:
        if self._started:
            raise RuntimeError("a SolveStream runs once")
        self._started = True
        events: queue.SimpleQueue = queue.SimpleQueue()
        done = object()  # the marker after the last event

        def search() -> None:
            try:
                events.put(
                    solve(
                        self.problem,
                        on_progress=events.put,
                        on_step=events.put,
                        should_stop=self._stop.is_set,
                        **self._args,
                    )
                )
            except Exception as err:  # handed to the consumer's thread
                events.put(err)
            events.put(done)

        threading.Thread(target=search, daemon=True, name="solve-stream").start()
        ended = False
        try:
            while (event := events.get()) is not done:
                if isinstance(event, Exception):
                    ended = True
                    raise event
                yield event
            ended = True
        finally:
            if not ended:  # the consumer went away mid-search: end it
                self._stop.set()
