"""`r1 export` and `r1 quantize`: write the model as an HF float checkpoint, and quantize one with GPTQ."""

from __future__ import annotations

import argparse
import sys

from app.export import EXPORT_FORMATS, export_checkpoint
from app.quantize import quantize


def add_quantize_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser(
        "export",
        parents=[common],
        help="write a model as an HF float32 checkpoint directory (config.json, model.safetensors, tokenizer files)",
    )
    export.add_argument(
        "--model",
        default="default",
        help="'default' (the bundled SmolLM2 GGUF), a .gguf file or an HF directory (default: default)",
    )
    export.add_argument("--format", dest="fmt", choices=EXPORT_FORMATS, default="safetensors")
    export.add_argument("--out", required=True, help="a new or empty directory")
    export.add_argument("--cache-dir", help="the weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")

    q = sub.add_parser(
        "quantize",
        parents=[common],
        help="quantize an HF float checkpoint with GPTQ (or RTN) into the "
        "standard GPTQ layout, which `--model DIR` then runs on the int4 kernel",
    )
    q.add_argument("model_dir", help="an HF float checkpoint directory (e.g. from `r1 export --format safetensors`)")
    q.add_argument("--method", choices=["gptq", "rtn"], default="gptq")
    q.add_argument("--bits", type=int, choices=[4, 3, 8], default=4, help="(default 4; only 4-bit runs on our kernels)")
    q.add_argument("--group-size", type=int, choices=[32, 64, 128], default=128)
    q.add_argument("--act-order", action="store_true", help="GPTQ: quantize columns by decreasing Hessian diagonal")
    q.add_argument(
        "--asym",
        action="store_true",
        help="a zero point per group (default: symmetric, which every GPTQ kernel runs; ours runs both)",
    )
    q.add_argument(
        "--calib", help="calibration text file (default: the shipped public-domain text, 'A Scandal in Bohemia')"
    )
    q.add_argument("--samples", type=int, default=128, help="calibration windows at most (default 128)")
    q.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window (default 512)")
    q.add_argument("--out", required=True, help="a new or empty directory")
    q.add_argument("--cache-dir", help="the weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")


def cmd_export(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.model, args.out, fmt=args.fmt, cache_dir=args.cache_dir)
    print(f"wrote {out}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    result = quantize(
        args.model_dir,
        args.out,
        method=args.method,
        bits=args.bits,
        group_size=args.group_size,
        act_order=args.act_order,
        sym=not args.asym,
        calibration_file=args.calib,
        samples=args.samples,
        seq_len=args.seq_len,
        cache_dir=args.cache_dir,
    )
    calibrated = f", {result.calibration_tokens} calibration tokens" if args.method == "gptq" else ""
    print(
        f"wrote {result.out}: {result.linears} linears, {args.method} {args.bits}-bit g{args.group_size}"
        f"{' act-order' if args.act_order else ''}{' asym' if args.asym else ''}{calibrated}, {result.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
