"""A value model's data: greedy and sampled rollouts of training problems, every path labelled by whether it reached
the gold answer, with the prefix ends the head is trained on; dev-split problems refused."""

from __future__ import annotations

import json

import pytest

from app.train.value_data import ValueDataConfig, build, read_value_rows
from reasoning.tasks import check_math_answer
from tests.reasoning.scripted import ScriptedEngine, answer_last_result, calc

QUESTION = "Tom has 3 boxes of 12 apples and eats 5 apples. How many apples are left?"


def script(steps, seed, greedy):
    """Greedy: the right path; sampled: right or wrong by seed; the answer copies the last result."""
    if steps:
        return answer_last_result(steps)
    return calc("3*12 - 5") if greedy else [calc("3*12 + 5"), calc("3*12 - 5")][seed % 2]


def test_every_path_is_labelled_by_its_final_answer(tmp_path):
    solution = "He has 3*12=<<3*12=36>>36 apples.\nThen 36-5=<<36-5=31>>31 are left.\n#### 31"
    report = build(
        ScriptedEngine(script),
        [{"question": QUESTION, "answer": "31", "solution": solution}],
        tmp_path / "v.jsonl",
        ValueDataConfig(samples=4),
    )
    rows = read_value_rows(tmp_path / "v.jsonl")
    assert [r["greedy"] for r in rows] == [True, False, False, False, False]
    assert [r["label"] for r in rows] == [int(r["answer"] == "31") for r in rows]
    assert rows[0]["answer"] == "31" and {r["answer"] for r in rows} == {"31", "41"}
    right = sum(r["label"] for r in rows)
    assert report == {
        "problems": 1,
        "paths": 5,
        "positive_paths": right,
        "prefixes": 10,
        "on_track_prefixes": 2 * right,
        "problems_with_a_correct_path": 1,
        "out": str(tmp_path / "v.jsonl"),
    }
    # the one-step "3*12 - 5 => 31" result is the solution's last value: on track; 3*12 + 5 = 41 is none of its values
    assert [r["on_track"] for r in rows] == [[1, 1] if r["label"] else [0, 0] for r in rows]
    assert [r["results"] for r in rows] == [[r["answer"], r["answer"]] for r in rows]
    for row in rows:  # two steps each: the prefixes end after the Calc step and after the answer
        assert len(row["ends"]) == 2 and row["ends"][-1] == len(row["ids"]) and row["ends"][0] < row["ends"][1]
        assert "Calc" in "".join(map(chr, row["ids"][: row["ends"][0]])).split("Problem:")[-1]


def test_a_prefix_stays_on_track_while_its_values_are_the_solutions():
    from app.train.value_data import on_track
    from reasoning.steps import parse_step

    def steps(*texts):
        return [parse_step(t) for t in texts]

    golds = ["36", "31"]
    assert on_track(steps(calc("3*12"), "Thought: now subtract", calc("36 - 5"), "Answer: 31"), golds) == [1, 1, 1, 1]
    assert on_track(steps(calc("3*12"), calc("36 + 5"), calc("36 - 5")), golds) == [1, 0, 0]
    assert on_track(steps(calc("72/2")), golds) == [1]  # 36.0 is 36
    assert on_track(steps(calc("3*12"), "Answer: 36"), golds) == [1, 0]  # an intermediate value is no answer


def test_dev_split_problems_are_refused_before_any_rollout(tmp_path):
    engine = ScriptedEngine(script)
    with pytest.raises(ValueError, match="1 problems are in the GSM8K dev split"):
        build(
            engine,
            [{"question": QUESTION, "answer": "31"}],
            tmp_path / "v.jsonl",
            ValueDataConfig(),
            dev_questions=frozenset({QUESTION}),
        )
    assert engine.batches == [] and not (tmp_path / "v.jsonl").exists()


def test_a_bad_row_is_named(tmp_path):
    path = tmp_path / "v.jsonl"
    good = {"question": "q", "gold": "1", "answer": None, "label": 0, "greedy": True, "ids": [1, 2, 3], "ends": [2, 3]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "ends": [4]}) + "\n")
    with pytest.raises(ValueError, match=r"v.jsonl:2: not a value row"):
        read_value_rows(path)


def test_rollouts_of_a_real_tiny_model_are_labelled(tmp_path, default_tokenizer):
    """Our engine (a tiny random llama with the default tokenizer, under the step grammar): token ids and prefix
    ends as the search keeps them, each path labelled."""
    from model.engine import Engine
    from tests.model.serving.test_scheduler import tiny_transformer

    with Engine(tiny_transformer(default_tokenizer.vocab_size), default_tokenizer, kv_cache_mb=64) as engine:
        report = build(
            engine,
            [{"question": QUESTION, "answer": "31"}],
            tmp_path / "v.jsonl",
            ValueDataConfig(samples=2, max_steps=2, tokens=300),
        )
    rows = read_value_rows(tmp_path / "v.jsonl")
    assert report["paths"] == len(rows) == 3 and report["positive_paths"] == sum(r["label"] for r in rows)
    for row in rows:
        assert row["label"] == int(row["answer"] is not None and check_math_answer(row["answer"], "31"))
        assert 1 <= len(row["ends"]) <= 2 and row["ends"][-1] == len(row["ids"])
        assert row["ids"][:300] == rows[0]["ids"][:300]  # every path starts from the same few-shot prompt
