"""Per-request adapters on the default model: what a batch costs with none, some or all of its rows on the adapter,
and that base rows beside adapter rows still get the base model's text.

One engine holds the adapter per request (`model.load(request_adapters=...)`). Each round decodes the same B prompts
(greedy, `--tokens` each) as one batch three ways, interleaved: every request on the base model (its decode steps
may take the native step), half of them on the adapter (those steps run eagerly), every request on the adapter.
Reported: generated tokens/s per way (median over rounds) and its ratio to the base-only batch of the same rounds,
and whether each base request of the mixed batch wrote exactly what it wrote in the base-only batch.

    python bench/adapters.py --adapter DIR --threads 1

The machine is shared: speed figures come with the load average, and ratios are taken within each round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The history of the printing press begins in",
    "A train leaves the station at 3 pm travelling at 60 miles per hour.",
    "Write a short note to a neighbour about a lost cat.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "The three primary colours are",
    "Betty is saving money for a new wallet which costs $100.",
    "In the morning the village market opens with",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="a LoRA adapter directory (PEFT format)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=48, help="generated tokens per request (default 48)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model

    name = "reasoning"
    engine = model.load(args.model, threads=args.threads, request_adapters={name: args.adapter})
    engine.generate("warm up", max_new_tokens=4)
    time.sleep(20)  # let the native decode step finish building in the background before anything is timed
    ways = {
        "base only": [None] * len(PROMPTS),
        "half on the adapter": [name, None] * (len(PROMPTS) // 2),
        "all on the adapter": [name] * len(PROMPTS),
    }
    rates: dict[str, list[float]] = {way: [] for way in ways}
    same_text = []
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        texts = {}
        for way, adapters in ways.items():
            engine.clear_prefix_cache()
            start = time.perf_counter()
            requests = [
                engine.submit(p, max_new_tokens=args.tokens, temperature=0.0, stop_token_ids=(), adapter=a)
                for p, a in zip(PROMPTS, adapters)
            ]
            done = [r.result() for r in requests]
            rates[way].append(sum(c.generated_tokens for c in done) / (time.perf_counter() - start))
            texts[way] = [c.text for c in done]
        same_text += [
            texts["half on the adapter"][i] == texts["base only"][i]
            for i, a in enumerate(ways["half on the adapter"])
            if a is None
        ]
        loads.append(os.getloadavg()[0])
    native = engine.compiled.steps if engine.compiled is not None else 0
    engine.close()
    print(
        f"default model + per-request adapter {args.adapter}, batch {len(PROMPTS)}, {args.tokens} tokens each, "
        f"{args.threads} thread(s), {args.rounds} rounds; load average {min(loads):.1f}-{max(loads):.1f} (loaded "
        f"machine: compare the ratios); native decode steps taken: {native}\n"
    )
    print("| batch | generated tok/s (median) | vs base only (median of per-round ratios) |")
    print("|---|---:|---:|")
    for way in ways:
        ratios = [r / b for r, b in zip(rates[way], rates["base only"])]
        print(f"| {way} | {statistics.median(rates[way]):.1f} | {statistics.median(ratios):.2f}x |")
    print(
        f"\nbase requests of the mixed batch that wrote the base-only batch's text exactly: "
        f"{sum(same_text)}/{len(same_text)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
