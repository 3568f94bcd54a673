"""Our inference engine, in plain PyTorch: `model.load(...)` returns a ready `Engine`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from model.config import ModelConfig
from model.engine import Engine
from model.layers.sparse_attention import ATTENTION_MODES, AttentionConfig
from model.layers.transformer import Transformer
from model.loading.checkpoint import ModelLoadError, check_runnable, load_checkpoint, native_quant
from model.loading.lora import AdapterError, apply_adapter, attach_adapter, read_adapter
from model.loading.repack import Repacker
from model.loading.tensor_names import checked
from model.loading.weight_cache import default_cache_dir
from model.serving.compiled_step import enabled_by_env
from model.serving.drafts import DraftConfig
from model.serving.openmp import release_thread_pool
from model.serving.request import Completion, GenerationError, Request
from model.serving.sampler import SamplingParams
from model.serving.scheduler import SchedulerConfig

__all__ = [
    "ATTENTION_MODES",
    "AdapterError",
    "AttentionConfig",
    "Completion",
    "Engine",
    "GenerationError",
    "LOAD_QUANTS",
    "ModelLoadError",
    "Request",
    "SamplingParams",
    "build_transformer",
    "load",
    "physical_cores",
]

# What `load(quant=...)` accepts: "auto" picks from the source (see `native_quant`), "fp32" = None.
LOAD_QUANTS = ("auto", "fp32", "int8", "int4")

log = logging.getLogger(__name__)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share execution units, so they do not count)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        cpu, physical, core = None, "0", None
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                cpu = int(value)
            elif key == "physical id":
                physical = value
            elif key == "core id":
                core = value
            elif not line.strip() and cpu is not None:
                if cpu in allowed:
                    cores.add((physical, core if core is not None else str(cpu)))
                cpu, physical, core = None, "0", None
    except OSError:
        pass
    return max(1, len(cores) or len(allowed))


def build_transformer(config: ModelConfig, tensors: dict[str, torch.Tensor], quant: str | None = None) -> Transformer:
    """A Transformer holding checkpoint-named `tensors`, fused (and quantized) for fast CPU inference."""
    return Transformer.from_state(config, dict(Repacker(config, quant)(checked(config, tensors.items(), "tensors"))))


def load(
    source: str | Path = "default",
    *,
    quant: str | None = "auto",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    kv_cache_mb: float | None = None,
    attention: str | AttentionConfig = "dense",
    fallback_full_attention: bool = False,
    compiled_step: bool | None = None,
    adapter: str | Path | None = None,
    request_adapters: Mapping[str, str | Path] | None = None,
    prompt_lookup: bool = True,
    jump_forward: bool = True,
) -> Engine:
    """Load a model as an Engine: "default" (the bundled SmolLM2-135M GGUF), a .gguf file (llama, qwen2, deepseek2)
    or an HF directory (llama, qwen2, mixtral, deepseek_v3 = DeepSeek-V3/R1, FP8 checkpoints included).

    quant: "auto" (default): the fastest precision that keeps what the file holds: int4 for Q4_0/Q4_1/Q4_K GGUFs and
    4-bit GPTQ/AWQ checkpoints (their packed groups go onto the int4 kernel as stored, model/loading/gptq.py),
    int8 for other quantized GGUFs and FP8 checkpoints, fp32 for float checkpoints (see `checkpoint.native_quant`); None or "fp32"
    (float32 weights, greedy output equal to transformers'), "int8" (weight-only, per output channel) or "int4"
    (groups of 32); see model/layers/linear.py.
    threads: torch intra-op threads; None = physical cores. Note torch's thread count is process-wide.
    kv_cache_mb: KV-cache capacity (running requests plus the prefix cache); None = 1024 MiB.
    attention: "dense" (default), "local", "topk" or "auto" (dense up to 512 tokens of context, top-k above), with
    the default block settings, or an `AttentionConfig`; see model/layers/sparse_attention.py.
    fallback_full_attention: attend densely whatever `attention` says.
    compiled_step: decode through the native step (model/serving/compiled_step.py), built in the background into
    `<cache_dir>/native` on first use while requests decode eagerly; None = on unless R1_COMPILED_STEP=0.
    adapter: a LoRA directory in PEFT's format (model/loading/lora.py): merged into float32 weights, run unmerged beside
    int8/int4 ones (which the native decode step then declines); it applies to every request.
    request_adapters: name -> LoRA directory: per-request adapters, applied only to requests submitted with
    `adapter=name`, batched with requests without one (model/layers/adapters.py; the native decode step runs
    the steps no adapter row is in). Raises AdapterError naming a bad file or tensor.
    prompt_lookup, jump_forward: greedy requests draft tokens (the last n-gram's earlier continuation; the tokens a
    grammar forces) that one decode step verifies, with output unchanged (model/serving/drafts.py); False = off.
    Raises ModelLoadError (a ValueError) naming the file and the problem for missing or bad model files.
    """
    if quant is not None and quant not in LOAD_QUANTS:
        raise ValueError(f"unknown quant {quant!r}; choose one of {', '.join(LOAD_QUANTS)} (or None = fp32)")
    attention = attention if isinstance(attention, AttentionConfig) else AttentionConfig(mode=attention)
    if fallback_full_attention:
        attention = AttentionConfig(mode="dense")
    quant = native_quant(source) if quant == "auto" else None if quant == "fp32" else quant
    check_runnable(source, quant)
    threads = threads or physical_cores()
    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(
        source,
        cache_dir=cache_dir,
        variant=f"engine-{quant or 'fp32'}",
        repack=lambda config, tensors: Repacker(config, quant)(tensors),
    )
    model = Transformer.from_state(checkpoint.config, checkpoint.tensors)
    if adapter is not None:
        placed = apply_adapter(model, read_adapter(adapter))
        log.info("adapter %s: %d linears merged, %d unmerged", adapter, placed["merged"], placed["unmerged"])
    for name, path in (request_adapters or {}).items():
        attach_adapter(model, read_adapter(path), name)
        log.info("per-request adapter %r: %s", name, path)
    log.info(
        "loaded %s: %s, %d layers, quant=%s, %d threads, attention %s",
        checkpoint.source,
        checkpoint.config.arch,
        checkpoint.config.n_layers,
        quant or "fp32",
        threads,
        attention.describe(),
    )
    if compiled_step is None:
        compiled_step = enabled_by_env()
    native_dir = (
        (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "native" if compiled_step else None
    )
    engine = Engine(
        model,
        checkpoint.tokenizer,
        threads=threads,
        kv_cache_mb=kv_cache_mb,
        name=Path(checkpoint.source).name,
        attention=attention,
        native_dir=native_dir,
        scheduler=SchedulerConfig(drafts=DraftConfig(prompt_lookup=prompt_lookup, jump_forward=jump_forward)),
    )
    engine.adapter_paths = {name: Path(path).expanduser() for name, path in (request_adapters or {}).items()}
    if adapter is not None:
        engine.adapter_paths[None] = Path(adapter).expanduser()
    release_thread_pool()  # this thread's loading work is done: only the scheduler's OpenMP pool should remain
    return engine
