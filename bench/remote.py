"""Remote-backend overhead: the same requests through the local engine and through `r1 serve` on loopback.

The app's features call one interface (model/backends/backend.py); with `backend="openai"` every call becomes an
HTTP request to an OpenAI-compatible server. This measures what that costs, against the engine called in
process, for the request shapes the app sends:

1. one token: a 1-token completion of a ~40-token prompt (nearly all of it is overhead);
2. chat reply: a streamed 32-token chat reply (time to first token, and total);
3. MCTS expansion: one greedy + 3 sampled 16-token siblings of one prompt (`generate_batch`; over HTTP the
   three samples go as one request with n=3).

The server is `r1 serve` in its own process with the same model, quantization and threads; the local engine
lives in this process. Local and remote runs alternate (never overlapping), the prefix cache is warm on
both sides, and each figure is a median over --runs; the ratios compare numbers of this same run.

    python bench/remote.py             # or: r1 bench remote --runs 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = (
    "Problem: A farmer has 12 sheep and buys 7 more. Each sheep eats 3 kg of hay a day. "
    "How much hay do the sheep eat in a week?\nStep 1:"
)
QUESTION = [{"role": "user", "content": "Name three rivers of Europe and say one thing about each."}]


def one_token(backend) -> dict[str, float]:
    start = time.perf_counter()
    backend.generate(PROMPT, max_new_tokens=1)
    return {"total": time.perf_counter() - start}


def chat_reply(backend) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    for _ in backend.chat(QUESTION, stream=True, max_new_tokens=32):
        first = first or time.perf_counter()
    return {"ttft": (first or time.perf_counter()) - start, "total": time.perf_counter() - start}


def expansion(backend) -> dict[str, float]:
    from model import SamplingParams

    prompt = backend.text_prompt(PROMPT)
    params = [SamplingParams(max_new_tokens=16, temperature=0.0, stop=("\n",))] + [
        SamplingParams(max_new_tokens=16, temperature=0.8, seed=seed, stop=("\n",)) for seed in (1, 2, 3)
    ]
    start = time.perf_counter()
    backend.generate_batch([prompt] * 4, params)
    return {"total": time.perf_counter() - start}


def measure(local, remote, shape: Callable, runs: int) -> dict[str, dict[str, float]]:
    """Medians (seconds) of each timing of `shape`, alternating local and remote runs after one warm-up each."""
    shape(local), shape(remote)
    timings: dict[str, dict[str, list[float]]] = {"local": {}, "remote": {}}
    for _ in range(runs):
        for name, backend in (("local", local), ("remote", remote)):
            for key, value in shape(backend).items():
                timings[name].setdefault(key, []).append(value)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per shape and side (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quant", default="int4")
    args = parser.parse_args()

    import model
    from model.backends.remote import OpenAIBackend, RemoteConfig
    from tests.servers import r1_serve

    scratch = Path(tempfile.mkdtemp(prefix="r1-bench-remote-"))
    with r1_serve(scratch, data_dir=scratch / "data", quant=args.quant, threads=args.threads) as server:
        local = model.load("default", quant=args.quant, threads=args.threads)
        remote = OpenAIBackend(RemoteConfig(f"{server.url}/v1"))
        rows = []
        shapes = (
            (one_token, {"total": "one token (1-token completion)"}),
            (chat_reply, {"ttft": "chat reply, time to first token", "total": "chat reply, 32 tokens streamed"}),
            (expansion, {"total": "MCTS expansion (greedy + n=3 siblings, 16 tokens)"}),
        )
        for shape, labels in shapes:
            result = measure(local, remote, shape, args.runs)
            for key, label in labels.items():
                lo, re_ = result["local"][key], result["remote"][key]
                rows.append(
                    f"| {label} | {1e3 * lo:.1f} | {1e3 * re_:.1f} | {1e3 * (re_ - lo):+.1f} | {re_ / lo:.2f}x |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
        remote.close()
        local.close()
    print(
        f"\nquant={args.quant}, threads={args.threads}, medians of {args.runs} runs, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| request | local ms | remote (r1 serve, loopback) ms | overhead ms | remote / local |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
