"""Long-context attention: dense against block-sparse (local, top-k, auto) on the default model, and llama.cpp.

    python bench/long_context.py                    # the default run: every part, short passkey grid
    python bench/long_context.py --depths 20 --passkey-modes dense,local,topk5,topk10,topk25,auto   # full grid
    python bench/long_context.py --only ppl,attention --lengths 2048,4096   # parts and lengths to run

Parts (--only):
- ppl: perplexity of bench/data/sherlock_holmes.txt (public domain, see bench/data/README.md) in windows of
  the longest length, scored in 512-token chunks as a prefill feeds them; the perplexity at L is over the
  window's first L tokens, "far" over its tokens at positions >= L/2 (where sparse attention differs most).
- passkey: the passkey test of Mohtashami & Jaggi (2023): a 5-digit key hidden at a depth of a filler text
  of L tokens; correct when the first number the model writes is the key. Depths are evenly spaced in
  [0, 1]; the keys are seeded. The same runs give time to first token (the prompt fed in the scheduler's
  512-token chunks, then the first token) and decode time per token (the 7 greedy steps after it).
- attention: attention alone (no projections) of one step at context L, decode (1 query) and a prefill chunk
  (512 queries at the end of the context), on random keys with the model's shapes: the per-step plan plus
  n_layers times the median per-layer time.
- llamacpp: llama.cpp (llama-cpp-python, the GGUF's own Q4_1 kernels, dense) on the same passkey prompts.
- profile (only with --profile): torch.profiler op table of one decode step and one prefill chunk at the
  longest length, dense against top-k.

Modes: dense; local (own 64-token block, the 2 before, and the first); topk5/topk10/topk25 (local + the top
5/10/25% blocks by the Quest bound); auto (dense up to 512 tokens of context, topk5 above).
The default model (SmolLM2-135M-Instruct) has a context of 8,192 tokens (rope theta 100,000 as configured,
no scaling): "8K" here is 8,176 tokens, so that the prompt and its 8 answer tokens fit.
Every ratio compares numbers of the same run; the machine is shared, so the report gives medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "bench" / "data" / "sherlock_holmes.txt"
CHUNK = 512  # the scheduler's prefill chunk
ANSWER_TOKENS = 8
PARTS = ("ppl", "passkey", "attention", "llamacpp")
MODES = ("dense", "local", "topk5", "topk10", "topk25", "auto")

PASSKEY_HEAD = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
PASSKEY_FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is"


def attention_modes() -> dict:
    """MODES -> AttentionConfig."""
    from model import AttentionConfig

    return {
        "dense": AttentionConfig(),
        "local": AttentionConfig(mode="local"),
        "topk5": AttentionConfig(mode="topk", topk=0.05),
        "topk10": AttentionConfig(mode="topk", topk=0.10),
        "topk25": AttentionConfig(mode="topk", topk=0.25),
        "auto": AttentionConfig(mode="auto"),
    }


@dataclass
class Results:
    machine: str = ""
    threads: int = 0
    clock: str = "wall"
    lengths: list[int] = field(default_factory=list)
    ppl: dict = field(default_factory=dict)  # mode -> length -> {"ppl", "far", "seconds"}
    passkey: dict = field(default_factory=dict)  # mode -> length -> {"correct", "total", "ttft", "decode"}
    attention: dict = field(default_factory=dict)  # mode -> length -> {"decode_ms", "prefill_ms"}
    llamacpp: dict = field(default_factory=dict)  # length -> {"ttft", "decode"} or {"skipped": why}
    profile: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load averages: start, end


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", file=sys.stderr, flush=True)


def grown_cache(model, max_tokens: int, key_summaries: bool):
    """A KV cache for one sequence of up to `max_tokens`, its pool grown in advance (growing is not timed)."""
    cache = model.new_cache(max_seq_len=max_tokens, capacity_bytes=1 << 30, key_summaries=key_summaries)
    seq = cache.new_sequence()
    cache.rollback(cache.append([seq], [max_tokens]))
    cache.free(seq)
    return cache


# ----- perplexity ---------------------------------------------------------------------------------


def perplexity(
    engine, modes: dict, names: list[str], lengths: list[int], windows: int, clock, results: Results
) -> None:
    import torch

    from model.serving.scheduler import forward_step

    ids = engine.tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_bos=False)
    longest = max(lengths)
    if len(ids) < windows * longest:
        raise SystemExit(f"{TEXT.name} has {len(ids)} tokens: not enough for {windows} windows of {longest}")
    for name in names:
        nll = torch.zeros(windows, longest - 1)
        start = clock()
        for w in range(windows):
            window = ids[w * longest : (w + 1) * longest]
            cache = grown_cache(engine.model, longest, modes[name].uses_key_summaries)
            seq = cache.new_sequence()
            for i in range(0, longest, CHUNK):
                logits = forward_step(
                    engine.model, cache, [seq], [window[i : i + CHUNK]], all_logits=True, attention=modes[name]
                )
                targets = torch.tensor(window[i + 1 : i + CHUNK + 1])
                logprobs = logits[: len(targets)].log_softmax(-1)
                nll[w, i : i + len(targets)] = -logprobs.gather(1, targets[:, None])[:, 0]
            del cache
        seconds = (clock() - start) / windows
        results.ppl[name] = {
            L: {
                "ppl": math.exp(nll[:, : L - 1].mean()),
                "far": math.exp(nll[:, L // 2 : L - 1].mean()),
                "seconds": seconds,
            }
            for L in lengths
        }
        log(
            f"ppl {name}: "
            + ", ".join(f"{L}: {v['ppl']:.3f}" for L, v in results.ppl[name].items())
            + f" ({seconds:.0f} s per window)"
        )


# ----- passkey ------------------------------------------------------------------------------------


def passkey_prompt(tokenizer, length: int, depth: float, key: int) -> list[int]:
    """About `length` token ids: the head, filler with the needle at `depth` (0 = start, 1 = end), the question."""
    head = tokenizer.encode(PASSKEY_HEAD)
    filler = tokenizer.encode(PASSKEY_FILLER, add_bos=False)
    needle = tokenizer.encode(PASSKEY_NEEDLE.format(key=key), add_bos=False)
    question = tokenizer.encode(PASSKEY_QUESTION, add_bos=False)
    room = length - len(head) - len(needle) - len(question)
    n_filler = room // len(filler)
    before = round(depth * n_filler)
    pad = room - n_filler * len(filler)  # part of one more filler sentence keeps the length exact
    return head + filler * before + needle + filler * (n_filler - before) + filler[:pad] + question


def passkey_cases(
    tokenizer, lengths: list[int], depths: int, seed: int
) -> dict[int, list[tuple[float, int, list[int]]]]:
    rng = random.Random(seed)
    cases = {}
    for L in lengths:
        cases[L] = []
        for i in range(depths):
            depth = i / (depths - 1) if depths > 1 else 0.5
            key = rng.randrange(10000, 100000)
            cases[L].append((depth, key, passkey_prompt(tokenizer, L, depth, key)))
    return cases


def first_number(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


def answer(model, cache, attention, ids: list[int], clock) -> tuple[list[int], float, float]:
    """Greedy answer to `ids` -> (ANSWER_TOKENS token ids, time to first token, time per later token).

    The prompt is fed in the scheduler's 512-token chunks, one request alone, as `Engine` does, minus its loop.
    """
    import torch

    from model.serving.scheduler import forward_step

    seq = cache.new_sequence()
    try:
        start = clock()
        for i in range(0, len(ids), CHUNK):
            logits = forward_step(model, cache, [seq], [ids[i : i + CHUNK]], attention=attention)
        tokens = [int(torch.argmax(logits[0]))]
        first = clock()
        for _ in range(ANSWER_TOKENS - 1):
            tokens.append(int(torch.argmax(forward_step(model, cache, [seq], [tokens[-1:]], attention=attention)[0])))
        end = clock()
    finally:
        cache.free(seq)
    return tokens, first - start, (end - first) / (ANSWER_TOKENS - 1)


def passkey(engine, modes: dict, names: list[str], cases: dict, clock, results: Results) -> None:
    longest = max(len(ids) for trials in cases.values() for _, _, ids in trials) + ANSWER_TOKENS
    for name in names:
        results.passkey[name] = {}
        cache = grown_cache(engine.model, longest, modes[name].uses_key_summaries)
        answer(engine.model, cache, modes[name], cases[min(cases)][0][2][:CHUNK], clock)  # warm-up
        for L, trials in cases.items():
            correct, ttft, decode, misses = 0, [], [], []
            for depth, key, ids in trials:
                tokens, first, per_token = answer(engine.model, cache, modes[name], ids, clock)
                text = engine.tokenizer.decode(tokens)
                ok = first_number(text) == key
                correct += ok
                if not ok:
                    misses.append(f"depth {depth:.2f}: {text.strip()[:20]!r}")
                ttft.append(first)
                decode.append(per_token)
            results.passkey[name][L] = {
                "correct": correct,
                "total": len(trials),
                "ttft": statistics.median(ttft),
                "decode": statistics.median(decode),
                "prompt_tokens": len(trials[0][2]),
            }
            log(
                f"passkey {name} {L}: {correct}/{len(trials)}, TTFT {statistics.median(ttft):.2f} s, "
                f"decode {1000 * statistics.median(decode):.1f} ms/token" + (f"; missed {misses}" if misses else "")
            )
        del cache


# ----- attention alone ----------------------------------------------------------------------------


def attention_alone(
    engine, modes: dict, names: list[str], lengths: list[int], reps: int, clock, results: Results
) -> None:
    import torch

    from model.layers.attention import attend_dense
    from model.layers.kv_cache import KVCache
    from model.layers.sparse_attention import attend_gqa, plan_step

    config = engine.model.config
    attention_class = type(engine.model.layers[0].attention)
    KV, H, hd, n_layers = config.n_kv_heads, config.n_heads, config.head_dim, config.n_layers
    g = torch.Generator().manual_seed(0)

    def median_ms(fn, n: int) -> float:
        times = []
        for _ in range(n):
            start = clock()
            fn()
            times.append(clock() - start)
        return 1000 * statistics.median(times)

    for L in lengths:
        # One layer's cache (with summaries) holding L - 512 random keys; the step adds the last 512 or 1.
        for name in names:
            results.attention.setdefault(name, {})[L] = {}
        for label, n_new in (("decode_ms", 1), ("prefill_ms", CHUNK)):
            cache = KVCache(
                1,
                attention_class.cache_row_shape(config),
                max_seq_len=L + CHUNK,
                initial_blocks=L // 16 + 1,
                key_summaries=attention_class.key_summaries(config, 1, 16),
            )
            seq = cache.new_sequence()
            layout = cache.append([seq], [L - n_new])
            cache.write(0, layout.write_slots, torch.randn(L - n_new, 2 * KV, hd, generator=g))
            cache.commit(layout)
            layout = cache.append([seq], [n_new])
            cache.write(0, layout.write_slots, torch.randn(n_new, 2 * KV, hd, generator=g))
            q = torch.randn(n_new, H, hd, generator=g)
            n = reps * (4 if n_new == 1 else 1)
            with torch.inference_mode():
                for name in names:
                    plan = plan_step(modes[name], layout, cache.block_size, True)
                    if plan is None:
                        per_layer = median_ms(
                            lambda q=q, cache=cache, layout=layout: attend_dense(q, cache, 0, layout), n
                        )
                        step = n_layers * per_layer
                    else:
                        plan_ms = median_ms(
                            lambda name=name, layout=layout, cache=cache: plan_step(
                                modes[name], layout, cache.block_size, True
                            ),
                            n,
                        )
                        per_layer = median_ms(
                            lambda plan=plan, cache=cache, q=q: attend_gqa(
                                plan, cache.kv[0], cache.key_summaries, 0, q
                            ),
                            n,
                        )
                        step = plan_ms + n_layers * per_layer
                    results.attention[name][L][label] = step
            log(
                f"attention {label} at {L}: " + ", ".join(f"{m} {results.attention[m][L][label]:.1f} ms" for m in names)
            )


def profile_steps(engine, modes: dict, names: list[str], length: int) -> str:
    """torch.profiler over one decode step and one prefill chunk at `length`, per mode: the top ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from model.serving.scheduler import forward_step

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(100, engine.config.vocab_size, (length,), generator=g).tolist()
    out = []
    for name in names:
        cache = grown_cache(engine.model, length + 2, modes[name].uses_key_summaries)
        seq = cache.new_sequence()
        start = length - CHUNK
        for i in range(0, start, CHUNK):
            forward_step(engine.model, cache, [seq], [ids[i : min(i + CHUNK, start)]], attention=modes[name])
        for label, chunk in (("prefill chunk", ids[start:]), ("decode step", ids[:1])):
            if label == "decode step":
                forward_step(engine.model, cache, [seq], [chunk], attention=modes[name])  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                forward_step(engine.model, cache, [seq], [chunk], attention=modes[name])
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=48)
            out.append(f"### {name}, {label} of {len(chunk)} token(s) at {cache.length(seq)} cached\n\n```\n{table}```")
        del cache
    return "\n\n".join(out)


# ----- llama.cpp ----------------------------------------------------------------------------------


def llamacpp(gguf: Path, cases: dict, threads: int, clock, results: Results) -> None:
    try:
        import numpy as np
        from llama_cpp import Llama
    except Exception as err:  # not installed or a broken build: the rest of the report still stands
        results.llamacpp = {"skipped": f"cannot import llama_cpp: {type(err).__name__}: {err}"}
        log(results.llamacpp["skipped"])
        return
    for L, trials in cases.items():
        ids = trials[0][2]
        llm = Llama(
            model_path=str(gguf),
            n_ctx=len(ids) + ANSWER_TOKENS + 8,
            n_batch=CHUNK,
            n_ubatch=CHUNK,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        n_vocab = llm.n_vocab()

        def next_token(llm=llm, n_vocab: int = n_vocab) -> int:
            return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

        start = clock()
        llm.eval(ids)
        tokens = [next_token()]
        first = clock()
        for _ in range(ANSWER_TOKENS - 1):
            llm.eval(tokens[-1:])
            tokens.append(next_token())
        end = clock()
        results.llamacpp[L] = {
            "ttft": first - start,
            "decode": (end - first) / (ANSWER_TOKENS - 1),
            "answer": llm.detokenize(tokens).decode(errors="replace"),
        }
        llm.close()
        log(f"llama.cpp {L}: TTFT {first - start:.2f} s, decode {1000 * results.llamacpp[L]['decode']:.1f} ms/token")


# ----- report -------------------------------------------------------------------------------------


def report(results: Results) -> str:
    lines = [
        f"machine: {results.machine}; threads {results.threads}; {results.clock} clock; "
        f"load average {results.load[0]:.1f} at start, {results.load[-1]:.1f} at end",
        "",
    ]

    def ratio(x: float, base: float) -> str:
        return f"{base / x:.2f}x" if x else "-"

    if results.ppl:
        lines += [
            "Perplexity (sherlock_holmes.txt, 512-token chunks; ratio = mode / dense; far = tokens at >= L/2)",
            "",
        ]
        lines += [
            "| mode | " + " | ".join(f"{L} ppl | far | vs dense" for L in results.lengths) + " |",
            "|---|" + "---:|---:|---:|" * len(results.lengths),
        ]
        dense = results.ppl.get("dense")
        for name, by_length in results.ppl.items():
            cells = []
            for L in results.lengths:
                v = by_length[L]
                rel = f"{v['ppl'] / dense[L]['ppl']:.3f}" if dense else "-"
                cells += [f"{v['ppl']:.3f}", f"{v['far']:.3f}", rel]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.passkey:
        lines += [
            "Passkey accuracy, time to first token, decode time per token (medians over the depths; "
            "speed-up = dense time / mode time)",
            "",
        ]
        lines += [
            "| mode | length | prompt tokens | passkey | TTFT s | TTFT speed-up | decode ms/token | decode speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        dense = results.passkey.get("dense", {})
        for name, by_length in results.passkey.items():
            for L, v in by_length.items():
                d = dense.get(L)
                lines.append(
                    f"| {name} | {L} | {v['prompt_tokens']} | {v['correct']}/{v['total']} | {v['ttft']:.2f} | "
                    f"{ratio(v['ttft'], d['ttft']) if d else '-'} | {1000 * v['decode']:.1f} | "
                    f"{ratio(v['decode'], d['decode']) if d else '-'} |"
                )
        if results.llamacpp and "skipped" not in results.llamacpp:
            for L, v in results.llamacpp.items():
                d = dense.get(L)
                lines.append(
                    f"| llama.cpp (dense) | {L} | {d['prompt_tokens'] if d else '-'} | 1 prompt: "
                    f"{v['answer'].strip()[:12]!r} | {v['ttft']:.2f} | {ratio(v['ttft'], d['ttft']) if d else '-'} | "
                    f"{1000 * v['decode']:.1f} | {ratio(v['decode'], d['decode']) if d else '-'} |"
                )
        lines.append("")
    if results.llamacpp.get("skipped"):
        lines += [f"llama.cpp skipped: {results.llamacpp['skipped']}", ""]
    if results.attention:
        lines += ["Attention alone, one step of every layer (ms; speed-up = dense / mode)", ""]
        lines += [
            "| mode | " + " | ".join(f"{L} decode | x | {L} prefill chunk | x" for L in results.lengths) + " |",
            "|---|" + "---:|---:|---:|---:|" * len(results.lengths),
        ]
        dense = results.attention.get("dense")
        for name, by_length in results.attention.items():
            cells = []
            for L in results.lengths:
                v = by_length[L]
                cells += [
                    f"{v['decode_ms']:.1f}",
                    ratio(v["decode_ms"], dense[L]["decode_ms"]) if dense else "-",
                    f"{v['prefill_ms']:.0f}",
                    ratio(v["prefill_ms"], dense[L]["prefill_ms"]) if dense else "-",
                ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.profile:
        lines += ["Profiles", "", results.profile]
    return "\n".join(lines)


def machine() -> str:
    try:
        model_name = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model_name = "unknown CPU"
    return f"{model_name}, {os.cpu_count()} CPUs"


# ----- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads (default 2)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or this process's CPU time: steadier on a loaded machine, "
        "meaningful with --threads 1 only (idle OpenMP threads spin)",
    )
    p.add_argument("--lengths", default="2048,4096,8176", help="context lengths in tokens (default 2048,4096,8176)")
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)} (default all)")
    p.add_argument("--ppl-modes", default="dense,local,topk5,topk10,topk25,auto", help="modes scored for perplexity")
    p.add_argument(
        "--windows",
        type=int,
        default=1,
        help="perplexity windows of the longest length (default 1; the text holds 2 of 8K)",
    )
    p.add_argument(
        "--passkey-modes",
        default="dense,topk25,auto",
        help="modes run on the passkey prompts (default dense,topk25,auto)",
    )
    p.add_argument("--depths", type=int, default=4, help="passkey depths per length (default 4; the full grid is 20)")
    p.add_argument(
        "--attention-modes", default="dense,local,topk5,topk10,topk25", help="modes timed for attention alone"
    )
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of attention alone (default 5)")
    p.add_argument(
        "--profile", action="store_true", help="add torch.profiler tables at the longest length (dense vs topk5)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the passkeys")
    p.add_argument("--quant", default="auto", help="weights (default auto = int4 for the default model)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args(argv)
    args.lengths = sorted(int(x) for x in args.lengths.split(","))
    args.only = [x for x in args.only.split(",") if x]
    modes = set(MODES)
    for flag in ("ppl_modes", "passkey_modes", "attention_modes"):
        names = [x for x in getattr(args, flag).split(",") if x]
        if unknown := [x for x in names if x not in modes]:
            p.error(f"--{flag.replace('_', '-')}: unknown mode(s) {unknown}; choose from {sorted(modes)}")
        setattr(args, flag, names)
    if unknown := [x for x in args.only if x not in PARTS]:
        p.error(f"--only: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.depths < 1 or args.windows < 1 or args.threads < 1 or min(args.lengths) <= CHUNK:
        p.error(f"--depths, --windows and --threads must be >= 1 and every length > {CHUNK}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before torch is imported, or OpenMP sizes its pool from the cores
    import torch

    import model
    from model.loading.checkpoint import resolve_source

    torch.set_num_interop_threads(1)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    results = Results(
        machine=machine(), threads=args.threads, clock=args.clock, lengths=args.lengths, load=[os.getloadavg()[0]]
    )
    modes = attention_modes()
    engine = model.load("default", quant=args.quant, threads=args.threads)
    if max(args.lengths) + ANSWER_TOKENS > engine.context_length:
        raise SystemExit(
            f"the longest length plus {ANSWER_TOKENS} answer tokens must fit the context of {engine.context_length}"
        )
    log(
        f"model: {engine.config.n_layers} layers, {engine.config.n_heads} heads / {engine.config.n_kv_heads} KV heads, "
        f"context {engine.context_length}, threads {args.threads}"
    )
    cases = passkey_cases(engine.tokenizer, args.lengths, args.depths, args.seed)
    if "ppl" in args.only:
        perplexity(engine, modes, args.ppl_modes, args.lengths, args.windows, clock, results)
    if "attention" in args.only:
        attention_alone(engine, modes, args.attention_modes, args.lengths, args.reps, clock, results)
    if "passkey" in args.only:
        passkey(engine, modes, args.passkey_modes, cases, clock, results)
    if "llamacpp" in args.only:
        llamacpp(resolve_source("default"), cases, args.threads, clock, results)
    if args.profile:
        results.profile = profile_steps(engine, modes, ["dense", "topk5"], max(args.lengths))
    engine.close()
    results.load.append(os.getloadavg()[0])
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
