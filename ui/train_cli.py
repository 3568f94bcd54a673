"""`r1 train ...`: build training data from verified solutions, and fine-tune a LoRA adapter on it."""

from __future__ import annotations

import argparse
import json
import sys


def add_train_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser("train", parents=[common], help="training data from verified solutions, LoRA fine-tuning")
    actions = train.add_subparsers(dest="train_command", required=True)

    data = actions.add_parser("data", parents=[common], help="build training paths in the step format solve decodes")
    sources = data.add_subparsers(dest="data_source", required=True)
    gsm8k = sources.add_parser("gsm8k", parents=[common], help="GSM8K's worked solutions: annotations as Calc steps, "
                               "'#### n' as the answer; the 500-problem dev split is never written")
    gsm8k.add_argument("file", nargs="?", help="GSM8K train.jsonl (default: $R1_GSM8K, else "
                       "../shared/datasets/gsm8k/train.jsonl beside the working directory or the project)")
    gsm8k.add_argument("--out", default="gsm8k-sft.jsonl", help="where to write the rows (default gsm8k-sft.jsonl)")

    sft = actions.add_parser("sft", parents=[common], help="LoRA fine-tuning on CPU in bf16; resumes after a kill")
    sft.add_argument("--data", required=True, help="JSONL rows {prompt, steps}, e.g. from `r1 train data gsm8k`")
    sft.add_argument("--out", required=True, help="the adapter directory (PEFT format; also its checkpoint and log)")
    sft.add_argument("--model", default="default", help="the base: 'default', a .gguf file or an HF directory")
    sft.add_argument("--cache-dir", help="the engine's weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")
    sft.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    sft.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (default 32)")
    sft.add_argument("--targets", default="q_proj,v_proj",
                     help="comma-separated modules (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)")
    sft.add_argument("--epochs", type=int, default=1)
    sft.add_argument("--lr", type=float, default=2e-4, help="peak learning rate, decaying linearly to 0")
    sft.add_argument("--batch-size", type=int, default=4)
    sft.add_argument("--max-tokens", type=int, default=768, help="skip rows longer than this")
    sft.add_argument("--limit", type=int, help="train on this many rows (a seeded sample)")
    sft.add_argument("--eval-rows", type=int, default=64, help="rows held out for the per-epoch evaluation")
    sft.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints")
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")


def cmd_train(args: argparse.Namespace) -> int:
    if args.train_command == "data":
        from app.train.gsm8k import build

        report = build(args.file, args.out)
        print(json.dumps(report, indent=2))
        print(f"r1 train: {report['kept']} of {report['rows'] - report['dev_held_out']} solutions kept "
              f"({report['dev_held_out']} dev problems held out) -> {report['out']}", file=sys.stderr)
        return 0
    from app.train.sft import SFTConfig, train

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    train(SFTConfig(data=args.data, out=args.out, model=args.model, cache_dir=args.cache_dir, rank=args.rank,
                    alpha=args.alpha, targets=targets, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    max_tokens=args.max_tokens, limit=args.limit, eval_rows=args.eval_rows,
                    checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads))
    return 0
