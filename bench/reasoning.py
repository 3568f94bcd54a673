"""Reasoning benchmark: greedy vs self-consistency vs MCTS at matched generated-token budgets.

Sets: the symbolic set shipped in bench/data/symbolic.jsonl (61 sympy-checkable items: equations, systems,
derivatives, integrals, limits, simplification, factoring, percentages, unit rates) and GSM8K
(../shared/datasets/gsm8k/train.jsonl, first --limit items). Per strategy: accuracy against ground truth,
generated tokens and seconds per problem, and prompt tokens served from the prefix cache. For MCTS it also
counts what re-prefilling every node would have cost (every prompt token computed).

    python bench/reasoning.py --set symbolic --limit 20
    python bench/reasoning.py --set gsm8k --limit 10 --model default

The search never sees the ground truth (it is used only to score the final answer), so the reward's
correctness layer falls back to substitution or agreement among paths, as it does for a user.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SYMBOLIC = ROOT / "bench" / "data" / "symbolic.jsonl"
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"


def load_set(name: str, limit: int) -> list[dict]:
    if name == "symbolic":
        rows = [json.loads(line) for line in SYMBOLIC.read_text().splitlines()]
    else:
        if not GSM8K.exists():
            raise SystemExit(f"{GSM8K} not found (../shared/datasets is beside the project in CI and dev)")
        rows = []
        for line in GSM8K.read_text().splitlines():
            item = json.loads(line)
            rows.append({"question": item["question"], "answer": item["answer"].split("####")[-1].strip(), "category": "gsm8k"})
    return rows[:limit] if limit else rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["symbolic", "gsm8k"], default="symbolic")
    parser.add_argument("--limit", type=int, default=0, help="first N items (default: all of symbolic, 200 of gsm8k)")
    parser.add_argument("--model", default="default", help="a .gguf file or HF directory (default: the bundled model)")
    parser.add_argument("--quant", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=600, help="generated-token budget per problem for SC and MCTS")
    parser.add_argument("--samples", type=int, default=4, help="paths for self-consistency")
    parser.add_argument("--strategies", default="greedy,self_consistency,mcts")
    parser.add_argument("--json", type=Path, help="also write per-item results here")
    args = parser.parse_args()
    if args.set == "gsm8k" and not args.limit:
        args.limit = 200

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model
    from app.solve import solve
    from reasoning.search import SearchBudget
    from reasoning.tasks import check_math_answer

    engine = model.load(args.model, quant=args.quant, threads=args.threads)
    items = load_set(args.set, args.limit)
    budgets = {
        "greedy": SearchBudget(iterations=1, tokens=args.tokens),
        "self_consistency": SearchBudget(iterations=args.samples, tokens=args.tokens),
        "best_of_n": SearchBudget(iterations=args.samples, tokens=args.tokens),
        "mcts": SearchBudget(iterations=64, tokens=args.tokens),  # the token budget binds, not the iterations
    }
    strategies = args.strategies.split(",")
    results: dict[str, list[dict]] = defaultdict(list)
    for i, item in enumerate(items):
        for strategy in strategies:
            solution = solve(item["question"], task_type="math", strategy=strategy, budget=budgets[strategy], seed=0,
                             engine=engine, use_cache=False)
            correct = solution.answer is not None and check_math_answer(solution.answer, item["answer"])
            results[strategy].append({
                "question": item["question"], "category": item["category"], "truth": item["answer"],
                "answer": solution.answer, "correct": correct, "seconds": solution.seconds, **solution.tokens,
                "steps": [s["text"] for s in solution.steps],
            })
        line = "  ".join(f"{s} {'ok' if results[s][-1]['correct'] else '--'}" for s in strategies)
        print(f"[{i + 1}/{len(items)}] {line}  {item['question'][:60]}", file=sys.stderr, flush=True)

    print(f"\n{args.set}, {len(items)} items, model {args.model} ({args.quant}), {args.tokens}-token budget for "
          f"self-consistency@{args.samples} and MCTS, load average {os.getloadavg()[0]:.1f}\n")
    print("| strategy | accuracy | generated tokens / problem | seconds / problem | prompt tokens from cache |")
    print("|---|---:|---:|---:|---:|")
    for strategy in strategies:
        rows = results[strategy]
        accuracy = sum(r["correct"] for r in rows) / len(rows)
        reused = sum(r["reused"] for r in rows) / max(1, sum(r["prompt"] for r in rows))
        print(f"| {strategy} | {accuracy:.0%} ({sum(r['correct'] for r in rows)}/{len(rows)}) | "
              f"{statistics.mean(r['generated'] for r in rows):.0f} | {statistics.median(r['seconds'] for r in rows):.1f} | "
              f"{reused:.0%} |")
    if "mcts" in results:
        rows = results["mcts"]
        computed = sum(r["prompt"] - r["reused"] for r in rows)
        print(f"\nMCTS prefill: {sum(r['prompt'] for r in rows)} prompt tokens in all; {computed} computed with the radix "
              f"cache, i.e. {sum(r['prompt'] for r in rows) / max(computed, 1):.1f}x fewer than re-prefilling every node.")
    print("\nAccuracy by category:")
    for strategy in strategies:
        by = defaultdict(list)
        for r in results[strategy]:
            by[r["category"]].append(r["correct"])
        print(f"- {strategy}: " + ", ".join(f"{c} {sum(v)}/{len(v)}" for c, v in sorted(by.items())))
    failures = Counter()
    for r in results.get("mcts", []):
        if not r["correct"]:
            kinds = [re.match(r"(\w+):", s).group(1) if re.match(r"(\w+):", s) else "thought" for s in r["steps"]]
            failures["no answer" if r["answer"] is None else ("wrong tool result used" if kinds[:-1] else "answer without a tool step")] += 1
    if failures:
        print("\nMCTS failures by kind: " + ", ".join(f"{k} {v}" for k, v in failures.most_common()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
