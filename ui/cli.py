"""`r1`: the command line. Parses flags, calls `app`, renders the result; nothing else lives here."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import socket
import sys
import time
from pathlib import Path

from app import Settings, load_engine, open_support, solve
from model import LOAD_QUANTS
from model.tokenizer import split_reasoning
from ui.memory_cli import add_memory_parser, cmd_memory

log = logging.getLogger("r1")

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
BENCHMARKS = ("decode", "serving", "reasoning", "memory", "load")

UI_PORT = 7860
SERVE_PORT = 8000


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (defaults from R1_* environment variables)")
    group.add_argument("--model", help="'default' (bundled SmolLM2-135M), a .gguf file or an HF model directory")
    group.add_argument(
        "--quant", choices=LOAD_QUANTS,
        help="weight precision: auto (default) = the fastest that keeps what the file holds (int4 for Q4 GGUFs, "
        "int8 for other quantized GGUFs, fp32 for float checkpoints); fp32 = full precision",
    )
    group.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    group.add_argument("--cache-dir", help="repacked-weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")
    group.add_argument("--kv-cache-mb", type=float, help="KV-cache capacity in MiB, prefix cache included (default 1024)")


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, help="most tokens to generate")
    group.add_argument("--temperature", type=float, help="0 = greedy (default)")
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--seed", type=int, help="seed for sampling (temperature > 0)")


def _add_listen_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    group = parser.add_argument_group("listening")
    group.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only; $R1_HOST)")
    group.add_argument("--port", type=int, help=f"port (default {default_port}; $R1_PORT)")


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

    ui = sub.add_parser("ui", parents=[common], help="the web UI (chat, settings) in your browser")
    _add_listen_flags(ui, UI_PORT)
    _add_model_flags(ui)
    _add_sampling_flags(ui)

    serve = sub.add_parser("serve", parents=[common], help="OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions")
    _add_listen_flags(serve, SERVE_PORT)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every call (default: $R1_API_KEY, or none)")
    _add_model_flags(serve)
    _add_sampling_flags(serve)

    support = sub.add_parser("support", parents=[common], help="the customer-service bot over the order database")
    support.add_argument("--data-dir", help="order database and transcripts (default: $R1_DATA_DIR or ~/.local/share/r1-reasoner)")
    _add_model_flags(support)
    add_memory_parser(sub, common)

    bench = sub.add_parser("bench", parents=[common], help="run a benchmark of bench/ (its own --help lists its flags)")
    bench.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the benchmark")

    solve_cmd = sub.add_parser("solve", parents=[common], help="search for a verified answer (MCTS over tool-using steps)")
    solve_cmd.add_argument("problem", help="the problem text ('-' reads stdin)")
    solve_cmd.add_argument("--task-type", choices=["auto", "math", "code"], default="auto")
    solve_cmd.add_argument("--strategy", choices=["mcts", "self_consistency", "best_of_n", "greedy"], default="mcts")
    solve_cmd.add_argument("--budget", type=int, help="search iterations (default: $R1_SEARCH_BUDGET, or 8)")
    solve_cmd.add_argument("--json", action="store_true", help="print the whole solution (steps, tree, reward) as JSON")
    _add_model_flags(solve_cmd)
    solve_cmd.add_argument("--seed", type=int, help="the search's seed (default 0): the same seed gives the same result")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().override(
        model=args.model,
        quant=args.quant,
        threads=args.threads,
        cache_dir=args.cache_dir,
        kv_cache_mb=getattr(args, "kv_cache_mb", None),
        max_new_tokens=getattr(args, "max_new_tokens", None),
        temperature=getattr(args, "temperature", None),
        top_p=getattr(args, "top_p", None),
        top_k=getattr(args, "top_k", None),
        repetition_penalty=getattr(args, "repetition_penalty", None),
        seed=getattr(args, "seed", None),
        system_prompt=getattr(args, "system", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        api_key=getattr(args, "api_key", None),
        data_dir=getattr(args, "data_dir", None),
    )


def _load(settings: Settings):
    start = time.perf_counter()
    engine = load_engine(settings)
    log.info("loaded %s (%s) in %.1f s", settings.model, settings.quant, time.perf_counter() - start)
    return engine


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    engine = _load(settings)
    request = engine.submit(prompt, **settings.sampling(), stop=tuple(args.stop or ()))
    if args.stream:
        for delta in request.stream():
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(request.result().text)
    done = request.result()
    log.info("%d prompt tokens, %d generated, %s, %.2f s", done.prompt_tokens, done.generated_tokens, done.finish_reason, done.seconds)
    if done.finish_reason == "error":
        print(f"r1: error: generation failed: {done.error}", file=sys.stderr)
        return 1
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"r1 chat — loading {settings.model} ({settings.quant})...", file=sys.stderr)
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


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening, or a one-line ValueError (port in use, unknown address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    return sock


def _warn_if_exposed(host: str, what: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"r1: warning: {what} listens on {host}, reachable from other machines", file=sys.stderr)


def cmd_ui(args: argparse.Namespace) -> int:
    settings = _settings(args)
    port = settings.port or UI_PORT
    _listen(settings.host, port).close()  # fail fast, before the model loads; Gradio binds it again
    _warn_if_exposed(settings.host, "the web UI")
    from ui import web  # Gradio is imported only here: it is slow to import and sets up its environment

    web.launch(settings.override(port=port))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.runtime import Runtime
    from ui import server

    settings = _settings(args)
    port = settings.port or SERVE_PORT
    sock = _listen(settings.host, port)
    if not settings.api_key:
        _warn_if_exposed(settings.host, "the API (without --api-key)")
    runtime = Runtime(settings)
    print(f"r1 serve — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    runtime.engine  # load now: a missing model is an error before we say we are listening
    print(f"r1 serve: OpenAI-compatible API at http://{settings.host}:{port}/v1 (model {settings.model!r})", file=sys.stderr)
    try:
        server.serve(runtime, sock, api_key=settings.api_key)
    finally:
        runtime.close()
    return 0


def cmd_support(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"r1 support — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    bot = open_support(settings, _load(settings))
    session = f"cli-{time.time_ns()}"
    interactive = sys.stdin.isatty()
    print("You are the customer. /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("customer> " if interactive else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if not text:
            continue
        reply = bot.reply(session, text)
        for call in reply.tool_calls:
            print(f"  [{call.name} {call.arguments} -> {call.result[:120]}]", file=sys.stderr)
        print(f"bot> {reply.text}", flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    script = BENCH_DIR / f"{args.name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: the benchmarks live in the source checkout's bench/ folder")
    sys.argv = [str(script), *args.args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    import json
    import textwrap

    settings = _settings(args)
    problem = sys.stdin.read() if args.problem == "-" else args.problem
    print(f"r1 solve — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    engine = _load(settings)
    solution = solve(problem, task_type=args.task_type, strategy=args.strategy,
                     budget=args.budget or settings.search_budget, seed=settings.seed, engine=engine,
                     on_progress=lambda line: print(f"r1 solve: {line}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(solution.to_dict(), indent=2))
        return 0
    for step in solution.steps:
        print(textwrap.indent(step["text"], "  "))
    reward = ", ".join(f"{k} {v:.2f}" for k, v in solution.reward.items())
    answer = solution.answer if solution.answer is not None else "(none found)"
    print(f"answer:\n{textwrap.indent(answer, '  ')}" if "\n" in answer else f"answer: {answer}")
    print(f"reward: {reward}; tokens: {solution.tokens['generated']} generated, {solution.tokens['reused']} of "
          f"{solution.tokens['prompt']} prompt tokens from cache; {solution.seconds:.1f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {"generate": cmd_generate, "chat": cmd_chat, "ui": cmd_ui, "serve": cmd_serve, "support": cmd_support,
               "memory": cmd_memory, "solve": cmd_solve, "bench": cmd_bench}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"r1: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
