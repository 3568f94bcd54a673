"""`r1 train data search|values`: the problems they read, and a bad problems file refused before the model loads."""

from __future__ import annotations

import json

import pytest

import app
from ui.cli import main
from ui.train_cli import _training_problems


def test_problems_keep_a_gsm8k_solution_and_take_its_final_number(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [
        {"question": "Q1", "answer": "She has 2*3=<<2*3=6>>6.\n#### 6"},
        {"question": "Q2", "answer": 42},
        {"question": "Q3", "answer": "7"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert _training_problems(str(path), [], None) == [
        {"question": "Q1", "answer": "6", "solution": rows[0]["answer"]},
        {"question": "Q2", "answer": "42"},
        {"question": "Q3", "answer": "7"},
    ]
    assert _training_problems(str(path), [], 1, skip=1) == [{"question": "Q2", "answer": "42"}]
    assert _training_problems(None, rows, 1) == _training_problems(str(path), [], 1)


@pytest.mark.parametrize("source", ["search", "values"])
def test_a_bad_problems_file_is_named_before_the_model_loads(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(app, "load_engine", lambda settings: pytest.fail("the engine loaded"))
    path = tmp_path / "problems.jsonl"
    path.write_text('{"question": "Q1", "answer": "1"}\n{"prompt": "no question"}\n')
    assert main(["train", "data", source, "--problems", str(path), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert f"r1: error: {path}:2: not a problem" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
