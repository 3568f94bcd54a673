"""A value model's data: the policy's own rollouts on training problems, each labelled by whether it reached the gold
answer; every prefix of a path (after each of its steps) carries its path's label.

One JSONL row per path: {question, gold, answer, label (1 = the answer equals gold), greedy, ids (the path's
prompt token ids, as the search scores them), ends (len(ids) after each step: the prefixes), results (each step's
tool result or answer, None for a thought)}, and where the problem comes with a worked solution (GSM8K's), on_track:
per prefix, 1 when every value it computed is one the solution computes and its answer, if any, the gold one (a
process label, denser than the final one when few paths reach the answer). Paths run as in the
search: the step grammar, the reasoning adapter when the engine holds one, one greedy path and `samples` sampled
ones per problem. Training problems only: a question of the dev split (app/train/gsm8k.py) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.train.gsm8k import gold_results
from app.train.jsonl import read_jsonl
from reasoning.search import Path as SearchPath, Policy, SearchBudget
from reasoning.steps import Step, answer_of
from reasoning.tasks import check_math_answer


@dataclass(frozen=True)
class ValueDataConfig:
    samples: int = 4  # sampled paths per problem, besides the greedy one
    temperature: float = 0.8
    max_steps: int = 6
    tokens: int = 2400  # generated tokens per problem, over all its paths
    seed: int = 0


def rollouts(engine, question: str, config: ValueDataConfig) -> list[SearchPath]:
    """The greedy path, then `samples` sampled ones, decoded as `solve` decodes steps."""
    budget = SearchBudget(
        iterations=config.samples, tokens=config.tokens, seconds=float("inf"), max_steps=config.max_steps
    )
    policy = Policy.math_sampler(engine, question, budget, config.seed)
    root = policy.root(policy.task.prompt(question))
    greedy = policy.rollout([root], 0.0)
    return greedy + policy.rollout([root] * config.samples, config.temperature)


def labelled(question: str, gold: str, paths: Sequence[SearchPath], solution: str | None = None) -> list[dict]:
    """One row per path with at least one step (see the module doc)."""
    rows = []
    for i, path in enumerate(paths):
        if not path.ends or isinstance(path.ids, str):
            continue
        results = [
            answer_of(s) if answer_of(s) is not None else s.tool_output if s.kind == "tool" else None
            for s in path.steps
        ]
        row = {
            "question": question,
            "gold": gold,
            "answer": path.answer,
            "label": int(path.answer is not None and check_math_answer(path.answer, gold)),
            "greedy": i == 0,
            "ids": list(path.ids),
            "ends": list(path.ends),
            "results": results,
        }
        if solution is not None:
            row["on_track"] = on_track(path.steps, gold_results(solution))
        rows.append(row)
    return rows


def on_track(steps: Sequence[Step], golds: Sequence[str]) -> list[int]:
    """Per prefix of a path: 1 while every tool result so far is a value the solution computes (`golds`, its final
    answer last) and an answer, if any, is the final one; thoughts keep the label."""
    labels, ok = [], True
    for step in steps:
        answer = answer_of(step)
        if answer is not None:
            ok = ok and check_math_answer(answer, golds[-1])
        elif step.kind == "tool":
            ok = ok and step.tool_ok and any(check_math_answer(step.tool_output, g) for g in golds)
        labels.append(int(ok))
    return labels


def build(
    engine,
    problems: Sequence[dict],
    out: str | Path,
    config: ValueDataConfig,
    dev_questions: frozenset[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Roll out every problem ({question, answer: a gold number, solution: its worked solution, optional}), write the
    labelled paths to `out` (JSONL);
    returns counts. Raises ValueError for a problem of the dev split, before any work."""
    leaked = [p["question"] for p in problems if p["question"].strip() in dev_questions]
    if leaked:
        raise ValueError(
            f"{len(leaked)} problems are in the GSM8K dev split (first: {leaked[0][:80]!r}); "
            "a value model trains on training problems only"
        )
    rows: list[dict] = []
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as file:  # a problem's rows are written as it finishes: a kill keeps them
        for i, problem in enumerate(problems):
            done = labelled(
                problem["question"],
                problem["answer"],
                rollouts(engine, problem["question"], config),
                problem.get("solution"),
            )
            file.write("".join(json.dumps(row) + "\n" for row in done))
            file.flush()
            rows += done
            if progress:
                progress(
                    f"[{i + 1}/{len(problems)}] {len(rows)} paths, {sum(r['label'] for r in rows)} reached the "
                    "gold answer"
                )
    solved = len({r["question"] for r in rows if r["label"]})
    return {
        "problems": len(problems),
        "paths": len(rows),
        "positive_paths": sum(r["label"] for r in rows),
        "prefixes": sum(len(r["ends"]) for r in rows),
        "on_track_prefixes": sum(sum(r.get("on_track", [])) for r in rows),
        "problems_with_a_correct_path": solved,
        "out": str(out),
    }


def read_value_rows(path: str | Path) -> list[dict]:
    """The rows `build` wrote. Raises ValueError naming a line that is not one."""

    def parse(row) -> dict:
        ids, ends = [int(t) for t in row["ids"]], [int(e) for e in row["ends"]]
        if not ends or any(not 0 < e <= len(ids) for e in ends) or row["label"] not in (0, 1):
            raise ValueError("ends must lie within ids and label must be 0 or 1")
        if "on_track" in row and len(row["on_track"]) != len(ends):
            raise ValueError("on_track needs one label per prefix")
        return {**row, "ids": ids, "ends": ends}

    return read_jsonl(Path(path).expanduser(), parse, "a value row {question, label, ids, ends}")
