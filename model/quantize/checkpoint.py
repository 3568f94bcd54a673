"""Quantize an HF float checkpoint directory into a GPTQ checkpoint directory (`r1 quantize`).

The model is loaded in float32 through our own loader and run block by block over calibration windows: block i's
linear inputs are measured (a Hessian per Linear, the fused q/k/v and gate/up each once, since they read the same
input and GPTQ treats rows independently), its linears are quantized (model/quantize/gptq.py), and the block is run
again with the quantized weights to give block i+1 its inputs, so each block's errors are measured on the inputs the
quantized model really feeds it. Round-to-nearest needs no calibration.

The output is the standard GPTQ layout (model/loading/gptq.py): `<linear>.qweight`/`.qzeros`/`.scales`/`.g_idx` per
quantized linear under HF names, everything else (embeddings, norms, an untied LM head) in fp16, config.json with
`quantization_config` and a `quantize_config.json`, and the source's tokenizer and generation files, so transformers,
optimum and gptqmodel read it as well as `model.load`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from model import build_transformer
from model.layers.linear import Linear
from model.layers.transformer import Transformer
from model.loading.checkpoint import load_checkpoint
from model.loading.gptq import QUANTIZE_CONFIG, GroupQuantConfig, pack_rows
from model.loading.hf_checkpoint import (
    INDEX_FILE,
    SINGLE_FILE,
    fp8_block_size,
    group_quant_config,
)
from model.loading.tensor_names import HF_NAMES, ModelLoadError, expected_shapes
from model.quantize.gptq import METHODS, Quantized, QuantSpec, gptq, rtn

CALIBRATION_TEXT = Path(__file__).parent / "data" / "calibration.txt"  # see data/SOURCE.md
QUANTIZABLE_ARCHS = ("llama", "qwen2")  # dense GQA models; MLA/MoE layers have parts GPTQ files do not name alike


@dataclass(frozen=True)
class Calibration:
    """The calibration set: up to `samples` disjoint windows of `seq_len` tokens of `text`."""

    text: str
    samples: int = 128
    seq_len: int = 512

    def __post_init__(self) -> None:
        if self.samples < 1 or self.seq_len < 16:
            raise ValueError(f"calibration needs at least 1 window of 16 tokens, not {self.samples} of {self.seq_len}")

    @classmethod
    def from_file(cls, path: str | Path | None = None, samples: int = 128, seq_len: int = 512) -> Calibration:
        """`path` (None: the shipped calibration text). Raises OSError/UnicodeDecodeError naming a bad file."""
        path = Path(path) if path is not None else CALIBRATION_TEXT
        return cls(path.read_text(encoding="utf-8"), samples, seq_len)

    def windows(self, encode: Callable[[str], list[int]]) -> list[list[int]]:
        ids = encode(self.text)
        windows = [ids[i : i + self.seq_len] for i in range(0, len(ids) - self.seq_len + 1, self.seq_len)][
            : self.samples
        ]
        if not windows:
            raise ValueError(f"the calibration text is {len(ids)} tokens; one window needs {self.seq_len}")
        return windows


@dataclass
class QuantizeResult:
    out: Path
    linears: int  # checkpoint linears written in GPTQ form
    calibration_tokens: int
    seconds: float


def quantize_checkpoint(
    source: str | Path,
    out: str | Path,
    spec: QuantSpec,
    method: str = "gptq",
    calibration: Calibration | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize the HF float checkpoint `source` (a directory) into `out` (new or empty) with `method` ("gptq" or
    "rtn"); `calibration` defaults to the shipped text. Raises ModelLoadError for a source we cannot quantize and
    ValueError for a bad spec or output directory; nothing is written to `out` before the weights are done."""
    started = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    source, out = Path(source), Path(out)
    _check_source(source)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not an empty directory")
    checkpoint = load_checkpoint(source, cache_dir=cache_dir)
    config = checkpoint.config
    if config.arch not in QUANTIZABLE_ARCHS:
        raise ModelLoadError(
            f"{source}: quantizing {config.arch} models is not supported (supported: {', '.join(QUANTIZABLE_ARCHS)})"
        )
    model = build_transformer(config, checkpoint.tensors)  # float32, q/k/v and gate/up fused as the engine runs them
    windows = (
        (calibration or Calibration.from_file()).windows(lambda text: checkpoint.tokenizer.encode(text, add_bos=False))
        if method == "gptq"
        else []
    )
    shapes = expected_shapes(config)
    sources = {
        f"{prefix}.{fused}": tuple(f"{prefix}.{part}" for part in parts)  # fused Linear -> its checkpoint rows
        for prefix, module in model.layers[0].named_modules()
        for fused, parts in getattr(module, "checkpoint_sources", dict)().items()
    }
    for name, shape in shapes.items():
        if _is_layer_linear(name):
            _check_packable(name, shape, spec.bits)
    quantized = _quantize_blocks(model, windows, spec, method, progress)

    tensors: dict[str, torch.Tensor] = {}
    inverse = HF_NAMES.inverse()
    for name, result in quantized.items():
        start = 0
        for part in _parts(name, sources):
            rows = shapes[part][0]
            prefix = inverse.map(part).removesuffix(".weight")
            tensors.update(_gptq_tensors(prefix, result, start, start + rows, spec.bits))
            start += rows
    written = {p for name in quantized for p in _parts(name, sources)}
    for name, tensor in checkpoint.tensors.items():
        if name not in written:
            tensors[inverse.map(name)] = tensor.half()
    _write(source, out, tensors, GroupQuantConfig("gptq", spec.bits, spec.group_size, spec.act_order, spec.sym))
    return QuantizeResult(out, len(written), sum(map(len, windows)), time.perf_counter() - started)


def _check_source(source: Path) -> None:
    if not source.is_dir() or not (source / "config.json").is_file():
        raise ModelLoadError(
            f"{source}: not an HF checkpoint directory (config.json + safetensors); write the default "
            f"model as one with `r1 export --format safetensors --out DIR`"
        )
    if group_quant_config(source) is not None or fp8_block_size(source) is not None:
        raise ModelLoadError(f"{source}: already quantized; quantize a float checkpoint")


def _is_layer_linear(name: str) -> bool:
    return (
        name.startswith("layers.") and name.endswith("weight") and ("attention.w" in name or "feed_forward.w" in name)
    )


def _check_packable(name: str, shape: tuple[int, ...], bits: int) -> None:
    unit = 32 if bits == 3 else 32 // bits  # codes per packing unit (model/loading/gptq.py)
    if shape[1] % unit or shape[0] % unit:
        raise ModelLoadError(f"{name} of shape {list(shape)} does not pack into {bits}-bit GPTQ units of {unit}")


def _parts(name: str, sources: dict[str, tuple[str, ...]]) -> list[str]:
    layer, index, rest = name.split(".", 2)
    return [f"{layer}.{index}.{part}" for part in sources[rest]] if rest in sources else [name]


def _gptq_tensors(prefix: str, q: Quantized, start: int, end: int, bits: int) -> dict[str, torch.Tensor]:
    """Rows start:end of a quantized (fused) weight as one linear's GPTQ tensors."""
    codes, zeros = q.codes[start:end], q.zeros[:, start:end]
    return {
        prefix + ".qweight": pack_rows(codes.t(), bits),  # [K*bits/32, N]
        prefix + ".qzeros": pack_rows((zeros - 1).t(), bits).t().contiguous(),  # [G, N*bits/32], stored as zero - 1
        prefix + ".scales": q.scales[:, start:end].contiguous(),
        prefix + ".g_idx": q.g_idx.to(torch.int32),
    }


def _quantize_blocks(
    model: Transformer, windows: list[list[int]], spec: QuantSpec, method: str, progress: bool
) -> dict[str, Quantized]:
    """Quantize every block's Linears in place (their weights become the dequantized ones) -> results by name."""
    results: dict[str, Quantized] = {}
    seq_len = len(windows[0]) if windows else 1
    cache = model.new_cache(max_seq_len=seq_len, capacity_bytes=1 << 40)
    layout = cache.append([cache.new_sequence()], [seq_len])  # one window's step, reused: never committed
    cos, sin = model.rope.at(layout.positions)
    with torch.no_grad():
        hidden = [model.tok_embeddings(torch.tensor(w)) for w in windows]
    n = len(model.layers)
    for i, block in enumerate(model.layers):
        linears = {name: m for name, m in block.named_modules() if isinstance(m, Linear)}
        bar = tqdm(
            total=2 * len(hidden) + len(linears),
            desc=f"{method} layer {i + 1}/{n}",
            unit="step",
            leave=False,
            disable=None if progress else True,
            file=sys.stderr,
        )
        hessians = _hessians(block, linears, hidden, cos, sin, cache, layout, bar) if method == "gptq" else {}
        for name, linear in linears.items():
            weight = linear.weight.data.float()
            result = gptq(weight, hessians[name], spec) if method == "gptq" else rtn(weight, spec)
            linear.weight = nn.Parameter(result.weight, requires_grad=False)
            results[f"layers.{i}.{name}.weight"] = result
            bar.update()
        if method == "gptq":
            with torch.no_grad():
                hidden = [_step(block, x, cos, sin, cache, layout, bar) for x in hidden]
        bar.close()
    return results


def _step(block, x, cos, sin, cache, layout, bar) -> torch.Tensor:
    y = block(x, cos, sin, cache, layout)
    bar.update()
    return y


def _hessians(
    block, linears: dict[str, Linear], hidden: list[torch.Tensor], cos, sin, cache, layout, bar
) -> dict[str, torch.Tensor]:
    """2 X^T X / tokens of each Linear's input over the calibration windows (the block's output is not kept)."""
    sums = {name: torch.zeros(m.in_features, m.in_features) for name, m in linears.items()}
    tokens = {name: 0 for name in linears}

    def hook(name: str):
        def accumulate(module, args) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            sums[name].addmm_(x.t(), x)
            tokens[name] += x.shape[0]

        return accumulate

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.no_grad():
            for x in hidden:
                _step(block, x, cos, sin, cache, layout, bar)
    finally:
        for handle in handles:
            handle.remove()
    return {name: 2 * sums[name] / max(tokens[name], 1) for name in linears}


def _write(source: Path, out: Path, tensors: dict[str, torch.Tensor], quant: GroupQuantConfig) -> None:
    """The GPTQ directory: weights, config.json with quantization_config, quantize_config.json, the source's other files."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / SINGLE_FILE), metadata={"format": "pt", "quantized_by": "r1-reasoner"})
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = quant.to_json()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / QUANTIZE_CONFIG).write_text(json.dumps(quant.to_json(), indent=2) + "\n", encoding="utf-8")
    for path in source.iterdir():
        if (
            path.is_file()
            and path.name not in ("config.json", SINGLE_FILE, INDEX_FILE, QUANTIZE_CONFIG)
            and path.suffix != ".safetensors"
            and not path.name.startswith(".")
        ):
            shutil.copy2(path, out / path.name)
