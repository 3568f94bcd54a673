"""The R1 architecture at a realistic shape scaled down to this machine: a random DeepseekV3 checkpoint
(default 8 layers, hidden 1024, 64 routed experts in 8 groups, 6 per token, 1 shared, MLA with a 128-rank
kv latent) written to disk, then loaded and run by our engine.

    python bench/r1_arch.py [--layers 8] [--hidden 1024] [--experts 64] [--top-k 6] [--runs 3] [--fp8]
    r1 bench r1_arch [same flags]

Reports, each against a baseline measured in the same run:
- KV-cache bytes per token: MLA's latent + rope key against an ordinary multi-head cache of the same heads
  (and both at DeepSeek-R1's full shape, computed);
- first load in a fresh process: peak RSS of the streaming load (reader -> repack -> cache writer) against
  the checkpoint's size on disk and against loading the same checkpoint into memory whole;
- prefill and decode tok/s at batch 1 and 8, MLA absorbed against expanded ("naive"), and what "auto" picks;
- decode tok/s after a long prompt (--long-context), where expanding every cached latent costs the most.

Protocol: fp32 weights (the MLA paths differ only in attention, whatever the format of the Linears), prompts of
--prompt-tokens random ids, prefilled as one ragged step; then --decode-tokens single-token steps. Every timing is
one `forward_step` (the scheduler's own step, without sampling); medians of --runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SHARD_BYTES = 256 << 20

# DeepSeek-R1's attention, for the full-shape KV comparison (its config.json).
R1_LAYERS, R1_HEADS, R1_KV_RANK, R1_ROPE, R1_NOPE, R1_V = 61, 128, 512, 64, 128, 128


def bench_config(args: argparse.Namespace) -> dict:
    """DeepseekV3's proportions at args' size: expert FFN ~hidden/4, dense FFN ~2.75 hidden, V3's MLA head split halved."""
    h = args.hidden
    return dict(
        architectures=["DeepseekV3ForCausalLM"],
        model_type="deepseek_v3",
        vocab_size=args.vocab,
        hidden_size=h,
        intermediate_size=h * 11 // 4,
        moe_intermediate_size=h // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=h // 64,
        num_key_value_heads=h // 64,
        n_shared_experts=1,
        n_routed_experts=args.experts,
        num_experts_per_tok=args.top_k,
        n_group=8,
        topk_group=4,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        scoring_func="sigmoid",
        q_lora_rank=h * 3 // 8,
        kv_lora_rank=args.kv_rank,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        rope_interleave=True,
        max_position_embeddings=16384,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        num_nextn_predict_layers=0,
        torch_dtype="bfloat16",
        rope_scaling=dict(
            type="yarn",
            factor=4.0,
            original_max_position_embeddings=4096,
            beta_fast=32,
            beta_slow=1,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
    )


def checkpoint_tensors(cfg: dict, fp8: bool):
    """(HF name, tensor) of a random checkpoint, one at a time: bf16, or FP8 blocks for every matrix R1 stores so."""
    from model.loading import fp8 as fp8_format

    g = torch.Generator().manual_seed(0)
    D, H, E = cfg["hidden_size"], cfg["num_attention_heads"], cfg["n_routed_experts"]
    qk, v = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    C, R, Q = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"], cfg["q_lora_rank"]
    F, Fe = cfg["intermediate_size"], cfg["moe_intermediate_size"]

    def matrix(name, rows, cols, quantizable=True):
        w = torch.randn(rows, cols, generator=g) * cols**-0.5
        if fp8 and quantizable:
            q, scale_inv = fp8_format.quantize_blocks(w)
            return [(name, q), (name + "_scale_inv", scale_inv)]
        return [(name, w.to(torch.bfloat16))]

    def norm(name, n):
        return [(name, torch.ones(n, dtype=torch.bfloat16))]

    yield from matrix("model.embed_tokens.weight", cfg["vocab_size"], D, quantizable=False)
    yield from norm("model.norm.weight", D)
    yield from matrix("lm_head.weight", cfg["vocab_size"], D, quantizable=False)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield from norm(p + "input_layernorm.weight", D)
        yield from norm(p + "post_attention_layernorm.weight", D)
        yield from matrix(p + "self_attn.q_a_proj.weight", Q, D)
        yield from norm(p + "self_attn.q_a_layernorm.weight", Q)
        yield from matrix(p + "self_attn.q_b_proj.weight", H * qk, Q)
        yield from matrix(p + "self_attn.kv_a_proj_with_mqa.weight", C + R, D)
        yield from norm(p + "self_attn.kv_a_layernorm.weight", C)
        yield from matrix(p + "self_attn.kv_b_proj.weight", H * (qk - R + v), C)
        yield from matrix(p + "self_attn.o_proj.weight", D, H * v)
        if i < cfg["first_k_dense_replace"]:
            mlps = [(p + "mlp.", F)]
        else:
            yield from matrix(p + "mlp.gate.weight", E, D, quantizable=False)
            yield p + "mlp.gate.e_score_correction_bias", torch.randn(E, generator=g) * 0.01
            mlps = [(p + f"mlp.experts.{e}.", Fe) for e in range(E)] + [(p + "mlp.shared_experts.", Fe)]
        for prefix, hidden in mlps:
            yield from matrix(prefix + "gate_proj.weight", hidden, D)
            yield from matrix(prefix + "up_proj.weight", hidden, D)
            yield from matrix(prefix + "down_proj.weight", D, hidden)


def write_checkpoint(directory: Path, cfg: dict, fp8: bool) -> int:
    """Shards of at most SHARD_BYTES plus index, config and a word-level tokenizer; returns the tensor bytes."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    if fp8:
        cfg = dict(
            cfg,
            quantization_config={
                "quant_method": "fp8",
                "fmt": "e4m3",
                "activation_scheme": "dynamic",
                "weight_block_size": [128, 128],
            },
        )
    (directory / "config.json").write_text(json.dumps(cfg, indent=1))
    weight_map, shard, shard_bytes, total = {}, {}, 0, 0

    def flush():
        nonlocal shard, shard_bytes
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, directory / name, metadata={"format": "pt"})
        weight_map.update((k, name) for k in shard)
        shard, shard_bytes = {}, 0

    for name, tensor in checkpoint_tensors(cfg, fp8):
        shard[name] = tensor
        shard_bytes += tensor.nbytes
        total += tensor.nbytes
        if shard_bytes >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    vocab = {"<s>": 0, "</s>": 1, **{f"t{i}": i for i in range(2, cfg["vocab_size"])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<s>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>").save_pretrained(directory)
    return total


# ---- load: peak RSS in a fresh process -----------------------------------------------------------------
LOAD_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
import torch, transformers, model  # imported before the baseline: the load's own memory is what is measured
from model.loading.checkpoint import load_checkpoint

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM, the peak, to the current RSS
start = time.perf_counter()
if sys.argv[3] == "stream":
    engine = model.load(sys.argv[1], quant=None, threads=1, cache_dir=sys.argv[2])
else:  # the whole repacked model in memory at once, as a load without the streaming cache writer holds it
    from model.loading.repack import Repacker
    load_checkpoint(sys.argv[1], cache_dir=sys.argv[2], use_cache=False, repack=lambda c, t: Repacker(c)(t))
print(json.dumps({"seconds": time.perf_counter() - start, "peak": status("VmHWM") - before}))
"""


def measure_load(directory: Path, how: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run(
            [sys.executable, "-c", LOAD_CHILD, str(directory), cache, how, str(ROOT)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- speed -------------------------------------------------------------------------------------------------
def timed_steps(transformer, batch: int, prompt_tokens: int, decode_tokens: int, seed: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one ragged prefill of `batch` prompts and `decode_tokens` steps."""
    from model.serving.scheduler import forward_step

    g = torch.Generator().manual_seed(seed)
    vocab = transformer.config.vocab_size
    cache = transformer.new_cache(max_seq_len=prompt_tokens + decode_tokens + 1, capacity_bytes=1 << 30)
    seqs = [cache.new_sequence() for _ in range(batch)]
    prompts = [torch.randint(2, vocab, (prompt_tokens,), generator=g).tolist() for _ in range(batch)]
    start = time.perf_counter()
    logits = forward_step(transformer, cache, seqs, prompts)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(decode_tokens):
        logits = forward_step(transformer, cache, seqs, [[t] for t in logits.argmax(-1).tolist()])
    return prefill, time.perf_counter() - start


def long_context_decode(transformer, context: int, decode_tokens: int, runs: int) -> dict[str, float]:
    """Decode tok/s per MLA mode at batch 1 after one `context`-token prefill; each run forks the prefilled
    sequence (shared blocks, no copy), so every mode decodes from the same cache."""
    from model.layers.mla import set_mla_mode
    from model.serving.scheduler import forward_step

    g = torch.Generator().manual_seed(7)
    cache = transformer.new_cache(max_seq_len=context + decode_tokens + 1, capacity_bytes=1 << 30)
    parent = cache.new_sequence()
    set_mla_mode(transformer, "auto")
    first = (
        forward_step(
            transformer,
            cache,
            [parent],
            [torch.randint(2, transformer.config.vocab_size, (context,), generator=g).tolist()],
        )[0]
        .argmax()
        .item()
    )
    speeds: dict[str, list[float]] = {"naive": [], "absorbed": []}
    for _ in range(runs):
        for mode, times in speeds.items():
            set_mla_mode(transformer, mode)
            (child,) = cache.fork(parent, 1)
            token, start = first, time.perf_counter()
            for _ in range(decode_tokens):
                token = forward_step(transformer, cache, [child], [[token]])[0].argmax().item()
            times.append(decode_tokens / (time.perf_counter() - start))
            cache.free(child)
    set_mla_mode(transformer, "auto")
    return {mode: statistics.median(times) for mode, times in speeds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=6)
    parser.add_argument("--kv-rank", type=int, default=128, help="kv_lora_rank (R1: 512 at hidden 7168)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--fp8", action="store_true", help="write the checkpoint in R1's FP8 format instead of bf16")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument(
        "--long-context", type=int, default=2048, help="prompt length of the long-context decode (0 = skip)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    parser.add_argument("--dir", type=Path, help="keep the checkpoint here (default: a temporary directory)")
    parser.add_argument("--skip-load", action="store_true", help="skip the fresh-process load measurements")
    args = parser.parse_args()

    import model
    from model.layers.mla import set_mla_mode

    threads = args.threads or model.physical_cores()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch) / "ckpt"
        cfg = bench_config(args)
        t0 = time.perf_counter()
        on_disk = write_checkpoint(directory, cfg, args.fp8)
        print(
            f"checkpoint: {args.layers} layers, hidden {args.hidden}, {args.experts} experts top-{args.top_k}, "
            f"kv rank {args.kv_rank}, {'FP8' if args.fp8 else 'bf16'}: {on_disk / 2**20:.0f} MiB of tensors "
            f"(written in {time.perf_counter() - t0:.0f} s); {threads} threads\n"
        )

        with tempfile.TemporaryDirectory() as cache_dir:
            engine = model.load(directory, quant=None, threads=threads, cache_dir=cache_dir)
            transformer, config = engine.model, engine.config
            fp32_bytes = sum(t.nbytes for t in transformer.state_dict().values())

            # KV bytes per token
            m, H, L = config.mla, config.n_heads, config.n_layers
            cache = transformer.new_cache(max_seq_len=64, capacity_bytes=1 << 20)
            mla_bytes = cache.bytes_per_block // cache.block_size
            mha_bytes = L * H * (m.qk_head_dim + m.v_head_dim) * 4
            r1_mla = R1_LAYERS * (R1_KV_RANK + R1_ROPE) * 4
            r1_mha = R1_LAYERS * R1_HEADS * (R1_NOPE + R1_ROPE + R1_V) * 4
            print("## KV-cache bytes per token (fp32 cache)\n")
            print("| shape | MLA (latent + rope key) | MHA of the same heads (K + V) | MHA / MLA |")
            print("|---|---:|---:|---:|")
            print(
                f"| this config ({L} layers, {H} heads, rank {m.kv_lora_rank}) | {mla_bytes:,} | {mha_bytes:,} | {mha_bytes / mla_bytes:.1f}x |"
            )
            print(
                f"| DeepSeek-R1 ({R1_LAYERS} layers, {R1_HEADS} heads, rank {R1_KV_RANK}) | {r1_mla:,} | {r1_mha:,} | {r1_mha / r1_mla:.1f}x |\n"
            )

            if not args.skip_load:
                print("## First load, fresh process (peak RSS above the process's RSS before `model.load`)\n")
                print("| load | seconds | peak RSS MiB | peak / checkpoint on disk | peak / fp32 model |")
                print("|---|---:|---:|---:|---:|")
                for how, label in (
                    ("stream", "streaming (model.load: reader -> repack -> cache writer)"),
                    ("whole", "whole model in memory (load_checkpoint, use_cache=False)"),
                ):
                    r = measure_load(directory, how)
                    print(
                        f"| {label} | {r['seconds']:.1f} | {r['peak'] / 2**20:.0f} | {r['peak'] / on_disk:.2f} | "
                        f"{r['peak'] / fp32_bytes:.2f} |",
                        flush=True,
                    )
                print(
                    f"\ncheckpoint tensors on disk {on_disk / 2**20:.0f} MiB; the fp32 model {fp32_bytes / 2**20:.0f} MiB; "
                    f"largest tensor {max(t.nbytes for t in transformer.state_dict().values()) / 2**20:.0f} MiB\n"
                )

            print(
                f"## Speed: fp32, prompts of {args.prompt_tokens} tokens, {args.decode_tokens} decode steps, "
                f"median of {args.runs}\n"
            )
            print("| MLA | batch | prefill tok/s | decode tok/s | prefill vs naive | decode vs naive |")
            print("|---|---:|---:|---:|---:|---:|")
            modes = ("naive", "absorbed", "auto")
            for batch in (1, 8):
                for mode in modes:
                    set_mla_mode(transformer, mode)
                    timed_steps(transformer, batch, 16, 2, seed=99)  # warm-up
                # modes interleaved within each run, so the machine's load swings hit them alike
                runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
                for r in range(args.runs):
                    for mode in modes:
                        set_mla_mode(transformer, mode)
                        runs[mode].append(
                            timed_steps(transformer, batch, args.prompt_tokens, args.decode_tokens, seed=r)
                        )
                speed = {
                    mode: (
                        batch * args.prompt_tokens / statistics.median(t[0] for t in times),
                        batch * args.decode_tokens / statistics.median(t[1] for t in times),
                    )
                    for mode, times in runs.items()
                }
                for mode, (prefill, decode) in speed.items():
                    print(
                        f"| {mode} | {batch} | {prefill:.1f} | {decode:.2f} | {prefill / speed['naive'][0]:.2f}x | "
                        f"{decode / speed['naive'][1]:.2f}x |",
                        flush=True,
                    )
            if args.long_context:
                speed = long_context_decode(transformer, args.long_context, args.decode_tokens, args.runs)
                print(f"\n## Decode after a {args.long_context}-token prompt, batch 1, median of {args.runs}\n")
                print("| MLA | decode tok/s | vs naive |")
                print("|---|---:|---:|")
                for mode, tok_s in speed.items():
                    print(f"| {mode} | {tok_s:.2f} | {tok_s / speed['naive']:.2f}x |")
            engine.close()
    print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
