"""GPTQ against round-to-nearest on the default model: perplexity, quantization time, and decode speed.

    python bench/quantize.py --threads 1 [--work DIR] [--samples 128] [--windows 8] [--decode-runs 5]

1. `r1 export --format safetensors`: the default model (SmolLM2-135M-Instruct Q4_1 GGUF) as a float32 HF directory
   (its dequantized weights: the "fp32" model).
2. `r1 quantize` of that directory: RTN and GPTQ at 4-bit g128 and 3-bit g128, symmetric and asymmetric (`--asym`),
   plus GPTQ 4-bit g128 with act-order (both grids), each timed. GPTQ calibrates on the shipped text (model/quantize/data/calibration.txt:
   "A Scandal in Bohemia", up to --samples windows of 512 tokens).
3. Perplexity (bench/train.py's: mean NLL over 512-token windows, the first --windows of each story, the same
   tokens for every model) over bench/data/sherlock_holmes.txt, split in its two stories: "A Scandal in Bohemia" is the calibration text (tuned on: GPTQ saw it), "The
   Red-Headed League" is held out. 4-bit checkpoints are scored as they run (`model.load(dir)`: the int4 kernel,
   bf16 activations, the LM head int8, as every quantized model we run) and dequantized to fp32 (`quant="fp32"`: the
   weights' own error alone); 3-bit ones only dequantized (our kernels run 4-bit). Beside them: our int4 path on the
   same float export (`quant="int4"`: RTN in groups of 32, what `model.load` does to a float checkpoint) and the
   default GGUF as shipped (Q4_1 g32 on the int4 kernel).
4. Decode tok/s at batch 1 (64 greedy tokens after a 128-token prompt, native decode step built and loaded):
   the GPTQ 4-bit g128 directory, the default GGUF (our int4 path) and the float export's int4, loaded side by side,
   interleaved round by round, medians. The machine is shared: every figure comes with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXT = ROOT / "bench" / "data" / "sherlock_holmes.txt"
HELD_OUT_FROM = "II. THE RED-HEADED LEAGUE"  # the second story starts here; the first is the calibration text

# (label, method, bits, group size, act-order, symmetric)
RUNS = [
    ("RTN 4-bit g128", "rtn", 4, 128, False, True),
    ("GPTQ 4-bit g128", "gptq", 4, 128, False, True),
    ("GPTQ 4-bit g128 act-order", "gptq", 4, 128, True, True),
    ("RTN 3-bit g128", "rtn", 3, 128, False, True),
    ("GPTQ 3-bit g128", "gptq", 3, 128, False, True),
    ("RTN 4-bit g128 asym", "rtn", 4, 128, False, False),
    ("GPTQ 4-bit g128 asym", "gptq", 4, 128, False, False),
    ("GPTQ 4-bit g128 asym act-order", "gptq", 4, 128, True, False),
    ("RTN 3-bit g128 asym", "rtn", 3, 128, False, False),
    ("GPTQ 3-bit g128 asym", "gptq", 3, 128, False, False),
]


def load_text() -> str:
    return f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} ({load_text()})", file=sys.stderr, flush=True)


def stories(tokenizer) -> dict[str, list[int]]:
    text = TEXT.read_text(encoding="utf-8")
    cut = text.index(HELD_OUT_FROM)
    return {
        "calibration story (tuned on)": tokenizer.encode(text[:cut], add_bos=False),
        "held-out story": tokenizer.encode(text[cut:], add_bos=False),
    }


def score(engine, texts: dict[str, list[int]], windows: int) -> dict[str, float]:
    """Perplexity per text; closes the engine (one model in memory at a time)."""
    from bench.train import WINDOW, perplexity

    try:
        return {name: perplexity(engine, ids, min(windows, len(ids) // WINDOW)) for name, ids in texts.items()}
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", help="keep the exported and quantized directories here (default: a temporary directory)")
    p.add_argument("--samples", type=int, default=128, help="GPTQ calibration windows at most (default 128)")
    p.add_argument(
        "--windows",
        type=int,
        default=8,
        help="512-token windows scored per story, from its start (default 8; each story holds about 23)",
    )
    p.add_argument("--decode-runs", type=int, default=5)
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--runs", help="comma-separated labels of RUNS to quantize and score (default: all)")
    args = p.parse_args(argv)
    os.environ["R1_THREADS"] = str(args.threads)
    import torch

    import model
    from app.export import export_checkpoint
    from app.quantize import quantize
    from bench.train import decode_rate

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="r1-quantize-bench-"))
    cache = work / "cache"
    float_dir = work / "float"
    if not (float_dir / "config.json").is_file():
        start = time.perf_counter()
        export_checkpoint("default", float_dir, cache_dir=cache)
        log(f"exported the default model to {float_dir} in {time.perf_counter() - start:.1f} s")

    def load(source, quant="auto", compiled=False):
        # No drafts: with prompt lookup on, decode speed would follow how often each model's own text repeats itself.
        return model.load(
            source,
            quant=quant,
            threads=args.threads,
            cache_dir=cache,
            compiled_step=compiled,
            prompt_lookup=False,
            jump_forward=False,
        )

    # Every figure is kept in <work>/results.json as it is measured, so a later run (more --runs) adds to it.
    memo_path = work / "results.json"
    memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {"ppl": {}, "seconds": {}}

    def record(key: str, make) -> None:
        if key not in memo["ppl"]:
            memo["ppl"][key] = {"ppl": make(), "load": load_text()}
            memo_path.write_text(json.dumps(memo, indent=1))
            log(f"{key}: {memo['ppl'][key]['ppl']}")

    probe = load(float_dir, "fp32")
    texts = stories(probe.tokenizer)
    probe.close()
    for label, source, quant, how in [
        ("fp32 (the float export)", float_dir, "fp32", "fp32"),
        ("our int4 path on the float export (RTN g32)", float_dir, "int4", "int4 kernel"),
        ("default GGUF as shipped (Q4_1 g32)", "default", "auto", "int4 kernel"),
    ]:
        record(f"{label}|{how}", lambda source=source, quant=quant: score(load(source, quant), texts, args.windows))

    selected = set(args.runs.split(",")) if args.runs else None
    for label, method, bits, group, act_order, sym in RUNS:
        if selected is not None and label not in selected:
            continue
        out = work / f"{method}-{bits}b-g{group}{'-act' if act_order else ''}{'' if sym else '-asym'}"
        if not (out / "config.json").is_file():
            result = quantize(
                float_dir,
                out,
                method=method,
                bits=bits,
                group_size=group,
                act_order=act_order,
                sym=sym,
                samples=args.samples,
                cache_dir=cache,
                progress=False,
            )
            memo["seconds"][label] = {
                "seconds": result.seconds,
                "tokens": result.calibration_tokens,
                "load": load_text(),
            }
            memo_path.write_text(json.dumps(memo, indent=1))
            log(f"{label}: quantized in {result.seconds:.1f} s ({result.calibration_tokens} calibration tokens)")
        ways = [("int4 kernel", "auto"), ("dequantized fp32", "fp32")] if bits == 4 else [("dequantized fp32", "fp32")]
        for how, quant in ways:
            record(f"{label}|{how}", lambda out=out, quant=quant: score(load(out, quant), texts, args.windows))
    rows = [(*key.split("|"), entry["ppl"], entry["load"]) for key, entry in memo["ppl"].items()]
    times = {label: entry["seconds"] for label, entry in memo["seconds"].items()}

    print(
        f"\n## Perplexity over bench/data/sherlock_holmes.txt, the first {args.windows} 512-token windows of each story\n"
    )
    names = list(texts)
    fp32 = memo["ppl"]["fp32 (the float export)|fp32"]["ppl"]
    print(f"| model | runs as | {' | '.join(names)} | vs fp32 (held out) | load |")
    print(f"| --- | --- | {' | '.join('---:' for _ in names)} | ---: | --- |")
    for label, how, ppl, load_avg in rows:
        change = 100 * (ppl[names[1]] / fp32[names[1]] - 1)
        print(f"| {label} | {how} | {' | '.join(f'{ppl[n]:.3f}' for n in names)} | {change:+.2f}% | {load_avg} |")
    print("\n| quantization | seconds |\n| --- | ---: |")
    for label, seconds in times.items():
        print(f"| {label} | {seconds:.1f} |")

    if not args.skip_decode:
        engines = {
            "GPTQ 4-bit g128 directory": load(work / "gptq-4b-g128", "auto", compiled=True),
            "GPTQ 4-bit g128 act-order directory": load(work / "gptq-4b-g128-act", "auto", compiled=True),
            "default GGUF (our int4 path, Q4_1 g32)": load("default", "auto", compiled=True),
            "float export, quant=int4 (RTN g32)": load(float_dir, "int4", compiled=True),
        }
        for name, engine in engines.items():
            ready = engine.compiled is not None and engine.compiled.reason is None and engine.compiled.library.wait()
            log(f"{name}: native decode step {'ready' if ready else 'NOT ready'}")
        prompt = texts[names[1]][:128]
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.decode_runs):
            for name, engine in engines.items():
                rates[name].append(decode_rate(engine, prompt))
        base = statistics.median(rates["default GGUF (our int4 path, Q4_1 g32)"])
        # how each model's native step ran its matmuls (known once it has made its native model, at the first step)
        paths = {
            name: "eager" if e.compiled.steps == 0 else "int8 kernels" if e.compiled.uses_int8_kernels else "ATen"
            for name, e in engines.items()
        }
        print(
            f"\n## Decode, batch 1, 64 tokens (tok/s after the first; prefill apart), {args.threads} thread(s), medians of {args.decode_runs} interleaved rounds "
            f"({load_text()})\n"
        )
        print("| model | native step | tok/s | vs default GGUF |\n| --- | --- | ---: | ---: |")
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"| {name} | {paths[name]} | {median:.1f} | {median / base:.2f}x |")
        for engine in engines.values():
            engine.close()
    print(f"\nwork directory: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
