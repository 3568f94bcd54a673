"""`r1 export --format safetensors`: the engine's checkpoint written as an HF model directory (config.json,
model.safetensors, tokenizer files), in float32: a GGUF such as the default Q4_1 SmolLM2 becomes its dequantized
weights, which `r1 quantize` (app/quantize.py) and any transformers tool can read.

The weights and config come through app/train/hf_base.py, the same transformers model training wraps; the
tokenizer is the engine's own, saved in transformers' layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from app.train.hf_base import hf_model

EXPORT_FORMATS = ("safetensors",)


def export_checkpoint(
    source: str | Path, out: str | Path, *, fmt: str = "safetensors", cache_dir: str | Path | None = None
) -> Path:
    """Write `source` ("default", a GGUF, an HF directory) to the new or empty directory `out` as an HF float32
    checkpoint. Raises ValueError for an unknown format, a non-empty `out`, or a model family transformers'
    Llama/Qwen2 classes do not hold; ModelLoadError for a bad source."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not an empty directory")
    module, tokenizer = hf_model(source, cache_dir=cache_dir, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(out))
    tokenizer.save_pretrained(out)
    return out
