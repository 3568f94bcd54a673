"""GGUF reader: decoded metadata and float32 tensors under our names, in HF (rotate-half) RoPE layout.

The file is memory-mapped by `gguf.GGUFReader`; each tensor is dequantized once with the gguf
package's reference `gguf.quants.dequantize` and handed over as a torch float32 tensor.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize
from tqdm import tqdm

from model.checkpoint import ModelLoadError, map_tensor_name, validate_tensors
from model.config import ModelConfig, RopeScaling
from model.rope import inverse_frequencies


# GGUF name -> our name; "{i}" is the layer index. The one place GGUF naming is spelled out.
GGUF_TENSOR_NAMES: dict[str, str] = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "blk.{i}.attn_q.weight": "layers.{i}.attention.wq.weight",
    "blk.{i}.attn_q.bias": "layers.{i}.attention.wq.bias",
    "blk.{i}.attn_k.weight": "layers.{i}.attention.wk.weight",
    "blk.{i}.attn_k.bias": "layers.{i}.attention.wk.bias",
    "blk.{i}.attn_v.weight": "layers.{i}.attention.wv.weight",
    "blk.{i}.attn_v.bias": "layers.{i}.attention.wv.bias",
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2.weight",
}

# llama.cpp's converter stores Llama-3 RoPE scaling not as metadata but as this tensor of
# per-frequency divisors; we turn it back into the config's RopeScaling (see rope_scaling_from_freqs).
ROPE_FREQS_TENSOR = "rope_freqs.weight"

# Types we dequantize (all through gguf.quants); anything else is refused by name.
SUPPORTED_TYPES = frozenset(
    {
        GGMLQuantizationType.F32,
        GGMLQuantizationType.F16,
        GGMLQuantizationType.BF16,
        GGMLQuantizationType.Q8_0,
        GGMLQuantizationType.Q4_0,
        GGMLQuantizationType.Q4_1,
        GGMLQuantizationType.Q5_0,
        GGMLQuantizationType.Q5_1,
        GGMLQuantizationType.Q2_K,
        GGMLQuantizationType.Q3_K,
        GGMLQuantizationType.Q4_K,
        GGMLQuantizationType.Q5_K,
        GGMLQuantizationType.Q6_K,
    }
)


@dataclass
class GGUFModel:
    path: Path
    metadata: dict[str, Any]
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # our names, float32, torch dim order, HF RoPE layout


def open_gguf(path: str | Path) -> GGUFReader:
    """Memory-map and parse a GGUF file; any parse failure becomes a ModelLoadError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        return GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError/IndexError/struct errors on truncation
        raise ModelLoadError(f"cannot parse GGUF file {path} (truncated or corrupt?): {type(e).__name__}: {e}") from e


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    """All key/values decoded to Python values (str, int, float, bool, lists thereof)."""
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception as e:
            raise ModelLoadError(f"cannot decode GGUF metadata key {key!r}: {e}") from e
    return meta


def dequantize_tensor(t: Any, path: Path | str = "") -> torch.Tensor:
    """One `ReaderTensor` -> float32 torch tensor in torch dim order (ggml's `ne` reversed)."""
    qtype = GGMLQuantizationType(t.tensor_type)
    if qtype not in SUPPORTED_TYPES:
        raise ModelLoadError(f"{path}: tensor {t.name!r} has unsupported type {qtype.name}")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_elems = int(np.prod(shape)) if shape else 1
    # A truncated file yields a short memmap slice rather than an error; catch it here.
    if n_elems % block or t.data.nbytes != n_elems // block * type_size:
        raise ModelLoadError(
            f"{path}: tensor {t.name!r} ({qtype.name}, shape {list(shape)}) has {t.data.nbytes} bytes of data, "
            f"expected {n_elems // block * type_size} (truncated file?)"
        )
    arr = dequantize(t.data, qtype)
    if arr.dtype != np.float32 or not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, dtype=np.float32)  # F32 data is a read-only view of the mmap: copy out
    return torch.from_numpy(arr.reshape(shape))


def reverse_llama_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (`convert_hf_to_gguf.LlamaModel.permute`).

    The converter regroups each head's rows from rotate-half order [x0..x(d/2-1), y0..] into
    ggml's interleaved pairs [x0, y0, x1, y1, ...]; rows (dim 0) are per-head blocks of size hd.
    Works for weights [H*hd, D] and biases [H*hd].
    """
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def rope_scaling_from_freqs(divisors: torch.Tensor, head_dim: int, theta: float) -> RopeScaling | None:
    """Recover the RopeScaling whose llama3 divisors equal `divisors`; None if no standard one does.

    `factor` is the largest divisor; the others are searched among values Llama-3.x releases use.
    """
    divisors = divisors.double().reshape(-1)
    if divisors.numel() != head_dim // 2:
        return None
    factor = float(divisors.max())
    for original in (8192, 4096, 16384, 2048, 32768):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0)):
            cand = RopeScaling(factor=factor, low_freq_factor=low, high_freq_factor=high,
                               original_max_position_embeddings=original)
            # llama.cpp stores base / scaled frequency per pair; model/rope.py defines the scaled ones.
            candidate = inverse_frequencies(head_dim, theta, None) / inverse_frequencies(head_dim, theta, cand)
            if torch.allclose(candidate.double(), divisors, rtol=1e-4, atol=1e-5):
                return cand
    return None


def load_gguf(path: str | Path) -> GGUFModel:
    """Read config and all tensors; validate names, counts and shapes against the config."""
    path = Path(path)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    gguf_names = {t.name for t in reader.tensors}
    try:
        config = ModelConfig.from_gguf_metadata(meta, has_output_tensor="output.weight" in gguf_names)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path}: {e}") from e

    tensors: dict[str, torch.Tensor] = {}
    # The first load of a file reads and dequantizes every tensor: show it (on a terminal only).
    for t in tqdm(reader.tensors, desc=f"reading {path.name}", unit="tensor", leave=False, disable=None, file=sys.stderr):
        if t.name == ROPE_FREQS_TENSOR:
            if config.rope_scaling is None:
                scaling = rope_scaling_from_freqs(dequantize_tensor(t, path), config.head_dim, config.rope_theta)
                if scaling is None:
                    raise ModelLoadError(f"{path}: tensor {t.name!r} does not match any Llama-3 RoPE scaling")
                config = dataclasses.replace(config, rope_scaling=scaling)
            continue
        ours = map_tensor_name(t.name, GGUF_TENSOR_NAMES)
        if ours is None:
            raise ModelLoadError(f"{path}: unexpected tensor {t.name!r} (not in the GGUF name table)")
        w = dequantize_tensor(t, path)
        if config.arch == "llama" and ".attention.wq." in ours:
            w = reverse_llama_permute(w, config.n_heads)
        elif config.arch == "llama" and ".attention.wk." in ours:
            w = reverse_llama_permute(w, config.n_kv_heads)
        tensors[ours] = w
    validate_tensors(config, tensors, path)
    return GGUFModel(path=path, metadata=meta, config=config, tensors=tensors)
