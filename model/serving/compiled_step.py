"""The decode step as native code: one call per step instead of ~1,600 small aten calls.

A decode step (every sequence feeds one token) of a Llama-family model runs through `native/decode_step.cpp`:
the small ops (norm + cast, rope + KV write, attention over the paged cache, SiLU * mul, residuals) are
plain loops there. On a CPU with AVX512-VNNI the matmuls of an int4/int8 model run on the native int8-activation
kernels (`native/int8_kernels.h`: activations quantized per 32-block, each weight block unpacked once for the
whole batch), all in one OpenMP region per step; int4 weights get a tiled copy for them at load
(model/serving/native_layout.py). Elsewhere (and for fp32 models, or with `int8_kernels=False`) the matmuls call
the same ATen kernels as the eager path (model/layers/linear.py). An act-order GPTQ weight's input columns
(`Linear.input_order`) are gathered in the step as eager gathers them, before the activations are quantized for
the kernels (one gather per fused q/k/v or gate/up input: the fused weights share their column order).
Prefill, mixed steps and every model the native step does not cover stay on the eager `Transformer`.

The library is compiled on the user's machine (`c++ -O3 -march=native`, ~15 s of CPU), once per
source, torch version, compiler and CPU, into `<cache dir>/native/` with an atomic rename, the way the
weight cache is written. The build runs in a background thread at low priority, so the first requests
never wait for it: they decode eagerly until the library is loaded. Without a C++ compiler, or if the build
fails, decoding stays eager and the reason is logged once per process (a failed build is remembered on disk
and not retried for the same key).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from model.layers.attention import GroupedQueryAttention
from model.layers.kv_cache import KVCache, StepLayout
from model.layers.linear import Linear
from model.layers.mlp import SwiGLU
from model.layers.norm import RMSNorm
from model.layers.transformer import Transformer
from model.serving.native_layout import tiled_int4

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "native" / "decode_step.cpp"
HEADERS = (SOURCE.parent / "int8_kernels.h",)  # included by SOURCE: part of the library's key
ENV_SWITCH = "R1_COMPILED_STEP"  # "0" turns the native decode step off (the test suite does, bar its own tests)


def enabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def find_compiler() -> str | None:
    """The C++ compiler to use: $CXX, else c++, g++ or clang++ on PATH; None if there is none."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and (path := shutil.which(name)):
            return path
    return None


# The ModelConfig fields the native step implements. A field added later (a sliding window, a sparse
# pattern, MoE or MLA sizes) that is set away from its default makes the model fall back to eager rather
# than be run wrongly.
KNOWN_CONFIG_FIELDS = frozenset(
    {
        "arch",
        "vocab_size",
        "dim",
        "n_layers",
        "ffn_dim",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "qkv_bias",
        "max_seq_len",
        "rope_theta",
        "rope_scaling",
        "norm_eps",
        "tie_embeddings",
        "bos_token_id",
        "eos_token_ids",
        "rope_interleaved",  # the file's row order, undone by the loader: the model in memory is always rotate-half
    }
)


def unsupported_reason(model: Transformer, cache: KVCache) -> str | None:
    """Why the native step cannot run this model and cache (None: it can).

    It covers exactly the blocks of model/layers/transformer.py built of RMSNorm, GroupedQueryAttention and SwiGLU
    with `Linear` weights in one of linear.py's formats, over a float32 cache of (2 KV, hd) rows, for a
    config that sets nothing beyond KNOWN_CONFIG_FIELDS.
    """
    for field in dataclasses.fields(model.config):
        if field.name in KNOWN_CONFIG_FIELDS:
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if getattr(model.config, field.name) != default:
            return f"config sets {field.name}, which the native step does not implement"
    for i, block in enumerate(model.layers):
        parts = (type(block.attention_norm), type(block.attention), type(block.ffn_norm), type(block.feed_forward))
        if parts != (RMSNorm, GroupedQueryAttention, RMSNorm, SwiGLU):
            return f"layer {i} is {'/'.join(p.__name__ for p in parts)}"
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    if any(type(m) is not Linear or m.weight.dtype not in (torch.float32, torch.int8, torch.uint8) for m in linears):
        return "a linear layer in a format the native step does not know"
    if any(m.lora_down is not None for m in linears):
        return "an unmerged LoRA adapter (quantized weights), which the native step does not apply"
    config = model.config
    if cache.dtype != torch.float32 or cache.row_shape != (2 * config.n_kv_heads, config.head_dim):
        return f"a KV cache of {cache.dtype} rows {cache.row_shape}"
    if cache.key_summaries is not None:
        return "a KV cache with key summaries (top-k sparse attention), which the native step does not update"
    if model.tok_embeddings.weight.dtype != torch.float32:
        return f"{model.tok_embeddings.weight.dtype} embeddings"
    return None


# ----- building and loading the library -------------------------------------------------------------


class NativeBuildError(RuntimeError):
    """The native library could not be built or loaded; the message says why (compiler output included)."""


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()


def library_path(directory: Path, compiler: str) -> Path:
    """Where the library for this source, torch, compiler and CPU lives in `directory`."""
    key = hashlib.sha256()
    sources = [path.read_bytes() for path in (SOURCE, *HEADERS)]
    for part in (*sources, torch.__version__.encode(), compiler.encode(), _cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return directory / f"decode_step-{key.hexdigest()[:16]}.so"


# Compile to a temporary file, then rename it into place (atomic: a reader sees the whole library or none).
# The shell does the rename, so a build started by a short-lived process (`r1 generate`) still lands for the
# next one after that process has exited; it runs in its own session, so a Ctrl-C there does not cut it.
_COMPILE_AND_RENAME = (
    'target="$1"; tmp="$2"; shift 2; "$@" -o "$tmp" && mv -f "$tmp" "$target"; status=$?; rm -f "$tmp"; exit $status'
)


def compile_command(compiler: str, source: Path, target: Path, partial: Path) -> list[str]:
    from torch.utils import cpp_extension

    torch_lib = cpp_extension.library_paths()[0]
    command = [
        compiler,
        "-O3",
        "-march=native",
        "-std=c++20",
        "-shared",
        "-fPIC",
        "-fopenmp",
        "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        str(source),
        f"-L{torch_lib}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{torch_lib}",
    ]
    wrapped = ["sh", "-c", _COMPILE_AND_RENAME, "sh", str(target), str(partial), *command]
    nice = shutil.which("nice")  # the build shares the cores with the requests it is meant to speed up
    return [nice, "-n", "10", *wrapped] if nice else wrapped


def build_library(directory: Path, compiler: str) -> Path:
    """Compile the library into `directory` unless it is already there; returns its path.

    Raises NativeBuildError with the compiler's output if the build fails (and records the failure next to
    where the library would be, so other processes do not retry the same build).
    """
    target = library_path(directory, compiler)
    failed = target.with_suffix(".failed")
    if target.exists():
        return target
    if failed.exists():
        raise NativeBuildError(f"an earlier build failed ({failed}): {failed.read_text(errors='replace')[-2000:]}")
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    command = compile_command(compiler, SOURCE, target, partial)
    proc = subprocess.run(command, capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0 or not target.exists():
        output = (proc.stderr or proc.stdout).strip()
        failed.write_text(f"{' '.join(command)}\n{output}\n")
        raise NativeBuildError(f"{compiler} exited with {proc.returncode}: {output[-2000:]}")
    return target


class NativeLibrary:
    """The process's native library: built in the background on first request, loaded once.

    `torch.ops.load_library` registers the `r1_native` op namespace process-wide, and a namespace can be
    registered only once, so this is one object per process (`native_library()`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self.error: str | None = None  # why the native step is unavailable, once known

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def start(self, directory: Path) -> None:
        """Build (if needed) and load the library in a background thread; returns at once."""
        with self._lock:
            if self._thread is not None or self.ready or self.error is not None:
                return
            self._thread = threading.Thread(
                target=self._build_and_load, args=(directory,), name="r1-native-build", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the library is loaded or has failed (tests, benchmarks); True when it is ready."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.ready

    def _build_and_load(self, directory: Path) -> None:
        compiler = find_compiler()
        if compiler is None:
            self._fail("no C++ compiler found (set CXX or install g++)")
            return
        try:
            path = build_library(directory, compiler)
            torch.ops.load_library(str(path))
        except (NativeBuildError, OSError, RuntimeError) as err:
            self._fail(str(err))
            return
        log.info("native decode step loaded from %s", path)
        self._loaded.set()

    def _fail(self, reason: str) -> None:
        self.error = reason
        log.warning("native decode step unavailable, decoding stays eager: %s", reason.splitlines()[0][:300])


@functools.cache
def native_library() -> NativeLibrary:
    return NativeLibrary()


# ----- the step ----------------------------------------------------------------------------------------


def _linear_tensors(linear: Linear, tiles: bool) -> list[torch.Tensor]:
    """weight, scales, bias, (int4 with `tiles`) the kernels' tiled copy and (act-order GPTQ) the input order the
    step gathers the layer's input columns in; empty tensors for what is absent."""
    empty = torch.empty(0)
    packed = tiled_int4(linear.weight, linear.scales) if tiles and linear.weight.dtype == torch.uint8 else empty
    return [
        linear.weight,
        empty if linear.scales is None else linear.scales,
        empty if linear.bias is None else linear.bias,
        packed,
        torch.empty(0, dtype=torch.int64) if linear.input_order is None else linear.input_order,
    ]


class CompiledDecode:
    """Decode steps of one model through the native library, once it is loaded.

    `usable(layout, all_logits)` says whether a step can take the native path now; `__call__` runs it. Until
    the library is ready (or forever, when it cannot be built) the caller runs the eager model instead. Once it
    is, the C++ model is made in a background thread too (tiling the int4 weights for the int8-activation kernels
    takes ~1 s for SmolLM2-135M), so no request waits for that either.
    """

    def __init__(
        self,
        model: Transformer,
        cache: KVCache,
        build_dir: Path,
        library: NativeLibrary | None = None,
        int8_kernels: bool = True,
    ) -> None:
        """int8_kernels: run an int4/int8 model's matmuls on the native int8-activation kernels where the library
        has them (False: on ATen's kernels, as the eager model; the A/B of benchmarks and parity tests)."""
        self.model = model
        self.int8_kernels = int8_kernels
        self.build_dir = build_dir
        self.library = library or native_library()
        self._native = None  # the C++ DecodeModel, made in the background once the library is loaded
        self._maker: threading.Thread | None = None
        self._maker_lock = threading.Lock()
        self.steps = 0  # decode steps run natively
        self.reason = unsupported_reason(model, cache)
        if self.reason is not None:
            log.info("native decode step not used: %s", self.reason)
        else:
            self.library.start(build_dir)

    def usable(self, layout: StepLayout, all_logits: bool) -> bool:
        """A dense decode step of a supported model, the library built (a sparse plan or key summaries, which
        the native step would not keep up to date, leave the step to the eager model)."""
        return (
            self.reason is None and not all_logits and layout.max_new == 1 and layout.sparse is None and self._ready()
        )

    @property
    def ready(self) -> bool:
        """Whether native steps can run now (the library loaded and the C++ model made); starts making it."""
        return self.reason is None and self._ready()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until native steps can run (tests, benchmarks); True when they can."""
        if self.reason is not None or not self.library.wait(timeout):
            return False
        self._ready()
        if self._maker is not None:
            self._maker.join(timeout)
        return self._native is not None

    def _ready(self) -> bool:
        """Whether the C++ model is made; starts making it once the library is loaded."""
        if self._native is not None:
            return True
        if self.library.ready:
            with self._maker_lock:
                if self._maker is None:
                    self._maker = threading.Thread(target=self._make_in_background, name="r1-native-model", daemon=True)
                    self._maker.start()
        return False

    def _make_in_background(self) -> None:
        try:
            self._native = self._make_native()
        except (RuntimeError, ValueError) as err:  # a weight the repacking refuses: this model stays eager
            self.reason = f"the native model could not be made: {err}"
            log.warning("native decode step not used: %s", self.reason)

    def __call__(self, tokens: torch.Tensor, cache: KVCache, layout: StepLayout) -> torch.Tensor:
        """tokens [B], one per sequence of `layout` -> fp32 logits [B, V]; writes the step's K/V into `cache`."""
        if not self.wait():
            raise RuntimeError(f"native decode step unavailable: {self.reason or self.library.error}")
        self.steps += 1
        return self._native.step(tokens, layout.positions, layout.write_slots, layout.read_slots, cache.kv)

    @property
    def uses_int8_kernels(self) -> bool:
        """Whether native steps run on the int8-activation kernels (known once the first native step is made)."""
        return self._native is not None and bool(self._native.uses_int8_kernels())

    def _make_native(self):
        m, config = self.model, self.model.config
        tiles = self.int8_kernels and bool(torch.ops.r1_native.int8_kernels_built())  # no tiled copy otherwise
        tensors: list[torch.Tensor] = [
            m.tok_embeddings.weight,
            m.norm.weight,
            *_linear_tensors(m.output, tiles),
            m.rope.cos,
            m.rope.signed_sin,
        ]
        for block in m.layers:
            tensors += [
                block.attention_norm.weight,
                *_linear_tensors(block.attention.wqkv, tiles),
                *_linear_tensors(block.attention.wo, tiles),
                block.ffn_norm.weight,
                *_linear_tensors(block.feed_forward.w13, tiles),
                *_linear_tensors(block.feed_forward.w2, tiles),
            ]
        sizes: Sequence[int] = [
            config.n_layers,
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
            config.ffn_dim,
            int(tiles),
        ]
        return torch.classes.r1_native.DecodeModel(tensors, list(sizes), float(config.norm_eps))
