from pathlib import Path

import pytest

from app.train.gsm8k import read_gsm8k
from app.train.jsonl import read_jsonl


def test_rows_are_parsed_and_blank_lines_skipped(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path, lambda row: {"a": row["a"] * 10}, "a row") == [{"a": 10}, {"a": 20}]


@pytest.mark.parametrize("bad", ["not json", '{"question": "q"}', "[1, 2]"])
def test_a_bad_line_is_named_with_its_number(tmp_path: Path, bad: str):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n\n' + bad + "\n")
    with pytest.raises(ValueError, match=r"gsm8k.jsonl:3: not a GSM8K row with question and answer"):
        read_gsm8k(path)
