"""`r1`: the command line. Parses flags, calls `app`, renders the result; nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from app import Settings, load_engine
from model.tokenizer import split_reasoning
from ui.memory_cli import add_memory_parser, cmd_memory

log = logging.getLogger("r1")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (defaults from R1_* environment variables)")
    group.add_argument("--model", help="'default' (bundled SmolLM2-135M), a .gguf file or an HF model directory")
    group.add_argument("--quant", choices=["int8", "int4"], help="weight quantization (default: none, fp32)")
    group.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    group.add_argument("--cache-dir", help="repacked-weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, help="most tokens to generate")
    group.add_argument("--temperature", type=float, help="0 = greedy (default)")
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--seed", type=int, help="seed for sampling (temperature > 0)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log what is happening to stderr")
    parser = argparse.ArgumentParser(
        prog="r1", description="r1-reasoner: local reasoning on its own inference engine", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", parents=[common], help="continue a prompt; prints only the continuation")
    gen.add_argument("--prompt", required=True, help="text to continue ('-' reads stdin)")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument("--stop", action="append", help="stop before this string (repeatable)")
    _add_model_flags(gen)
    _add_sampling_flags(gen)

    chat = sub.add_parser("chat", parents=[common], help="streaming terminal chat (/reset clears history, /exit or Ctrl-D quits)")
    chat.add_argument("--system", help="system prompt")
    _add_model_flags(chat)
    _add_sampling_flags(chat)
    add_memory_parser(sub, common)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().override(
        model=args.model,
        quant=args.quant,
        threads=args.threads,
        cache_dir=args.cache_dir,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        system_prompt=getattr(args, "system", None),
    )


def _load(settings: Settings):
    start = time.perf_counter()
    engine = load_engine(settings)
    log.info("loaded %s (%s) in %.1f s", settings.model, settings.quant or "fp32", time.perf_counter() - start)
    return engine


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    engine = _load(settings)
    sampling = settings.sampling() | {"stop": tuple(args.stop or ())}
    if args.stream:
        for delta in engine.stream(prompt, **sampling):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(engine.generate(prompt, **sampling))
    stats = engine.last_stats
    log.info("%d prompt tokens, %d generated", stats.prompt_tokens, stats.generated_tokens)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"r1 chat — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    engine = _load(settings)
    interactive = sys.stdin.isatty()
    print("Type a message. /reset clears the history, /exit or Ctrl-D quits.", file=sys.stderr)
    history: list[dict[str, str]] = [{"role": "system", "content": settings.system_prompt}]
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = history[:1]
            print("(history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        sys.stdout.write("r1> ")
        pieces = []
        try:
            for delta in engine.chat(history, stream=True, **settings.sampling()):
                pieces.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [interrupted]")
        except ValueError as err:  # e.g. the conversation outgrew the context window
            print(f"\nerror: {err}", file=sys.stderr)
            history.pop()
            continue
        sys.stdout.write("\n")
        _, answer = split_reasoning("".join(pieces))
        history.append({"role": "assistant", "content": answer})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {"generate": cmd_generate, "chat": cmd_chat, "memory": cmd_memory}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"r1: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
