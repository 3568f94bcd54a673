"""`SolveStream` on a scripted engine (no model): events in order, stop from another thread, errors, early close.
The Solve tab and the chat's tool turn that use it are tested in the browser (tests/ui/test_web.py) and on the
real model (tests/app/test_conversation.py)."""

from __future__ import annotations

import threading

import pytest

from app.solve import Solution
from app.solve_stream import SolveStream
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

PROBLEM = "What is six times seven?"


def six_times_seven(steps, seed, greedy):
    return answer_last_result(steps) if steps else calc("6*7")


def test_progress_lines_and_steps_come_as_the_search_runs_then_the_solution():
    events = list(
        SolveStream(
            PROBLEM, task_type="math", strategy="mcts", budget=4, engine=ScriptedEngine(six_times_seven), truth="42"
        )
    )
    assert isinstance(events[-1], Solution) and events[-1].answer == "42"
    assert not any(isinstance(e, Solution) for e in events[:-1])
    lines = [e for e in events if isinstance(e, str)]
    assert lines[0].startswith("mcts on a math problem") and lines[-1].startswith("stopped after 0 iterations")
    steps = [e["text"] for e in events if isinstance(e, dict)]
    assert steps == ['Calc: {"expression": "6*7"} => 42', "Answer: 42"]  # each step as the policy decoded it


def test_stop_from_another_thread_ends_the_search_with_the_best_path_so_far():
    release = threading.Event()

    def slow(steps, seed, greedy):  # the first step waits until the test has pressed stop
        release.wait(10)
        return six_times_seven(steps, seed, greedy)

    engine = ScriptedEngine(slow)
    search = SolveStream(PROBLEM, task_type="math", strategy="best_of_n", budget=50, engine=engine, use_cache=False)
    events = iter(search)
    assert isinstance(next(events), str)  # the search has started
    search.stop()
    release.set()
    (solution,) = [e for e in events if isinstance(e, Solution)]
    assert search.stopped and len(engine.batches) == 1  # stopped after the step in flight, with what it had:
    assert solution.steps[0]["text"].startswith("Calc") and solution.answer is None  # one step, no answer yet


def test_an_error_of_the_search_is_raised_from_the_iteration():
    def broken(steps, seed, greedy):
        raise RuntimeError("engine gone")

    with pytest.raises(RuntimeError, match="engine gone"):
        list(SolveStream(PROBLEM, task_type="math", engine=ScriptedEngine(broken), use_cache=False))


def test_closing_the_iteration_early_stops_the_search_and_a_stream_runs_once():
    search = SolveStream(PROBLEM, task_type="math", budget=50, engine=ScriptedEngine(six_times_seven), use_cache=False)
    events = iter(search)
    next(events)
    events.close()
    assert search.stopped
    with pytest.raises(RuntimeError, match="runs once"):
        next(iter(search))
    with pytest.raises(TypeError, match="should_stop"):
        SolveStream(PROBLEM, should_stop=lambda: True)
