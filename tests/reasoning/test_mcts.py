"""MCTS against a tiny deterministic policy: PUCT over merged siblings, the greedy sibling and its reused rollout,
widening, the tree it reports, and reproducibility."""

from __future__ import annotations

import json

from app.solve import solve
from reasoning.mcts import MCTSConfig
from reasoning.reward import RewardWeights
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc
from tests.reasoning.test_search import six_times_seven


def run(engine, budget: int = 3, truth: str | None = "42", **options):
    return solve(
        "What is six times seven?",
        task_type="math",
        strategy="mcts",
        budget=budget,
        seed=0,
        engine=engine,
        truth=truth,
        use_cache=False,
        constrained=False,
        **options,
    )


def test_mcts_finds_the_verified_sibling_and_reports_its_tree():
    engine = ScriptedEngine(six_times_seven)
    solution = run(engine)
    assert solution.answer == "42" and solution.reward["correctness"] == 1.0
    tree = solution.tree
    root, first = tree[0], [n for n in tree if n["parent"] == 0]
    assert root["parent"] is None and root["visits"] == sum(n["visits"] for n in first)
    assert first[0]["step"] == 'Calc: {"expression": "6*6"} => 36', "one sibling is the greedy step"
    assert {n["step"].split(" => ")[-1] for n in first[1:]} <= {"42", "48", "35"}
    assert sum(n["prior"] for n in first) == 1.0 and all(set(n["reward"]) >= {"correctness", "validity"} for n in first)
    assert engine.batches[0] == [[]], "the search starts with the greedy path"
    root_draws = next(batch for batch in engine.batches[1:] if batch and not batch[0])
    assert len(root_draws) == 3, "the K - 1 sampled siblings of an expansion are one batch (the greedy one is reused)"
    assert solution.tokens["reused"] > 0
    json.dumps(solution.to_dict())


def test_the_same_seed_gives_the_same_search():
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(run(ScriptedEngine(six_times_seven), budget=5)) == strip(
        run(ScriptedEngine(six_times_seven), budget=5)
    )


def test_expanding_a_node_reuses_its_greedy_rollout_instead_of_decoding_it_again():
    engine = ScriptedEngine(six_times_seven)
    run(engine, budget=2, truth=None)
    # an expansion of a depth-1 node: several draws from the same path
    expansions = [
        batch
        for batch in engine.batches[1:]
        if len(batch) > 1 and len(batch[0]) == 1 and all(steps == batch[0] for steps in batch)
    ]
    assert expansions and len(expansions[0]) == 3, "K - 1 draws: the greedy one is the rollout's step"


def test_identical_draws_merge_into_one_child_and_widening_finds_new_steps():
    def script(steps, seed, greedy):  # the first expansion's four draws all write 6*6; later draws 6*7
        if steps:
            return answer_last_result(steps)
        return calc("6*7") if not greedy and seed % 1_000_003 > 4 else calc("6*6")

    solution = run(ScriptedEngine(script), budget=10)
    first = [n for n in solution.tree if n["parent"] == 0]
    assert [n["step"].split(" => ")[-1] for n in first] == ["36", "42"]
    assert solution.answer == "42"


def test_a_tree_with_nothing_left_to_expand_ends_the_search_early():
    engine = ScriptedEngine(lambda steps, seed, greedy: answer_last_result(steps) if steps else calc("6*7"))
    solution = run(engine, budget=64, truth=None)  # nothing verifies it: only saturation ends the search
    assert solution.answer == "42" and len(solution.tree) == 3  # root, the one step, the one answer
    assert len(engine.batches) < 10, "saturated nodes are not expanded again"


def test_a_verified_greedy_path_that_nothing_can_outscore_ends_the_search_at_once():
    lines = []
    engine = ScriptedEngine(lambda steps, seed, greedy: answer_last_result(steps) if steps else calc("6*7"))
    solution = run(engine, budget=64, on_progress=lines.append)
    assert solution.answer == "42" and solution.paths == 1 and len(engine.batches) == 2  # the greedy path's 2 steps
    assert "stopped after 0 iterations: '42' is verified" in lines[-1]


def test_a_verified_node_is_not_expanded_and_progress_names_what_would_be_returned():
    def script(steps, seed, greedy):  # greedy 6*6 (wrong), sampled 6*7 (verified) or 6*8
        if steps:
            return answer_last_result(steps) if len(steps) == 1 else "Thought: done"
        return calc("6*6") if greedy else [calc("6*7"), calc("6*8")][seed % 2]

    lines = []
    solution = run(
        ScriptedEngine(script), budget=20, on_progress=lines.append, weights=RewardWeights(cost=1.0)
    )  # a costly path: verified but never settled
    assert solution.answer == "42"
    verified = [n for n in solution.tree if n["reward"] and n["reward"]["correctness"] == 1.0]
    assert verified and all(n["parent"] != v["id"] for v in verified for n in solution.tree)
    progress = [line for line in lines if "best so far" in line]
    assert progress and "best so far '42'" in progress[-1]


def test_c_puct_and_k_are_configurable():
    engine = ScriptedEngine(six_times_seven)
    solution = run(engine, budget=2, mcts_config=MCTSConfig(c_puct=2.0, children=6))
    assert len(next(batch for batch in engine.batches[1:] if batch and not batch[0])) == 5 and solution.answer == "42"
