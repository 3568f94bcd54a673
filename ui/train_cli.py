"""`r1 train ...`: build training data from verified solutions, and fine-tune a LoRA adapter on it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path


def add_train_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser("train", parents=[common], help="training data from verified solutions, LoRA fine-tuning")
    actions = train.add_subparsers(dest="train_command", required=True)

    data = actions.add_parser("data", parents=[common], help="build training paths in the step format solve decodes")
    sources = data.add_subparsers(dest="data_source", required=True)
    gsm8k = sources.add_parser(
        "gsm8k",
        parents=[common],
        help="GSM8K's worked solutions: annotations as Calc steps, "
        "'#### n' as the answer; the 500-problem dev split is never written",
    )
    gsm8k.add_argument(
        "file",
        nargs="?",
        help="GSM8K train.jsonl (default: $R1_GSM8K, else "
        "../shared/datasets/gsm8k/train.jsonl beside the working directory or the project)",
    )
    gsm8k.add_argument("--out", default="gsm8k-sft.jsonl", help="where to write the rows (default gsm8k-sft.jsonl)")

    search = sources.add_parser(
        "search",
        parents=[common],
        help="expert iteration: the model's own sampled paths "
        "that reach the gold answer with every step valid, deduplicated",
    )
    search.add_argument(
        "--problems",
        help="JSONL of {question, answer} (GSM8K's '#### n' answers too; default: GSM8K "
        "train less the dev split, found as for `gsm8k`)",
    )
    search.add_argument("--limit", type=int, help="the first N problems")
    search.add_argument("--samples", type=int, default=8, help="paths sampled per problem (default 8)")
    search.add_argument("--tokens", type=int, default=2400, help="generated tokens per problem (default 2400)")
    search.add_argument("--temperature", type=float, default=0.8)
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", default="search-sft.jsonl", help="where to write the rows (default search-sft.jsonl)")
    search.add_argument("--model", help="the sampler: 'default', a .gguf file or an HF directory ($R1_MODEL)")
    search.add_argument("--quant", help="its precision ($R1_QUANT)")
    search.add_argument("--adapter", help="a LoRA adapter on it, e.g. the last round's ($R1_ADAPTER)")
    search.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    search.add_argument("--cache-dir", help="the engine's weight cache")
    search.add_argument(
        "--teacher-base-url",
        help="sample from this OpenAI-compatible server instead (vLLM, SGLang, "
        "another `r1 serve`): free-text steps, parsed and checked the same way",
    )
    search.add_argument("--teacher-model", help="the server's model (default: the first it lists)")

    values = sources.add_parser(
        "values",
        parents=[common],
        help="a value model's data: greedy and sampled rollouts "
        "of training problems, each path labelled by whether it reached the gold answer",
    )
    values.add_argument(
        "--problems",
        help="JSONL of {question, answer} (default: GSM8K train less the dev split); dev-split questions are refused",
    )
    values.add_argument("--limit", type=int, help="the first N problems")
    values.add_argument("--skip", type=int, default=0, help="start after the first N problems (held-out sets)")
    values.add_argument(
        "--samples", type=int, default=4, help="sampled paths per problem, besides the greedy one (default 4)"
    )
    values.add_argument("--tokens", type=int, default=2400, help="generated tokens per problem (default 2400)")
    values.add_argument("--temperature", type=float, default=0.8)
    values.add_argument("--seed", type=int, default=0)
    values.add_argument("--out", default="values.jsonl", help="where to write the rows (default values.jsonl)")
    _add_engine_flags(values)

    value = actions.add_parser(
        "value",
        parents=[common],
        help="fit a value head (final hidden state -> reaches the "
        "answer) on `r1 train data values` rows; saved beside the adapter",
    )
    value.add_argument("--data", required=True, help="JSONL rows from `r1 train data values`")
    value.add_argument(
        "--out",
        required=True,
        help="the directory to save value_head.safetensors + value_head.json in: the adapter's, so `solve` finds it",
    )
    value.add_argument(
        "--label",
        choices=("final", "on_track"),
        default="final",
        help="final: each prefix carries its path's outcome (default); on_track: each prefix whether "
        "every value it computed is one the worked solution computes",
    )
    value.add_argument("--hidden", type=int, default=64, help="the MLP's hidden width; 0 = a linear head (default 64)")
    value.add_argument("--epochs", type=int, default=300, help="full-batch Adam steps (default 300)")
    value.add_argument("--lr", type=float, default=3e-3)
    value.add_argument("--weight-decay", type=float, default=1e-2)
    value.add_argument(
        "--heldout", type=float, default=0.2, help="share of problems held out for the figures (default 0.2)"
    )
    value.add_argument("--seed", type=int, default=0)
    _add_engine_flags(value)

    sft = actions.add_parser("sft", parents=[common], help="LoRA fine-tuning on CPU in bf16; resumes after a kill")
    sft.add_argument("--data", required=True, help="JSONL rows {prompt, steps}, e.g. from `r1 train data gsm8k`")
    sft.add_argument("--out", required=True, help="the adapter directory (PEFT format; also its checkpoint and log)")
    sft.add_argument("--model", default="default", help="the base: 'default', a .gguf file or an HF directory")
    sft.add_argument("--cache-dir", help="the engine's weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")
    sft.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    sft.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (default 32)")
    sft.add_argument(
        "--targets",
        default="q_proj,v_proj",
        help="comma-separated modules (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)",
    )
    sft.add_argument("--epochs", type=int, default=1)
    sft.add_argument("--lr", type=float, default=2e-4, help="peak learning rate, decaying linearly to 0")
    sft.add_argument("--batch-size", type=int, default=4)
    sft.add_argument("--max-tokens", type=int, default=768, help="skip rows longer than this")
    sft.add_argument("--limit", type=int, help="train on this many rows (a seeded sample)")
    sft.add_argument("--eval-rows", type=int, default=64, help="rows held out for the per-epoch evaluation")
    sft.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints")
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    sft.add_argument(
        "--init-adapter", help="start from this adapter (PEFT format, same rank/alpha/targets), e.g. a second pass"
    )


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="the policy: 'default', a .gguf file or an HF directory ($R1_MODEL)")
    parser.add_argument("--quant", help="its precision ($R1_QUANT)")
    parser.add_argument("--adapter", help="the reasoning adapter the steps run with ($R1_ADAPTER)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--cache-dir", help="the engine's weight cache")


def _settings(args: argparse.Namespace):
    """Settings from the environment with this command's engine flags over them."""
    from app import Settings

    return Settings.from_env().override(
        model=args.model, quant=args.quant, adapter=args.adapter, threads=args.threads, cache_dir=args.cache_dir
    )


def _progress(line: str) -> None:
    print(f"r1 train: {line}", file=sys.stderr, flush=True)


def _report_from_engine(settings, job: Callable) -> int:
    """Load the engine for `settings`, print `job(engine)`'s report as JSON, and close the engine whatever happens."""
    from app import load_engine

    engine = load_engine(settings)
    try:
        report = job(engine)
    finally:
        engine.close()
    print(json.dumps(report, indent=2))
    return 0


def _training_problems(path: str | None, rows: list[dict], limit: int | None, skip: int = 0) -> list[dict]:
    """{question, answer[, solution]} for the problems of the JSONL file `path` (or of `rows` without one): the
    answer is a GSM8K solution's final number, and the solution is kept where there is one."""
    from app.train.gsm8k import final_answer
    from app.train.jsonl import read_jsonl

    def problem(row: dict) -> dict:
        answer = str(row["answer"])
        final = final_answer(answer)
        return {
            "question": str(row["question"]),
            "answer": final or answer.strip(),
            **({"solution": answer} if final else {}),
        }

    if path:
        return read_jsonl(Path(path), problem, "a problem ({question, answer})")[skip:][:limit]
    return [problem(row) for row in rows[skip:][:limit]]


def cmd_train(args: argparse.Namespace) -> int:
    if args.train_command == "data" and args.data_source == "search":
        return _search_data(args)
    if args.train_command == "data" and args.data_source == "values":
        return _value_data(args)
    if args.train_command == "value":
        return _value(args)
    if args.train_command == "data":
        from app.train.gsm8k import build

        report = build(args.file, args.out)
        print(json.dumps(report, indent=2))
        print(
            f"r1 train: {report['kept']} of {report['rows'] - report['dev_held_out']} solutions kept "
            f"({report['dev_held_out']} dev problems held out) -> {report['out']}",
            file=sys.stderr,
        )
        return 0
    from app.train.sft import SFTConfig, train

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    train(
        SFTConfig(
            data=args.data,
            out=args.out,
            model=args.model,
            cache_dir=args.cache_dir,
            rank=args.rank,
            alpha=args.alpha,
            targets=targets,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            limit=args.limit,
            eval_rows=args.eval_rows,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            threads=args.threads,
            init_adapter=args.init_adapter,
        )
    )
    return 0


def _search_data(args: argparse.Namespace) -> int:
    from app.train.gsm8k import find_gsm8k, read_gsm8k, split_dev
    from app.train.search_data import SearchDataConfig, build

    problems = _training_problems(
        args.problems, [] if args.problems else split_dev(read_gsm8k(find_gsm8k()))[0], args.limit
    )
    settings = _settings(args)
    if args.teacher_base_url:
        settings = settings.override(backend="openai", base_url=args.teacher_base_url, remote_model=args.teacher_model)
    config = SearchDataConfig(samples=args.samples, tokens=args.tokens, temperature=args.temperature, seed=args.seed)
    return _report_from_engine(settings, lambda engine: build(engine, problems, args.out, config, progress=_progress))


def _value_data(args: argparse.Namespace) -> int:
    from app.train.gsm8k import find_gsm8k, read_gsm8k, split_dev
    from app.train.value_data import ValueDataConfig, build

    try:
        train, dev = split_dev(read_gsm8k(find_gsm8k()))
    except FileNotFoundError:
        if not args.problems:
            raise
        train, dev = [], []  # no GSM8K here: nothing to check the problems against
    problems = _training_problems(args.problems, train, args.limit, skip=args.skip)
    config = ValueDataConfig(samples=args.samples, tokens=args.tokens, temperature=args.temperature, seed=args.seed)
    dev_questions = frozenset(r["question"].strip() for r in dev)
    return _report_from_engine(
        _settings(args),
        lambda engine: build(engine, problems, args.out, config, dev_questions=dev_questions, progress=_progress),
    )


def _value(args: argparse.Namespace) -> int:
    from app.train.value import ValueTrainConfig, train_value

    config = ValueTrainConfig(
        data=args.data,
        out=args.out,
        hidden=args.hidden,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        heldout=args.heldout,
        seed=args.seed,
        label=args.label,
    )
    return _report_from_engine(_settings(args), lambda engine: train_value(engine, config, progress=_progress))
