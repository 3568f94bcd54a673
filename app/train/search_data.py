"""Expert iteration's data (rStar-Math style): the model's own sampled paths on training problems, kept where the
answer equals the gold answer and every step is valid, deduplicated; rows in the format `r1 train sft` reads.

The sampler is any backend: our engine (steps under the step grammar) or, with a teacher's base URL, an
OpenAI-compatible server (free-text steps, parsed and run the same way), which distils a larger model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reasoning.reward import StepValidity
from reasoning.search import Policy, SearchBudget
from reasoning.tasks import TASKS, check_math_answer


@dataclass(frozen=True)
class SearchDataConfig:
    samples: int = 8  # paths sampled per problem: the sampling budget
    tokens: int = 2400  # generated tokens per problem, over all its paths
    temperature: float = 0.8
    seed: int = 0


def verified_paths(engine, question: str, gold: str, config: SearchDataConfig) -> tuple[list[list[str]], int]:
    """(distinct step lists of the sampled paths that reach `gold` with every step valid, paths sampled)."""
    budget = SearchBudget(iterations=config.samples, tokens=config.tokens, seconds=float("inf"))
    policy = Policy.math_sampler(engine, question, budget, config.seed)
    paths = policy.rollout([policy.root(policy.task.prompt(question))] * config.samples, config.temperature)
    validity = StepValidity()
    kept: list[list[str]] = []
    for path in paths:
        steps = [s.text for s in path.steps]
        if (
            path.answer is not None
            and check_math_answer(path.answer, gold)
            and validity(path.steps, question) == 1.0
            and steps not in kept
        ):
            kept.append(steps)
    return kept, len(paths)


def build(
    engine,
    problems: Sequence[dict],
    out: str | Path,
    config: SearchDataConfig,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Sample every problem ({question, answer}: a gold number), write the verified paths to `out` (JSONL);
    returns the yield."""
    task = TASKS["math"]
    rows, sampled, solved = [], 0, 0
    for i, problem in enumerate(problems):
        kept, n = verified_paths(engine, problem["question"], problem["answer"], config)
        sampled += n
        solved += bool(kept)
        rows += [
            {
                "question": problem["question"],
                "answer": problem["answer"],
                "prompt": task.prompt(problem["question"]),
                "steps": steps,
            }
            for steps in kept
        ]
        if progress:
            progress(f"[{i + 1}/{len(problems)}] {len(kept)} verified of {n} paths; {len(rows)} rows so far")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(out)
    return {
        "problems": len(problems),
        "paths_sampled": sampled,
        "verified_paths": len(rows),
        "problems_with_a_verified_path": solved,
        "yield_per_problem": round(len(rows) / max(len(problems), 1), 3),
        "out": str(out),
    }
