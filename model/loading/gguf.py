"""GGUF reader: decoded metadata and a stream of float32 tensors under our names, in rotate-half RoPE layout.

A reader, and a leaf of the loader. Its metadata becomes the config in model/loading/gguf_config.py (llama.cpp's
key names and conventions). The file is memory-mapped by `gguf.GGUFReader`; `GGUFCheckpoint.tensors()`
dequantizes one tensor at a time with the gguf package's reference `gguf.quants.dequantize`. llama.cpp's
layouts are undone on the way: interleaved rope rows (Llama, DeepSeek) become rotate-half, a layer's stacked
`*_exps` experts are sliced one expert at a time, and DeepSeek's split `attn_k_b` / `attn_v_b` are joined
back into one `wkv_b`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

from model.config import ModelConfig
from model.layers.rope import deinterleave_rows
from model.loading.gguf_config import ROPE_FREQS_TENSOR, config_from_gguf, rope_scaling_from_freqs
from model.loading.tensor_names import GGUF_NAMES, ModelLoadError, checked, rope_rows

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


def dequantize_tensor(t: Any, path: Path | str = "", index: int | None = None) -> torch.Tensor:
    """One `ReaderTensor` -> float32 torch tensor in torch dim order (ggml's `ne` reversed).

    index: take only that slice of the outermost dimension (one expert of a stacked `*_exps` tensor).
    """
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
    data = t.data
    if index is not None:  # the outermost dimension is data's first axis for every type
        data, shape = data[index], shape[1:]
    arr = dequantize(data, qtype)
    if arr.dtype != np.float32 or not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, dtype=np.float32)  # F32 data is a read-only view of the mmap: copy out
    return torch.from_numpy(arr.reshape(shape))


class GGUFCheckpoint:
    """A GGUF file opened for reading: metadata and config now, tensors streamed by `tensors()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reader = open_gguf(self.path)
        self.metadata = read_metadata(self.reader)
        names = {t.name for t in self.reader.tensors}
        try:
            config = config_from_gguf(self.metadata, has_output_tensor="output.weight" in names)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{self.path}: {e}") from e
        freqs = next((t for t in self.reader.tensors if t.name == ROPE_FREQS_TENSOR), None)
        if freqs is not None and config.rope_scaling is None:
            scaling = rope_scaling_from_freqs(dequantize_tensor(freqs, self.path), config.head_dim, config.rope_theta)
            if scaling is None:
                raise ModelLoadError(f"{self.path}: tensor {freqs.name!r} does not match any Llama-3 RoPE scaling")
            config = dataclasses.replace(config, rope_scaling=scaling)
        self.config = config

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(our name, float32 tensor) for every weight, one at a time (one expert at a time for stacked experts).

        Raises ModelLoadError naming the file and tensor for unknown names, unsupported types and truncation.
        """
        config, path = self.config, self.path
        rows = rope_rows(config) if config.rope_interleaved else {}
        kv_b_halves: dict[int, dict[str, torch.Tensor]] = {}
        for t in self.reader.tensors:
            if t.name == ROPE_FREQS_TENSOR:
                continue  # became config.rope_scaling
            if t.name.endswith((".attn_k_b.weight", ".attn_v_b.weight")):
                layer = int(t.name.split(".")[1])
                halves = kv_b_halves.setdefault(layer, {})
                halves[t.name.split(".")[2]] = dequantize_tensor(t, path)
                if len(halves) == 2:
                    yield f"layers.{layer}.attention.wkv_b.weight", self._join_kv_b(kv_b_halves.pop(layer))
                continue
            hit = GGUF_NAMES.lookup(t.name)
            if hit is None:
                raise ModelLoadError(f"{path}: unexpected tensor {t.name!r} (not in the GGUF name table)")
            template, fields = hit
            if "{expert}" in template and "expert" not in fields:  # stacked: [experts, ...]
                for expert in range(int(t.shape[-1])):
                    yield template.format(**fields, expert=expert), dequantize_tensor(t, path, index=expert)
                continue
            ours = template.format(**fields)
            w = dequantize_tensor(t, path)
            layout = rows.get(ours.split(".", 2)[-1])
            yield ours, w if layout is None else deinterleave_rows(w, *layout)
        if kv_b_halves:
            raise ModelLoadError(f"{path}: layer {min(kv_b_halves)} has only half of attn_k_b / attn_v_b")

    def _join_kv_b(self, halves: dict[str, torch.Tensor]) -> torch.Tensor:
        """attn_k_b [H, C, P] (stored transposed) and attn_v_b [H, V, C] -> wkv_b [H * (P + V), C]."""
        k_b, v_b = halves["attn_k_b"], halves["attn_v_b"]
        return torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(-1, k_b.shape[1])


def load_gguf(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and every tensor (float32, our names) in memory; names, counts and shapes checked against the config."""
    checkpoint = GGUFCheckpoint(path)
    return checkpoint.config, dict(checked(checkpoint.config, checkpoint.tensors(), checkpoint.path))
