"""A LoRA adapter on the default model: how it survives int4, what it costs, what it does to general text.

For each way of running the adapter it measures:
- dev NLL: mean negative log-likelihood per trained token (what the model writes: steps, not prompts or tool
  results) of GSM8K dev-split solutions distilled as `r1 train data gsm8k` distils them (never trained on);
  the adapter's gain is the drop from the base model's figure;
- sherlock ppl: perplexity over bench/data/sherlock_holmes.txt (general text, windows of 512 tokens);
- decode tok/s: greedy decode of 64 tokens at batch 1 on the eager model (the native step declines an
  unmerged adapter; the base model's native figure is given beside it).

Ways: "int4" (the default model as loaded, no adapter), "int4 + LoRA unmerged" (`model.load(adapter=...)`: low-rank
matmuls beside the int4 weights), "int4 merged + requantized" (the adapter merged into the float32 weights, then
every Linear quantized as the loader does: int4 groups of 32, the head int8; its control is the float32 base
requantized the same way, without the adapter), and float32 with and without the adapter merged (the reference:
what the adapter does before any rounding). "Keeps x%" is a way's dev-NLL drop below its own no-adapter control,
as a share of the float32 drop.

    python bench/train.py --adapter DIR                      # after `r1 train sft --out DIR`
    python bench/train.py --adapter DIR --dev-paths 32 --windows 4

The machine is shared: speed figures come with the load average.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXT = ROOT / "bench" / "data" / "sherlock_holmes.txt"
WINDOW = 512


def requantize(engine) -> None:
    """Quantize a float32 engine's Linears in place the way model/loading/repack.py does (int4, the LM head int8)."""
    from model.layers.linear import Linear

    for name, module in engine.model.named_modules():
        if isinstance(module, Linear):
            module.quantize_("int8" if name == "output" else "int4")


def nll_of(engine, examples) -> float:
    import torch

    total, count = 0.0, 0
    for example in examples:
        logits = engine.logits(example.ids)[:-1]
        targets = torch.tensor(example.labels[1:])
        total += float(torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
        count += int((targets != -100).sum())
    return total / count


def perplexity(engine, ids: list[int], windows: int) -> float:
    import torch

    nll = []
    for w in range(windows):
        window = ids[w * WINDOW : (w + 1) * WINDOW]
        logits = engine.logits(window)[:-1]
        nll.append(torch.nn.functional.cross_entropy(logits, torch.tensor(window[1:])))
    return math.exp(float(sum(nll) / len(nll)))


def decode_rate(engine, prompt_ids: list[int], tokens: int = 64) -> float:
    """Batch-1 decode tok/s: the tokens after the first over the time after the first (the prompt's prefill, which
    also yields the first token, apart), the prompt prefilled from scratch."""
    from model.serving.sampler import SamplingParams

    engine.generate_batch([prompt_ids], [SamplingParams(max_new_tokens=4)])  # warm-up
    engine.clear_prefix_cache()
    start = time.perf_counter()
    done = engine.generate_batch([prompt_ids], [SamplingParams(max_new_tokens=tokens, stop_token_ids=())])[0]
    return (done.generated_tokens - 1) / (time.perf_counter() - start - done.ttft_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="a LoRA directory (PEFT format), e.g. from `r1 train sft`")
    parser.add_argument("--dev-paths", type=int, default=64, help="distilled GSM8K dev solutions scored (default 64)")
    parser.add_argument("--windows", type=int, default=8, help=f"{WINDOW}-token windows of the text (default 8)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model
    from app.train.gsm8k import distill, find_gsm8k, read_gsm8k, split_dev
    from app.train.sft import encode_row

    load = lambda **kw: model.load("default", threads=args.threads, compiled_step=False, **kw)  # noqa: E731
    print(f"load average at start {os.getloadavg()[0]:.2f}", file=sys.stderr)
    base = load()
    _, dev = split_dev(read_gsm8k(find_gsm8k()))
    rows = distill(dev).kept[: args.dev_paths]
    examples = [encode_row(base.tokenizer, row) for row in rows]
    text_ids = base.tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_bos=False)
    prompt_ids = examples[0].ids
    base.close()

    ways = {
        "int4": lambda: load(),
        "int4 + LoRA unmerged": lambda: load(adapter=args.adapter),
        "int4 requantized (control)": lambda: load(quant=None),
        "int4 merged + requantized": lambda: load(quant=None, adapter=args.adapter),
        "fp32": lambda: load(quant=None),
        "fp32 + LoRA merged": lambda: load(quant=None, adapter=args.adapter),
    }
    results = {}
    for name, make in ways.items():
        engine = make()
        if "requantized" in name:
            requantize(engine)
        results[name] = (
            nll_of(engine, examples),
            perplexity(engine, text_ids, args.windows),
            decode_rate(engine, prompt_ids),
            os.getloadavg()[0],
        )
        engine.close()
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)

    print(
        f"\nadapter {args.adapter}; {len(examples)} GSM8K dev solutions "
        f"({sum(sum(label != -100 for label in e.labels) for e in examples)} trained tokens); "
        f"{args.windows} x {WINDOW} tokens of {TEXT.name}; {args.threads} thread(s); loaded machine\n"
    )
    print("| way | dev NLL / token | sherlock ppl | decode tok/s (eager, batch 1) | load avg |")
    print("|---|---:|---:|---:|---:|")
    for name, (nll, ppl, rate, load_average) in results.items():
        print(f"| {name} | {nll:.4f} | {ppl:.2f} | {rate:.1f} | {load_average:.1f} |")
    from model.serving.compiled_step import native_library

    native = model.load("default", threads=args.threads)  # the base model's decode with the native step, for scale
    if native_library().wait(timeout=300):
        print(
            f"| int4, native decode step (speed only) | | | {decode_rate(native, prompt_ids):.1f} | "
            f"{os.getloadavg()[0]:.1f} |"
        )
    native.close()
    gain = results["fp32"][0] - results["fp32 + LoRA merged"][0]
    for name, control in (
        ("int4 + LoRA unmerged", "int4"),
        ("int4 merged + requantized", "int4 requantized (control)"),
    ):
        kept = (results[control][0] - results[name][0]) / gain if gain else float("nan")
        print(
            f"\n{name}: keeps {kept:.0%} of the adapter's float32 dev-NLL gain ({gain:.4f} nats/token; "
            f"against {control})",
            end="",
        )
    print(f"\n\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
