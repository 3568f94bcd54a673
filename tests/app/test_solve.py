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
    solution = solve(
        "What is 12 times 7?", task_type="math", strategy="mcts", budget=3, seed=0, engine=engine, use_cache=False
    )
    assert solution.answer == "84"
    call = next(s for s in solution.steps if s["kind"] == "tool")
    assert call["tool"] == "math_simplify" and call["tool_ok"] and json.loads(call["tool_input"])["expression"]
    assert len(solution.tree) > 1 and solution.tree[0]["visits"] >= 1
    assert solution.tokens["reused"] > solution.tokens["prompt"] // 2, "siblings and rollouts share cached prefixes"
    assert set(solution.reward) == {"correctness", "validity", "cost", "total"} and solution.reward["validity"] == 1.0
    again = solve(
        "What is 12 times 7?", task_type="math", strategy="mcts", budget=3, seed=0, engine=engine, use_cache=False
    )
    assert again.tree == solution.tree, "the same seed gives the same search"
    json.dumps(solution.to_dict())


@pytest.mark.slow
def test_a_quadratic_is_answered_with_its_whole_solution_set_and_the_search_stops_once_verified(engine):
    lines = []
    solution = solve(
        "Solve x**2 - 5*x + 6 = 0 for x.",
        task_type="math",
        strategy="mcts",
        seed=0,
        engine=engine,
        use_cache=False,
        on_progress=lines.append,
    )
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
    done = subprocess.run(
        [sys.executable, "-m", "ui.cli", "solve", "What is 15 plus 27?", "--budget", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    solution = json.loads(done.stdout)
    assert solution["answer"] == "42" and solution["strategy"] == "mcts"
    assert "r1 solve: mcts on a math problem" in done.stderr
    code = subprocess.run(
        [sys.executable, "-m", "ui.cli", "solve", "-", "--strategy", "greedy"],
        input=ADD,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert code.returncode == 0, code.stderr
    assert "greedy on a code problem" in code.stderr and "def add(" in code.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ui.cli", "solve", "1+1", "--strategy", "beam"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# ----- options, the strategy table and the caches, on a scripted engine (no model) --------------------------


def scripted_engine():
    from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

    return ScriptedEngine(lambda steps, seed, greedy: answer_last_result(steps) if steps else calc("6*7"))


def test_every_strategy_runs_from_the_one_table_with_one_signature():
    from app.solve import STRATEGIES

    for name in STRATEGIES:
        solution = solve(
            "What is six times seven?",
            task_type="math",
            strategy=name,
            budget=2,
            engine=scripted_engine(),
            use_cache=False,
        )
        assert solution.strategy == name and solution.answer == "42", name
    with pytest.raises(ValueError, match="unknown strategy 'beam'"):
        solve("What is six times seven?", strategy="beam", engine=scripted_engine())


def test_options_and_their_keywords_are_one_thing_and_an_unknown_keyword_is_named():
    from app.solve import SolveOptions

    by_options = solve(
        "What is six times seven?",
        task_type="math",
        strategy="greedy",
        engine=scripted_engine(),
        options=SolveOptions(truth="41", use_cache=False),
    )
    by_keywords = solve(
        "What is six times seven?",
        task_type="math",
        strategy="greedy",
        engine=scripted_engine(),
        truth="41",
        use_cache=False,
    )
    assert by_options.reward == by_keywords.reward and by_options.reward["correctness"] == 0.0  # 42 is not 41
    overridden = solve(
        "What is six times seven?",
        task_type="math",
        strategy="greedy",
        engine=scripted_engine(),
        options=SolveOptions(truth="41", use_cache=False),
        truth="42",
    )
    assert overridden.reward["correctness"] == 1.0  # a keyword overrides the options' field
    with pytest.raises(TypeError, match="unknown keywords \\['budgett'\\]"):
        solve("What is six times seven?", engine=scripted_engine(), budgett=3)


def test_the_path_cache_is_keyed_by_the_model_and_a_runtime_owns_its_own():
    from app import Settings
    from app.runtime import Runtime

    engine = scripted_engine()
    first = solve("What is six times seven?", task_type="math", strategy="greedy", engine=engine)
    assert not first.cached
    assert solve("What is six times seven?", task_type="math", strategy="greedy", engine=engine).cached
    engine.name = "scripted + adapter"  # another model's answer is not this one's
    assert not solve("What is six times seven?", task_type="math", strategy="greedy", engine=engine).cached

    base = Runtime(Settings(), scripted_engine())
    tuned = Runtime(Settings(adapter="/adapters/gsm8k"), base.engine)
    assert not solve("What is six times seven?", task_type="math", strategy="greedy", runtime=base).cached
    assert solve("What is six times seven?", task_type="math", strategy="greedy", runtime=base).cached
    assert not solve("What is six times seven?", task_type="math", strategy="greedy", runtime=tuned).cached
    assert len(base.path_cache._entries) == len(tuned.path_cache._entries) == 1  # each runtime's own


def test_a_settings_change_before_the_search_caches_the_answer_under_the_model_that_searched():
    from app import Settings
    from app.runtime import Runtime

    engine = scripted_engine()
    runtime = Runtime(Settings(), engine)
    tuned = Settings(adapter="/adapters/gsm8k")

    def applied_meanwhile():  # the Settings tab's apply lands between the cache look-up and the search
        runtime._settings = tuned
        return tuned, engine

    runtime.current = applied_meanwhile
    assert not solve("What is six times seven?", task_type="math", strategy="greedy", runtime=runtime).cached
    assert solve("What is six times seven?", task_type="math", strategy="greedy", runtime=runtime).cached


def test_a_solution_remembered_without_the_adapter_is_not_served_with_it(store):
    """`r1 solve --adapter` once returned an answer tier 3 held from a search without the adapter."""
    from app import Settings
    from app.memory import SolvedProblems
    from app.runtime import Runtime

    engine = scripted_engine()
    found = solve(
        "What is six times seven?",
        task_type="math",
        strategy="greedy",
        runtime=Runtime(Settings(), engine),
        memory=SolvedProblems(store),
    )
    assert found.answer == "42" and not found.cached
    searched = len(engine.batches)
    with_adapter = solve(
        "What's six times seven?",
        task_type="math",
        strategy="greedy",
        runtime=Runtime(Settings(adapter="/adapters/gsm8k"), engine),
        memory=SolvedProblems(store),
    )
    assert not with_adapter.cached and with_adapter.cached_from is None and len(engine.batches) > searched
    again = solve(
        "What's six times seven?",
        task_type="math",
        strategy="greedy",
        runtime=Runtime(Settings(), engine),
        memory=SolvedProblems(store),
    )
    assert again.cached_from == "What is six times seven?"  # the same model does reuse it
