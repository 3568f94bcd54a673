"""Hugging Face checkpoint directory: config.json + (sharded) safetensors -> ModelConfig and a stream of our tensors.

What config.json's keys mean is model/loading/hf_config.py; this module reads the files.

A reader, and a leaf of the loader: `HFCheckpoint.tensors()` yields one tensor at a time under our
checkpoint names (model/loading/tensor_names.py), each read from its shard only when its turn comes, into memory of
its own (model/loading/safetensors_file.py: no memory map whose touched pages would pile up).
Along the way it block-dequantizes FP8 weights (model/loading/fp8.py), reorders DeepSeek's interleaved rope rows
into rotate-half layout, and skips multi-token-prediction layers, which generation does not use.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.layers.rope import deinterleave_rows
from model.loading import fp8
from model.loading.hf_config import config_from_hf
from model.loading.safetensors_file import TensorFile, read_header
from model.loading.tensor_names import HF_NAMES, ModelLoadError, checked, rope_rows

log = logging.getLogger(__name__)

# Buffers some exports include that carry no weights.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path} not found") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: unreadable config: {e}") from e


def read_hf_config(directory: Path) -> ModelConfig:
    """config.json (plus generation_config.json's eos ids, which R1 distills set) -> ModelConfig."""
    cfg_path = directory / "config.json"
    try:
        config = config_from_hf(_read_json(cfg_path))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{cfg_path}: {type(e).__name__}: {e}") from e
    gen_path = directory / "generation_config.json"
    if gen_path.is_file():
        try:
            eos = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            eos = None
        extra = eos if isinstance(eos, list) else ([] if eos is None else [eos])
        merged = tuple(dict.fromkeys([*config.eos_token_ids, *(int(e) for e in extra)]))
        config = dataclasses.replace(config, eos_token_ids=merged)
    return config


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint: one file, or the shards named by the index."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{index}: unreadable shard index: {e}") from e
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise ModelLoadError(f"{index} names shard {f.name}, which is missing")
        return files
    single = directory / SINGLE_FILE
    if single.is_file():
        return [single]
    raise ModelLoadError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found")


def fp8_block_size(directory: Path) -> tuple[int, int] | None:
    """The FP8 scale block of the checkpoint's quantization_config; None when its weights are plain floats."""
    cfg_path = directory / "config.json"
    try:
        return fp8.block_size(_read_json(cfg_path).get("quantization_config"))
    except ValueError as e:
        raise ModelLoadError(f"{cfg_path}: {e}") from e


class HFCheckpoint:
    """An HF directory opened for reading: its config now, its tensors streamed by `tensors()`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.config = read_hf_config(self.directory)
        self.fp8_block = fp8_block_size(self.directory)
        self.files = weight_files(self.directory)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(our name, tensor) for every weight the model uses, one at a time, shard by shard in file order.

        Tensors keep their stored dtype (bf16, fp32), except FP8 weights, which arrive dequantized to fp32.
        Raises ModelLoadError naming the shard and tensor for unknown names and corrupt or truncated files.
        """
        config, n_layers = self.config, self.config.n_layers
        rows = rope_rows(config) if config.rope_interleaved else {}
        shard_of = self._shard_of_every_tensor()
        skipped_layers: set[int] = set()
        skipped = 0
        for path in self.files:
            with self._open(path) as shard:
                for name in shard.names():
                    if name.endswith(_IGNORED_SUFFIXES) or name.endswith(fp8.SCALE_SUFFIX):
                        continue  # scales are read with their weight
                    layer = _LAYER.match(name)
                    if layer and int(layer.group(1)) >= n_layers:
                        skipped_layers.add(int(layer.group(1)))  # DeepSeek's multi-token-prediction modules
                        skipped += 1
                        continue
                    ours = HF_NAMES.map(name)
                    if ours is None:
                        raise ModelLoadError(f"{path}: unexpected tensor {name!r} (not in the HF name table)")
                    if ours == "output.weight" and config.tie_embeddings:
                        continue  # tied checkpoints sometimes still store lm_head; it equals the embedding
                    tensor = self._read(shard, name)
                    if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                        tensor = self._dequantize(name, tensor, shard, shard_of)
                    layout = rows.get(ours.split(".", 2)[-1])
                    if layout is not None:
                        tensor = deinterleave_rows(tensor, *layout)
                    yield ours, tensor
        if skipped:
            log.info("%s: skipped %d tensors of %d multi-token-prediction layer(s) %s (not used for generation)",
                     self.directory, skipped, len(skipped_layers), sorted(skipped_layers))

    def _shard_of_every_tensor(self) -> dict[str, Path]:
        shard_of = {}
        for path in self.files:
            try:
                header, _ = read_header(path)
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"{path}: corrupt or truncated safetensors file: {e}") from e
            shard_of.update((name, path) for name in header if name != "__metadata__")
        return shard_of

    @staticmethod
    def _open(path: Path) -> TensorFile:
        try:
            return TensorFile(path)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: corrupt or truncated safetensors file: {e}") from e

    @staticmethod
    def _read(shard: TensorFile, name: str) -> torch.Tensor:
        try:
            return shard.read(name)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{shard.path}: corrupt or truncated safetensors file at {name!r}: {e}") from e

    def _dequantize(self, name: str, weight: torch.Tensor, shard: TensorFile, shard_of: dict[str, Path]) -> torch.Tensor:
        if self.fp8_block is None:
            raise ModelLoadError(f"{shard.path}: tensor {name!r} is {weight.dtype} but config.json has no fp8 quantization_config")
        scale_name = name + fp8.SCALE_SUFFIX
        if scale_name not in shard_of:
            raise ModelLoadError(f"{shard.path}: fp8 tensor {name!r} has no {scale_name!r}")
        if scale_name in shard:
            scale = self._read(shard, scale_name)
        else:  # in another shard
            with self._open(shard_of[scale_name]) as other:
                scale = self._read(other, scale_name)
        try:
            return fp8.dequantize_blocks(weight, scale, self.fp8_block)
        except ValueError as e:
            raise ModelLoadError(f"{shard.path}: {name!r}: {e}") from e


def load_hf_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and every tensor (float32, our names) in memory; names, counts and shapes checked against the config."""
    checkpoint = HFCheckpoint(directory)
    tensors = checked(checkpoint.config, checkpoint.tensors(), checkpoint.directory)
    return checkpoint.config, {name: t.float() for name, t in tensors}
