"""The native decode step's int8-activation kernels against its ATen matmuls (the step before them), and llama.cpp.

    python bench/native_kernels.py [--threads 2] [--new-tokens 64] [--runs 5] [--skip-llamacpp]
    python bench/native_kernels.py --per-kernel [--baseline /path/to/other/checkout] [--runs 5] [--reps 20]

One loaded model (the default SmolLM2-135M Q4_1 GGUF, quant="auto" = int4 layers + int8 LM head), two engines on
it that differ only in the native step's matmuls: "kernels" (model/serving/native/int8_kernels.h, one OpenMP region
per step) and "aten" (`CompiledDecode(int8_kernels=False)`: ATen's int4/int8 kernels per matmul, the native step
as it was before the kernels). Each run decodes greedily through `Engine.submit(...).result()` (batch 1) and
`Engine.generate_batch` (batch 8, ragged prompts, aggregate tok/s), fixed lengths (no EOS stop); decode tok/s
counts the tokens after each sequence's first over the time after the last first token (prefill excluded).
llama.cpp (llama-cpp-python, if installed) runs its own generation loop (`Llama.generate`, which
`create_completion` drives; greedy, full length) at batch 1; its decode rate is timed from its first token.
Engines run interleaved, one at a time, for --runs rounds after a warm-up; medians; `uptime`'s load printed
with every round. Also prints greedy token agreement between the three over the batch-1 prompt.

--per-kernel times the kernels alone (`torch.ops.r1_native.linear_int8`, the parity tests' entry point: one
OpenMP region, the activations quantized, one matmul) on the loaded model's own weights: each int4 shape (qkv, wo,
w13, w2) over all its layers in turn, so a layer's weights have left the L2 cache by its next call, as in a step;
and the int8 LM head, M = 1 and 8 rows; then whole native steps at batch 1 and 8 (128-token contexts). Median
microseconds per call over --reps passes (steps: 5 x --reps calls). With --baseline, the
same timing runs in a subprocess on another checkout's code (its own library build), alternating with this one
round by round, so both see the same load: the A/B of a kernel change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per sequence (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="batch-1 prompt length (default 128)")
    p.add_argument("--runs", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not measure llama.cpp")
    p.add_argument("--per-kernel", action="store_true", help="time each kernel shape alone (see above)")
    p.add_argument("--baseline", type=Path, help="with --per-kernel: another checkout to time round by round")
    p.add_argument("--reps", type=int, default=20, help="with --per-kernel: passes per round (default 20)")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one round's medians (the subprocess)
    return p.parse_args(argv)


def load() -> str:
    return (
        subprocess.run(["uptime"], capture_output=True, text=True, check=False)
        .stdout.strip()
        .split("load average:")[-1]
        .strip()
    )


def kernel_times(threads: int, reps: int) -> dict[str, float]:
    """Median microseconds per kernel call, by "shape M" (one round; the code is whatever `model` imports)."""
    import torch
    from decode import default_gguf

    import model
    from model.serving.native_layout import tiled_int4

    eng = model.load(str(default_gguf()), quant="auto", threads=threads, compiled_step=True)
    if not eng.compiled.wait():
        raise SystemExit(f"native step unavailable: {eng.compiled.reason or eng.compiled.library.error}")
    op = torch.ops.r1_native.linear_int8
    m = eng.model

    def args_of(linear) -> tuple:
        packed = tiled_int4(linear.weight, linear.scales) if linear.weight.dtype == torch.uint8 else torch.empty(0)
        bias = torch.empty(0) if linear.bias is None else linear.bias.data
        return linear.weight, linear.scales, bias, packed

    shapes = {
        "qkv": [args_of(b.attention.wqkv) for b in m.layers],
        "wo": [args_of(b.attention.wo) for b in m.layers],
        "w13": [args_of(b.feed_forward.w13) for b in m.layers],
        "w2": [args_of(b.feed_forward.w2) for b in m.layers],
        "lm_head": [args_of(m.output)],
    }
    out: dict[str, float] = {}
    torch.manual_seed(0)
    for rows in (1, 8):
        for name, layers in shapes.items():
            k = layers[0][1].shape[0] * 32 if layers[0][0].dtype == torch.uint8 else layers[0][0].shape[1]
            x = torch.randn(rows, k)
            op(x, *layers[0])  # warm-up
            times = []
            for _ in range(reps):
                for weights in layers:
                    start = time.perf_counter_ns()
                    op(x, *weights)
                    times.append(time.perf_counter_ns() - start)
            out[f"{name} M={rows}"] = statistics.median(times) / 1e3
    # Whole native steps (the matmuls above plus norms, quantization, rope, attention, ...) at a 128-token context.
    from model.serving.scheduler import forward_step

    cache = m.new_cache(max_seq_len=256, capacity_bytes=1 << 27)
    for batch in (1, 8):
        seqs = [cache.new_sequence() for _ in range(batch)]
        forward_step(m, cache, seqs, [torch.randint(0, 1000, (128,)).tolist() for _ in seqs])
        layout = cache.append(seqs, [1] * batch)
        tokens = torch.randint(0, 1000, (batch,))
        eng.compiled(tokens, cache, layout)  # warm-up
        times = []
        for _ in range(reps * 5):
            start = time.perf_counter_ns()
            eng.compiled(tokens, cache, layout)
            times.append(time.perf_counter_ns() - start)
        cache.rollback(layout)
        out[f"step B={batch}"] = statistics.median(times) / 1e3
    out["layers"] = len(m.layers)
    eng.close()
    return out


def per_kernel(args: argparse.Namespace) -> int:
    """Rounds of kernel_times, alternating between this checkout and --baseline (each in its own subprocess)."""
    import json

    roots = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    script = Path(__file__).resolve()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    print(f"threads {args.threads}, {args.reps} passes a round; load {load()}", flush=True)
    for round_ in range(args.runs):
        for name, root in roots.items():
            env = os.environ | {"PYTHONPATH": str(root)}
            command = [sys.executable, str(script), "--per-kernel", "--json", "--threads", str(args.threads)]
            proc = subprocess.run(
                [*command, "--reps", str(args.reps)], env=env, cwd=root, capture_output=True, text=True, check=True
            )
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}/{args.runs} {name}: load {load()}", flush=True)
    print(f"\nmedian us per call over {args.runs} rounds (load at the end {load()}):")
    keys = [key for key in results["this"][0] if key != "layers"]
    header = "  ".join(f"{name:>10s}" for name in roots)
    print(f"  {'kernel':14s}{header}" + ("  this/baseline" if args.baseline else ""))
    for key in keys:
        med = {name: statistics.median(r[key] for r in rounds) for name, rounds in results.items()}
        line = f"  {key:14s}" + "  ".join(f"{v:10.1f}" for v in med.values())
        if args.baseline:
            line += f"  {med['this'] / med['baseline']:10.2f}x"
        print(line)
    for rows in (1, 8):  # a step's matmuls: every layer's four shapes and the LM head
        step = {
            name: sum(
                statistics.median(r[f"{s} M={rows}"] for r in rounds) * (1 if s == "lm_head" else rounds[0]["layers"])
                for s in ("qkv", "wo", "w13", "w2", "lm_head")
            )
            for name, rounds in results.items()
        }
        summary = ", ".join(f"{k} {v / 1e3:.2f} ms" for k, v in step.items())
        print(f"  the matmuls of one step, M={rows} (every layer's four + the LM head): {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    root = Path.cwd() if args.json else ROOT  # the subprocess of a --baseline round runs in that checkout
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "bench"))
    if args.per_kernel and args.json:
        import json

        print(json.dumps(kernel_times(args.threads, args.reps)))
        return 0
    if args.per_kernel:
        return per_kernel(args)
    from decode import _TEXT, default_gguf, make_prompts

    import model
    from model.engine import Engine
    from model.serving.sampler import SamplingParams

    gguf = default_gguf()
    eng = model.load(str(gguf), quant="auto", threads=args.threads, compiled_step=True)
    aten = Engine(eng.model, eng.tokenizer, threads=args.threads, native_dir=eng.compiled.build_dir)
    aten.compiled.int8_kernels = False  # read when its C++ model is made, below
    if not (eng.compiled.wait() and aten.compiled.wait()):
        raise SystemExit(f"native step unavailable: {eng.compiled.reason or eng.compiled.library.error}")
    print(f"int8 kernels in use: {eng.compiled.uses_int8_kernels}", flush=True)
    b1, b8 = make_prompts(eng.tokenizer.encode(_TEXT), args.prompt_tokens)
    n = args.new_tokens
    params = SamplingParams(max_new_tokens=n, stop_token_ids=())
    tokens: dict[str, list[int]] = {}

    def ours(engine, name: str):
        def b1_run() -> float:
            engine.clear_prefix_cache()
            start = time.perf_counter()
            done = engine.submit(b1, params).result()
            first = start + done.ttft_s
            tokens[name] = done.token_ids
            assert done.generated_tokens == n
            return (n - 1) / (time.perf_counter() - first)

        def b8_run() -> float:
            engine.clear_prefix_cache()
            start = time.perf_counter()
            done = engine.generate_batch(b8, params)
            first = start + max(c.ttft_s for c in done)
            assert all(c.generated_tokens == n for c in done)
            return (n - 1) * len(b8) / (time.perf_counter() - first)

        return {f"{name} b1": b1_run, f"{name} b8": b8_run}

    runners = {**ours(eng, "kernels"), **ours(aten, "aten")}
    if not args.skip_llamacpp:
        try:
            from llama_cpp import Llama

            from tests.servers import llama_cpp_ubatch
        except ImportError as e:
            print(f"llama.cpp not measured: {e}")
        else:
            llm = Llama(
                model_path=str(gguf),
                n_ctx=len(b1) + n + 16,
                n_batch=512,
                n_ubatch=llama_cpp_ubatch(),
                n_threads=args.threads,
                n_threads_batch=args.threads,
                verbose=False,
            )

            def llama_b1() -> float:
                stamps, ids = [], []
                for token in llm.generate(b1, top_k=1, temp=0.0, reset=True):  # its own sampling loop, greedy
                    stamps.append(time.perf_counter())
                    ids.append(token)
                    if len(ids) == n:  # fixed length: an EOS is one more token here, as with stop_token_ids=()
                        break
                tokens["llama.cpp"] = ids
                return (n - 1) / (stamps[-1] - stamps[0])

            runners["llama.cpp b1"] = llama_b1
    print(f"threads {args.threads}, {n} new tokens, batch-1 prompt {len(b1)} tokens; load {load()}", flush=True)
    for run in runners.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(args.runs):
        for name, run in runners.items():
            rates[name].append(run())
        print(
            f"round {round_ + 1}/{args.runs}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
            + f" tok/s; load {load()}",
            flush=True,
        )
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nmedians over {args.runs} interleaved rounds (decode tok/s; load at the end {load()}):")
    anchor = med.get("llama.cpp b1")
    for name, rate in med.items():
        extra = f"  {rate / anchor:.2f}x llama.cpp b1" if anchor else ""
        print(f"  {name:14s} {rate:7.1f}{extra}")
    print(
        f"  kernels / aten: b1 {med['kernels b1'] / med['aten b1']:.2f}x, b8 {med['kernels b8'] / med['aten b8']:.2f}x"
    )

    eager = Engine(eng.model, eng.tokenizer, threads=args.threads)  # no native step: bf16 activations throughout
    tokens["eager"] = eager.submit(b1, params).result().token_ids
    eager.close()

    def agree(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    names = list(tokens)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            first = agree(tokens[a], tokens[b])
            line = f"greedy agreement {a} / {b}: first {first} of {n} tokens"
            if first < n:  # how close a call the first difference was, in the fp32 logits of the eager model
                logits = eng.logits(b1 + tokens[a][:first])[-1]
                top2 = logits.topk(2).values
                line += (
                    f"; there the eager model's logits of the two picks differ by "
                    f"{abs(float(logits[tokens[a][first]] - logits[tokens[b][first]])):.3f} "
                    f"(its top-2 margin {float(top2[0] - top2[1]):.3f})"
                )
            print(line)
    eng.close()
    aten.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
