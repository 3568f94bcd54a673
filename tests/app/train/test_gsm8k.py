"""GSM8K distillation: annotations replayed as Calc steps in solve's format, solutions that do not replay dropped
and counted, and the dev split fixed by the question hash."""

from __future__ import annotations

import json

import pytest

from app.train.gsm8k import DEV_SIZE, build, default_locations, distill, find_gsm8k, solution_steps, split_dev
from reasoning.tasks import TASKS

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
    "altogether in April and May.\n#### 72",
}
WENG = {
    "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
    "$<<0.2*50=10>>10.\n#### 10",
}


def test_annotations_become_calc_steps_and_the_answer_a_tool_result():
    steps, why = solution_steps(NATALIA["question"], NATALIA["answer"])
    assert why == ""
    assert [s.text for s in steps] == [
        'Calc: {"expression": "48/2"} => 24',
        'Calc: {"expression": "48+24"} => 72',
        "Answer: 72",
    ]


def test_a_later_expression_takes_the_tools_form_of_an_earlier_result():
    steps, _ = solution_steps(WENG["question"], WENG["answer"])
    assert [s.text for s in steps] == [
        'Calc: {"expression": "12/60"} => 1/5',
        'Calc: {"expression": "(1/5)*50"} => 10',
        "Answer: 10",
    ]


@pytest.mark.parametrize(
    "answer,reason",
    [
        ("She has 3+4 = <<3+4=8>>8 apples.\n#### 8", "an annotation does not replay (another value)"),
        ("She has 3+4 = <<3+/4=7>>7 apples.\n#### 7", "an annotation does not replay (the tool fails)"),
        ("She has 3+4 = 7 apples.\n#### 7", "no calculator annotations"),
        ("She has 3+4 = <<3+4=7>>7 apples, doubled 14.\n#### 14", "no tool result equals the final answer"),
        ("She has 3*13 = <<3*13=39>>39 apples.\n#### 39", "a call uses a number the step grammar would not allow"),
        ("She has 3+4 = <<3+4=7>>7 apples.", "no '#### answer' line"),
    ],
)
def test_solutions_that_do_not_replay_are_dropped_and_counted(answer, reason):
    rows = [NATALIA, {"question": "Ann has 3 apples and buys 4. How many apples has she?", "answer": answer}, WENG]
    result = distill(rows)
    assert [r["question"] for r in result.kept] == [NATALIA["question"], WENG["question"]]
    assert dict(result.dropped) == {reason: 1}
    assert result.kept[0]["prompt"] == TASKS["math"].prompt(NATALIA["question"])
    assert result.kept[0]["answer"] == "72"


def test_dev_split_is_fixed_by_question_hash_whatever_the_order():
    rows = [{"question": f"question {i}", "answer": "#### 1"} for i in range(DEV_SIZE + 300)]
    train, dev = split_dev(rows)
    train_reversed, dev_reversed = split_dev(rows[::-1])
    assert len(dev) == DEV_SIZE and len(train) == 300
    assert dev == dev_reversed and {r["question"] for r in train} == {r["question"] for r in train_reversed}
    assert not {r["question"] for r in train} & {r["question"] for r in dev}


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="looked at .*nope.jsonl"):
        find_gsm8k(tmp_path / "nope.jsonl")
    monkeypatch.setenv("R1_GSM8K", str(tmp_path / "env.jsonl"))
    monkeypatch.chdir(tmp_path)
    looked = [str(p) for p in default_locations()]
    assert looked[:2] == [str(tmp_path / "env.jsonl"), str(tmp_path.parent / "shared/datasets/gsm8k/train.jsonl")]


def test_build_writes_no_dev_problem(tmp_path):
    try:
        source = find_gsm8k()
    except FileNotFoundError:
        pytest.skip("../shared/datasets/gsm8k/train.jsonl is not here")
    rows = [json.loads(line) for line in source.read_text().splitlines()[:800]]
    small = tmp_path / "train.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build(small, tmp_path / "out.jsonl")
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    _, dev = split_dev(rows)
    assert report["kept"] == len(written) and report["kept"] + sum(report["dropped"].values()) == 800 - DEV_SIZE
    assert not {r["question"] for r in written} & {r["question"] for r in dev}
