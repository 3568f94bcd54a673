"""GSM8K's worked solutions as training paths in our step format (distillation), and the held-out dev split.

A GSM8K solution marks each calculation `48/2 = <<48/2=24>>24` and ends `#### 72`. Each annotation becomes a
`Calc` step that our Calc tool runs (reasoning/steps.py), and `#### n` an `Answer:` stating the tool result equal
to n, exactly as `solve` decodes: the prompt is `TASKS["math"].prompt(question)`, each step the text the search
appends to the context. A solution is dropped (and counted by reason) when an annotation does not replay (the
tool errs or computes another value), a call uses a number the step grammar would not let the model write
(reasoning/grounding.py), or no tool result equals the final answer.

Later annotations write earlier results as GSM8K printed them ("0.2*50" after "12/60 = 0.2"); where our tool
wrote the value differently ("1/5"), the expression takes the tool's form ("(1/5)*50"), as the model would see it.

The dev split is the 500 problems whose sha256(question) sorts first: fixed whatever the file's order, and never
written into training data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.train.jsonl import read_jsonl
from reasoning.grounding import grounded
from reasoning.steps import ANSWER_PREFIX, Step, parse_step
from reasoning.tasks import TASKS, check_math_answer

DEV_SIZE = 500
# Where `r1 train data gsm8k` and `bench/reasoning.py --set gsm8k-dev` look when given no file, in order.
GSM8K_ENV = "R1_GSM8K"
GSM8K_RELATIVE = Path("shared/datasets/gsm8k/train.jsonl")

_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
_FINAL = re.compile(r"####\s*(.+?)\s*$")


def default_locations() -> list[Path]:
    """$R1_GSM8K, then ../shared/datasets/gsm8k/train.jsonl beside the working directory and beside the project."""
    import os

    here = Path(__file__).resolve().parents[2]
    places = [Path(os.environ[GSM8K_ENV])] if os.environ.get(GSM8K_ENV) else []
    return places + [Path.cwd().parent / GSM8K_RELATIVE, here.parent / GSM8K_RELATIVE]


def find_gsm8k(path: str | Path | None = None) -> Path:
    """The GSM8K train file: `path`, or the first of `default_locations`. Raises FileNotFoundError saying where
    it looked."""
    candidates = [Path(path).expanduser()] if path else default_locations()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "GSM8K train.jsonl not found; looked at "
        + ", ".join(str(c) for c in candidates)
        + " (pass the file, or set R1_GSM8K)"
    )


def read_gsm8k(path: Path) -> list[dict]:
    """Rows {question, answer} of a GSM8K jsonl file. Raises ValueError naming the line that is not one."""
    return read_jsonl(
        path,
        lambda row: {"question": str(row["question"]), "answer": str(row["answer"])},
        "a GSM8K row with question and answer",
    )


def question_hash(question: str) -> str:
    return hashlib.sha256(question.strip().encode()).hexdigest()


def split_dev(rows: Sequence[dict], size: int = DEV_SIZE) -> tuple[list[dict], list[dict]]:
    """(train, dev): dev is the `size` rows whose question hash sorts first, in that order."""
    order = sorted(range(len(rows)), key=lambda i: question_hash(rows[i]["question"]))
    dev_ids = set(order[:size])
    return [r for i, r in enumerate(rows) if i not in dev_ids], [rows[i] for i in order[:size]]


def gold_results(solution: str) -> list[str]:
    """Every value a worked solution computes: its calculator annotations' results, then the final answer."""
    results = [claimed.replace(",", "").strip() for _, claimed in _ANNOTATION.findall(solution)]
    final = final_answer(solution)
    return [r for r in results if r] + ([final] if final is not None else [])


def final_answer(solution: str) -> str | None:
    match = _FINAL.search(solution.strip())
    return match.group(1).replace(",", "").strip() if match else None


@dataclass
class Distilled:
    kept: list[dict] = field(default_factory=list)  # {question, answer, prompt, steps}
    dropped: Counter = field(default_factory=Counter)  # reason -> solutions


def _number_pattern(literal: str) -> re.Pattern:
    return re.compile(rf"(?<![\d.]){re.escape(literal)}(?![\d.])")


def solution_steps(question: str, solution: str) -> tuple[list[Step] | None, str]:
    """The solution's annotations run as Calc steps, ending with the Answer; (None, why) when it does not replay."""
    gold = final_answer(solution)
    if gold is None:
        return None, "no '#### answer' line"
    annotations = _ANNOTATION.findall(solution)
    if not annotations:
        return None, "no calculator annotations"
    steps: list[Step] = []
    rewrites: list[tuple[re.Pattern, str]] = []  # GSM8K's printed result -> our tool's form
    for expression, claimed in annotations:
        expression = expression.replace(",", "").strip()
        for pattern, ours in rewrites:
            expression = pattern.sub(ours, expression)
        step = parse_step("Calc: " + json.dumps({"expression": expression}))
        if not step.tool_ok:
            return None, "an annotation does not replay (the tool fails)"
        claimed = claimed.replace(",", "").strip()
        if not claimed or not check_math_answer(step.tool_output, claimed):
            return None, "an annotation does not replay (another value)"
        if not grounded(step, question, steps):
            return None, "a call uses a number the step grammar would not allow"
        if step.tool_output != claimed:
            ours = step.tool_output if re.fullmatch(r"-?\d+", step.tool_output) else f"({step.tool_output})"
            rewrites.append((_number_pattern(claimed), ours))
        steps.append(step)
    results = [s.tool_output for s in steps if check_math_answer(s.tool_output, gold)]
    if not results:
        return None, "no tool result equals the final answer"
    return steps + [parse_step(f"{ANSWER_PREFIX} {results[-1]}")], ""


def distill(rows: Iterable[dict]) -> Distilled:
    """Training paths from GSM8K rows (already without the dev split)."""
    out = Distilled()
    task = TASKS["math"]
    for row in rows:
        steps, why = solution_steps(row["question"], row["answer"])
        if steps is None:
            out.dropped[why] += 1
            continue
        out.kept.append(
            {
                "question": row["question"],
                "answer": final_answer(row["answer"]),
                "prompt": task.prompt(row["question"]),
                "steps": [s.text for s in steps],
            }
        )
    return out


def build(source: str | Path | None, out: str | Path) -> dict:
    """`r1 train data gsm8k`: GSM8K train less the dev split, distilled into `out` (JSONL). Returns the counts."""
    path = find_gsm8k(source)
    rows = read_gsm8k(path)
    train, dev = split_dev(rows)
    result = distill(train)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in result.kept))
    tmp.replace(out)
    return {
        "source": str(path),
        "rows": len(rows),
        "dev_held_out": len(dev),
        "kept": len(result.kept),
        "dropped": dict(result.dropped.most_common()),
        "out": str(out),
    }
