"""Hugging Face checkpoint directory: config.json + (sharded) safetensors -> ModelConfig and a stream of our tensors.

What config.json's keys mean is model/loading/hf_config.py; this module reads the files.

A reader, and a leaf of the loader: `HFCheckpoint.tensors()` yields one tensor at a time under our
checkpoint names (model/loading/tensor_names.py), each read from its shard only when its turn comes, into memory of
its own (model/loading/safetensors_file.py: no memory map whose touched pages would pile up).
Along the way it block-dequantizes FP8 weights (model/loading/fp8.py), gathers a GPTQ/AWQ linear's packed tensors
(`qweight`, `qzeros`, `scales`, `g_idx`) into one group-quantized weight (model/loading/gptq.py), reorders DeepSeek's
interleaved rope rows into rotate-half layout, and skips multi-token-prediction layers, which generation does not use.
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
from model.loading.gptq import GroupQuantConfig, GroupQuantError, GroupQuantized, read_dir_quant_config
from model.loading.hf_config import config_from_hf
from model.loading.safetensors_file import TensorFile, read_header
from model.loading.tensor_names import HF_NAMES, ModelLoadError, checked, rope_rows

log = logging.getLogger(__name__)

# Buffers some exports include that carry no weights.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_QWEIGHT = ".qweight"  # a GPTQ/AWQ linear: <prefix>.qweight with <prefix>.qzeros, .scales (and GPTQ's .g_idx)
_QUANT_PARTS = (".qzeros", ".scales", ".g_idx")

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
    """The FP8 scale block of the checkpoint's quantization_config; None when its weights are plain floats or
    group-quantized (GPTQ/AWQ, `group_quant_config`)."""
    cfg_path = directory / "config.json"
    quantization_config = _read_json(cfg_path).get("quantization_config")
    if group_quant_config(directory) is not None:
        return None
    try:
        return fp8.block_size(quantization_config)
    except ValueError as e:
        raise ModelLoadError(f"{cfg_path}: {e}") from e


def group_quant_config(directory: Path) -> GroupQuantConfig | None:
    """A GPTQ/AWQ checkpoint's quantization settings (None for any other). Raises ModelLoadError for a variant we
    do not read, by name."""
    try:
        return read_dir_quant_config(directory, _read_json(directory / "config.json"))
    except GroupQuantError as e:
        raise ModelLoadError(str(e)) from e


class HFCheckpoint:
    """An HF directory opened for reading: its config now, its tensors streamed by `tensors()`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.config = read_hf_config(self.directory)
        self.fp8_block = fp8_block_size(self.directory)
        self.group_quant = group_quant_config(self.directory)
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
                    if self.group_quant is not None and name.endswith(_QUANT_PARTS):
                        continue  # read with their qweight
                    layer = _LAYER.match(name)
                    if layer and int(layer.group(1)) >= n_layers:
                        skipped_layers.add(int(layer.group(1)))  # DeepSeek's multi-token-prediction modules
                        skipped += 1
                        continue
                    quantized = self.group_quant is not None and name.endswith(_QWEIGHT)
                    ours = HF_NAMES.map(name.removesuffix(_QWEIGHT) + ".weight" if quantized else name)
                    if ours is None:
                        raise ModelLoadError(f"{path}: unexpected tensor {name!r} (not in the HF name table)")
                    if ours == "output.weight" and config.tie_embeddings:
                        continue  # tied checkpoints sometimes still store lm_head; it equals the embedding
                    if quantized:
                        yield ours, self._group_quantized(name.removesuffix(_QWEIGHT), shard, shard_of)
                        continue
                    tensor = self._read(shard, name)
                    if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                        tensor = self._dequantize(name, tensor, shard, shard_of)
                    layout = rows.get(ours.split(".", 2)[-1])
                    if layout is not None:
                        tensor = deinterleave_rows(tensor, *layout)
                    yield ours, tensor
        if skipped:
            log.info(
                "%s: skipped %d tensors of %d multi-token-prediction layer(s) %s (not used for generation)",
                self.directory,
                skipped,
                len(skipped_layers),
                sorted(skipped_layers),
            )

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

    def _companion(
        self, name: str, of: str, shard: TensorFile, shard_of: dict[str, Path], optional: bool = False
    ) -> torch.Tensor | None:
        """Tensor `name` that belongs with tensor `of` (a scale, zero points), from this shard or another."""
        if name not in shard_of:
            if optional:
                return None
            raise ModelLoadError(f"{shard.path}: tensor {of!r} has no {name!r}")
        if name in shard:
            return self._read(shard, name)
        with self._open(shard_of[name]) as other:  # in another shard
            return self._read(other, name)

    def _group_quantized(self, prefix: str, shard: TensorFile, shard_of: dict[str, Path]) -> GroupQuantized:
        """The GPTQ/AWQ tensors of the linear `prefix`, unpacked into one weight; errors name the tensor."""
        config, qweight_name = self.group_quant, prefix + _QWEIGHT
        qweight = self._read(shard, qweight_name)
        qzeros, scales = (
            self._companion(prefix + part, qweight_name, shard, shard_of) for part in (".qzeros", ".scales")
        )
        try:
            if config.method == "awq":
                return GroupQuantized.from_awq(qweight, qzeros, scales, config)
            g_idx = self._companion(prefix + ".g_idx", qweight_name, shard, shard_of, optional=True)
            return GroupQuantized.from_gptq(qweight, qzeros, scales, g_idx, config)
        except GroupQuantError as e:
            raise ModelLoadError(f"{shard.path}: {qweight_name!r}: {e}") from e

    def _dequantize(
        self, name: str, weight: torch.Tensor, shard: TensorFile, shard_of: dict[str, Path]
    ) -> torch.Tensor:
        if self.fp8_block is None:
            raise ModelLoadError(
                f"{shard.path}: tensor {name!r} is {weight.dtype} but config.json has no fp8 quantization_config"
            )
        scale = self._companion(name + fp8.SCALE_SUFFIX, name, shard, shard_of)
        try:
            return fp8.dequantize_blocks(weight, scale, self.fp8_block)
        except ValueError as e:
            raise ModelLoadError(f"{shard.path}: {name!r}: {e}") from e


def load_hf_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and every tensor (float32, our names) in memory; names, counts and shapes checked against the config."""
    checkpoint = HFCheckpoint(directory)
    tensors = checked(checkpoint.config, checkpoint.tensors(), checkpoint.directory)
    return checkpoint.config, {
        name: t.dequantize() if isinstance(t, GroupQuantized) else t.float() for name, t in tensors
    }
