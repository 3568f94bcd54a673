"""Expert-iteration data: sampled paths kept only where the answer is the gold one and every step is valid, once."""

from __future__ import annotations

import json

from app.train.search_data import SearchDataConfig, build
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

QUESTION = "Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?"


def script(steps, seed, greedy):
    """Seeds alternate between the right path, a wrong one, and an ungrounded call (77 is not in the problem)."""
    if steps:
        return answer_last_result(steps)
    return [calc("3*12 - 5"), calc("3*12 + 5"), calc("77 - 46")][seed % 3]


def test_only_verified_valid_paths_are_kept_once(tmp_path):
    engine = ScriptedEngine(script)
    report = build(engine, [{"question": QUESTION, "answer": "31"}], tmp_path / "paths.jsonl", SearchDataConfig(samples=6))
    rows = [json.loads(line) for line in (tmp_path / "paths.jsonl").read_text().splitlines()]
    assert report["paths_sampled"] == 6 and report["problems_with_a_verified_path"] == 1
    # "77 - 46" also gives 31, but 77 is no number of the problem: not a valid step; the right path, twice, kept once
    assert [row["steps"] for row in rows] == [['Calc: {"expression": "3*12 - 5"} => 31', "Answer: 31"]]
    assert report["verified_paths"] == 1 and report["yield_per_problem"] == 1.0
    assert rows[0]["prompt"].endswith(f"Problem: {QUESTION}\n")
