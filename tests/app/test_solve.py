"""`solve` end to end on the real default model: MCTS over grammar-constrained tool steps, for math and code, from
Python and from `r1 solve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app import solve

ADD = 'def add(a, b):\n    """ Return the sum of a and b.\n    >>> add(2, 3)\n    5\n    """'


@pytest.fixture(scope="module")
def engine():
    import model

    with model.load("default") as engine:  # quant "auto": int4 for the bundled Q4_1 GGUF
        yield engine


@pytest.mark.slow
def test_mcts_with_tool_calls_on_the_default_model(engine):
    # Asked directly, the 135M model says 12 x 7 = 78; through tool steps the calculator does the arithmetic.
    solution = solve("What is 12 times 7?", task_type="math", strategy="mcts", budget=3, seed=0, engine=engine,
                     use_cache=False)
    assert solution.answer == "84"
    call = next(s for s in solution.steps if s["kind"] == "tool")
    assert call["tool"] == "math_simplify" and call["tool_ok"] and json.loads(call["tool_input"])["expression"]
    assert len(solution.tree) > 1 and solution.tree[0]["visits"] >= 1
    assert solution.tokens["reused"] > solution.tokens["prompt"] // 2, "siblings and rollouts share cached prefixes"
    assert set(solution.reward) == {"correctness", "validity", "cost", "total"} and solution.reward["validity"] == 1.0
    again = solve("What is 12 times 7?", task_type="math", strategy="mcts", budget=3, seed=0, engine=engine,
                  use_cache=False)
    assert again.tree == solution.tree, "the same seed gives the same search"
    json.dumps(solution.to_dict())


@pytest.mark.slow
def test_a_quadratic_is_answered_with_its_whole_solution_set_and_the_search_stops_once_verified(engine):
    lines = []
    solution = solve("Solve x**2 - 5*x + 6 = 0 for x.", task_type="math", strategy="mcts", seed=0, engine=engine,
                     use_cache=False, on_progress=lines.append)
    assert solution.answer is not None and {v.strip() for v in solution.answer.strip("{}").split(",")} == {"2", "3"}
    assert solution.reward["correctness"] == 1.0  # the set the Solve tool found, not one root substituted
    assert any(line.startswith("stopped after") for line in lines) and solution.paths < 5


@pytest.mark.slow
def test_a_code_task_is_classified_and_verified_by_its_stated_examples_in_the_sandbox(engine):
    solution = solve(ADD, strategy="greedy", seed=0, engine=engine, use_cache=False)
    assert solution.task_type == "code"
    assert solution.steps[-1]["text"].startswith("Answer:\n```python\ndef add(")
    assert solution.reward["correctness"] == 1.0, solution.answer  # add(2, 3) == 5, run in the sandbox


@pytest.mark.slow
def test_r1_solve_prints_the_answer_and_json(tmp_path):
    env = {**os.environ, "R1_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ui.cli", "solve", "What is 15 plus 27?", "--budget", "2", "--json"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    solution = json.loads(done.stdout)
    assert solution["answer"] == "42" and solution["strategy"] == "mcts"
    assert "r1 solve: mcts on a math problem" in done.stderr
    code = subprocess.run([sys.executable, "-m", "ui.cli", "solve", "-", "--strategy", "greedy"], input=ADD,
                          capture_output=True, text=True, timeout=600, env=env)
    assert code.returncode == 0, code.stderr
    assert "greedy on a code problem" in code.stderr and "def add(" in code.stdout
    bad = subprocess.run([sys.executable, "-m", "ui.cli", "solve", "1+1", "--strategy", "beam"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
