"""`r1 quantize`: a float HF checkpoint directory quantized with GPTQ (or round-to-nearest) into a GPTQ directory
that `model.load` runs on its int4 kernel (model/quantize/, model/loading/gptq.py)."""

from __future__ import annotations

from pathlib import Path

from model.quantize.checkpoint import Calibration, QuantizeResult, quantize_checkpoint
from model.quantize.gptq import QuantSpec


def quantize(
    source: str | Path,
    out: str | Path,
    *,
    method: str = "gptq",
    bits: int = 4,
    group_size: int = 128,
    act_order: bool = False,
    sym: bool = True,
    calibration_file: str | Path | None = None,
    samples: int = 128,
    seq_len: int = 512,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize `source` into `out`; `calibration_file` None uses the shipped public-domain text (GPTQ only).
    Raises ValueError (ModelLoadError among them) for bad settings or sources, OSError for an unreadable file."""
    spec = QuantSpec(bits=bits, group_size=group_size, act_order=act_order, sym=sym)
    calibration = Calibration.from_file(calibration_file, samples=samples, seq_len=seq_len)
    return quantize_checkpoint(
        source, out, spec, method=method, calibration=calibration, cache_dir=cache_dir, progress=progress
    )
