"""`r1`: the command line. Parses flags, calls `app`, renders the result; nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
import logging
import socket
import sys
import time
from pathlib import Path

from app import Settings, load_engine, open_support, solve
from app.engine import (
    ADAPTER_SCOPES,
    ATTENTION_MODES,
    BACKENDS,
    DEFAULT_EXPERT_CAPACITY,
    LOAD_QUANTS,
    TASK_TYPES,
    ExpertLoad,
    GenerationError,
    describe,
)
from ui.memory_cli import add_memory_parser, add_store_flags, cmd_memory
from ui.quantize_cli import add_quantize_parsers, cmd_export, cmd_quantize
from ui.train_cli import add_train_parser, cmd_train

log = logging.getLogger("r1")

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
BENCHMARKS = (
    "decode",
    "serving",
    "reasoning",
    "memory",
    "load",
    "support",
    "remote",
    "r1_arch",
    "long_context",
    "quantize",
)

UI_PORT = 7860
SERVE_PORT = 8000


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (defaults from R1_* environment variables)")
    group.add_argument("--model", help="'default' (bundled SmolLM2-135M), a .gguf file or an HF model directory")
    group.add_argument(
        "--quant",
        choices=LOAD_QUANTS,
        help="weight precision: auto (default) = the fastest that keeps what the file holds (int4 for Q4 GGUFs, "
        "int8 for other quantized GGUFs, fp32 for float checkpoints); fp32 = full precision",
    )
    group.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    group.add_argument("--cache-dir", help="repacked-weight cache (default: $R1_CACHE_DIR or ~/.cache/r1-reasoner)")
    group.add_argument(
        "--kv-cache-mb", type=float, help="KV-cache capacity in MiB, prefix cache included (default 1024)"
    )
    group.add_argument(
        "--expert-capacity",
        type=int,
        nargs="?",
        const=DEFAULT_EXPERT_CAPACITY,
        metavar="N",
        help=f"MoE models: at most N token assignments per expert per step (N = {DEFAULT_EXPERT_CAPACITY} if omitted), "
        "overflow going to each token's next-best expert; default off",
    )
    group.add_argument(
        "--adapter",
        metavar="DIR",
        help="a LoRA adapter in PEFT's format, e.g. from `r1 train sft` "
        "($R1_ADAPTER); by default only reasoning requests (solve's steps, the chat's tool turns) run "
        "with it, chat and plain generation keep the base model (see --adapter-scope)",
    )
    group.add_argument(
        "--adapter-scope",
        choices=ADAPTER_SCOPES,
        help="which requests the adapter applies to: reasoning (default), word-problems (the reasoning steps of "
        "maths word problems only) or all ($R1_ADAPTER_SCOPE)",
    )
    group.add_argument("--no-adapter", action="store_true", help="run without any adapter, whatever $R1_ADAPTER says")
    group.add_argument(
        "--router-bias",
        metavar="FILE",
        help="MoE models: per-task router biases (safetensors with tensors math, code, chat); default off",
    )
    group.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        help="dense (default); local: own 64-token block + previous blocks + the first; topk: local + the blocks "
        "with the highest q·k bound; auto: dense up to 512 tokens of context, topk above",
    )
    group.add_argument(
        "--attention-local-blocks", type=int, help="blocks before its own a query always sees (default 2)"
    )
    group.add_argument("--attention-topk", type=float, help="top-k blocks: a fraction (< 1, default 0.05) or a count")
    group.add_argument(
        "--fallback-full-attention", action="store_true", default=None, help="attend densely whatever --attention says"
    )


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend (the local engine, or an OpenAI-compatible server: docs/SCALING.md)")
    group.add_argument("--backend", choices=BACKENDS, help="where the model runs (default: local; $R1_BACKEND)")
    group.add_argument("--base-url", help="the server's API root, e.g. http://127.0.0.1:8000/v1 ($R1_BASE_URL)")
    group.add_argument("--api-key", dest="remote_api_key", help="the server's API key ($R1_REMOTE_API_KEY)")
    group.add_argument("--remote-model", help="the model to ask the server for (default: the first it lists)")


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
    group.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable; $R1_ALLOWED_HOSTS, "
        "comma-separated); the bound address and localhost always pass, other names are refused "
        "against DNS rebinding",
    )


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
    gen.add_argument(
        "--task-type", choices=TASK_TYPES, help="MoE models: apply this task's router bias (see --router-bias)"
    )
    gen.add_argument(
        "--router-stats",
        action="store_true",
        help="MoE models: print tokens per expert, re-routed and dropped counts per layer to stderr",
    )
    _add_model_flags(gen)
    _add_backend_flags(gen)
    _add_sampling_flags(gen)

    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="streaming terminal chat, kept in the data directory (/reset starts anew, /exit or Ctrl-D quits)",
    )
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--conversation", type=int, help="go on with this stored conversation (its id in the web UI too)")
    _add_model_flags(chat)
    _add_backend_flags(chat)
    _add_sampling_flags(chat)
    add_store_flags(chat, window=True)

    ui = sub.add_parser("ui", parents=[common], help="the web UI (chat, settings) in your browser")
    _add_listen_flags(ui, UI_PORT)
    _add_model_flags(ui)
    _add_backend_flags(ui)
    _add_sampling_flags(ui)
    add_store_flags(ui, window=True)

    serve = sub.add_parser(
        "serve", parents=[common], help="OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions"
    )
    _add_listen_flags(serve, SERVE_PORT)
    serve.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' on every call (default: $R1_API_KEY, or none)"
    )
    serve.add_argument(
        "--max-request-mb", type=float, help="refuse a larger request body with 413 (default 4; $R1_MAX_REQUEST_MB)"
    )
    _add_model_flags(serve)
    _add_sampling_flags(serve)

    support = sub.add_parser("support", parents=[common], help="the customer-service bot over the order database")
    _add_model_flags(support)
    add_store_flags(support)
    _add_backend_flags(support)
    add_memory_parser(sub, common)

    bench = sub.add_parser("bench", parents=[common], help="run a benchmark of bench/ (its own --help lists its flags)")
    bench.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the benchmark")

    solve_cmd = sub.add_parser(
        "solve", parents=[common], help="search for a verified answer (MCTS over tool-using steps)"
    )
    solve_cmd.add_argument("problem", help="the problem text ('-' reads stdin)")
    solve_cmd.add_argument("--task-type", choices=["auto", "math", "code"], default="auto")
    solve_cmd.add_argument("--strategy", choices=["mcts", "self_consistency", "best_of_n", "greedy"], default="mcts")
    solve_cmd.add_argument("--budget", type=int, help="search iterations (default: $R1_SEARCH_BUDGET, or 8)")
    solve_cmd.add_argument("--json", action="store_true", help="print the whole solution (steps, tree, reward) as JSON")
    _add_model_flags(solve_cmd)
    _add_backend_flags(solve_cmd)
    solve_cmd.add_argument(
        "--seed", type=int, help="the search's seed (default 0): the same seed gives the same result"
    )
    add_store_flags(solve_cmd)
    add_train_parser(sub, common)
    add_quantize_parsers(sub, common)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env().override(
        backend=getattr(args, "backend", None),
        base_url=getattr(args, "base_url", None),
        remote_api_key=getattr(args, "remote_api_key", None),
        remote_model=getattr(args, "remote_model", None),
        model=args.model,
        quant=args.quant,
        threads=args.threads,
        cache_dir=args.cache_dir,
        kv_cache_mb=getattr(args, "kv_cache_mb", None),
        expert_capacity=getattr(args, "expert_capacity", None),
        router_bias=getattr(args, "router_bias", None),
        adapter=getattr(args, "adapter", None),
        attention=getattr(args, "attention", None),
        attention_local_blocks=getattr(args, "attention_local_blocks", None),
        attention_topk=getattr(args, "attention_topk", None),
        fallback_full_attention=getattr(args, "fallback_full_attention", None),
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
        allowed_hosts=tuple(args.allowed_hosts) if getattr(args, "allowed_hosts", None) else None,
        max_request_mb=getattr(args, "max_request_mb", None),
        data_dir=getattr(args, "data_dir", None),
        chroma_path=getattr(args, "chroma_path", None),
        chroma_url=getattr(args, "chroma_url", None),
        memory_window_tokens=getattr(args, "memory_window_tokens", None),
        adapter_scope=getattr(args, "adapter_scope", None),
    )
    return dataclasses.replace(settings, adapter=None) if getattr(args, "no_adapter", False) else settings


def _load(settings: Settings):
    start = time.perf_counter()
    engine = load_engine(settings)
    log.info("loaded %s in %.1f s", engine.name, time.perf_counter() - start)
    return engine


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.router_stats and settings.backend != "local":
        raise ValueError(
            "--router-stats needs the local engine (--backend local): a server keeps its routers to itself"
        )
    engine = _load(settings)
    request = engine.submit(prompt, **settings.sampling(), stop=tuple(args.stop or ()), task_type=args.task_type)
    if args.stream:
        for delta in request.stream():
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(request.result().text)
    done = request.result()
    log.info(
        "%d prompt tokens, %d generated, %s, %.2f s",
        done.prompt_tokens,
        done.generated_tokens,
        done.finish_reason,
        done.seconds,
    )
    if args.router_stats:
        print(format_router_stats(engine.router_stats()), file=sys.stderr)
    if done.finish_reason == "error":
        print(f"r1: error: generation failed: {done.error}", file=sys.stderr)
        return 1
    return 0


def format_router_stats(layers: list[ExpertLoad]) -> str:
    """A table of router statistics, one row per MoE layer."""
    if not layers:
        return "router statistics: this model has no experts"
    n_experts = len(layers[0].tokens)
    lines = [
        f"router statistics: {len(layers)} MoE layers, {n_experts} experts each",
        "layer  assignments  experts used  busiest/mean  re-routed  dropped  busiest experts (expert:assignments)",
    ]
    for load in layers:
        busiest = sorted(range(n_experts), key=lambda e: -load.tokens[e])[:4]
        lines.append(
            f"{load.layer:5d}  {sum(load.tokens):11d}  {f'{sum(1 for n in load.tokens if n)}/{n_experts} ({load.utilization:.0%})':>12}"
            f"  {load.imbalance:11.2f}x  {load.rerouted:9d}  {load.dropped:7d}  "
            + " ".join(f"{e}:{load.tokens[e]}" for e in busiest if load.tokens[e])
        )
    return "\n".join(lines)


def cmd_chat(args: argparse.Namespace) -> int:
    from app.conversation import Chat, ConversationNotFound, ConversationStore
    from app.memory import ConversationMemory, SolvedProblems, try_open_vector_store
    from app.runtime import Runtime

    settings = _settings(args)
    conversations = ConversationStore.in_data_dir(settings.data_path())
    conversation = conversations.create() if args.conversation is None else args.conversation
    try:
        conversations.messages(conversation)
    except ConversationNotFound as err:
        raise ValueError(f"{err} (the web UI lists the stored conversations)") from None
    print(f"r1 chat — loading {describe(settings)}...", file=sys.stderr)
    runtime = Runtime(settings, _load(settings))
    store, error = try_open_vector_store(settings)
    if error:
        print(f"r1: warning: {error}; turns that leave the window will not be recalled", file=sys.stderr)
    chat = Chat(runtime, conversations, ConversationMemory(store, store_error=error), SolvedProblems(store))
    interactive = sys.stdin.isatty()
    print(
        f"Conversation {conversation}. Type a message. /reset starts a new conversation, /exit or Ctrl-D quits.",
        file=sys.stderr,
    )
    reported = error
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
            conversation = conversations.create()
            print(f"(history cleared: conversation {conversation})", file=sys.stderr)
            continue
        try:
            _print_reply(chat.reply(conversation, text))
        except ValueError as err:  # e.g. a message too long for the window even alone
            print(f"\nerror: {err}", file=sys.stderr)
        if chat.memory.last_error != reported:
            reported = chat.memory.last_error
            print(f"r1: warning: {reported}", file=sys.stderr)


def _print_reply(replies) -> None:
    """Stream a Chat reply: the recalled sources, the reasoning and the tool calls to stderr, the answer to stdout."""
    from contextlib import closing

    answer = reasoning = ""
    started, tool_calls = False, 0
    with closing(replies):
        try:
            for message in replies:
                if message.tool is not None:  # answered through the tools: each call as the search runs it
                    for step in message.tool.tried[tool_calls:]:
                        print(f"  [tool {step['tool']}: {step['text']}]", file=sys.stderr, flush=True)
                    tool_calls = len(message.tool.tried)
                    if message.finish_reason is not None:
                        used = ", ".join(dict.fromkeys(s["tool"] for s in message.tool.steps if s["kind"] == "tool"))
                        print(
                            f"  [{message.tool.status}, with {used or 'no tool'}; {message.tool.seconds:.1f} s]",
                            file=sys.stderr,
                            flush=True,
                        )
                    if not message.content:
                        continue
                if not started:
                    started = True
                    if message.recalled:
                        sources = "; ".join(line[1:].split("] ", 1)[0] for line in message.recalled.splitlines())
                        print(f"(recalled: {sources})", file=sys.stderr)
                    sys.stdout.write("r1> ")
                if message.reasoning != reasoning:
                    sys.stderr.write(
                        message.reasoning[len(reasoning) :]
                        if message.reasoning.startswith(reasoning)
                        else "\n" + message.reasoning
                    )
                    reasoning = message.reasoning
                if message.content != answer:
                    sys.stdout.write(
                        message.content[len(answer) :] if message.content.startswith(answer) else "\n" + message.content
                    )
                    answer = message.content
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [interrupted]")
    sys.stdout.write("\n")


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
    if settings.api_key is not None and not settings.api_key.strip():
        raise ValueError("--api-key is empty: give a key, or leave the flag out to serve without one")
    if settings.backend != "local":
        raise ValueError(
            f"r1 serve serves the local engine (R1_BACKEND is {settings.backend!r}); clients of a "
            "remote server can talk to it directly"
        )
    port = settings.port or SERVE_PORT
    sock = _listen(settings.host, port)
    if not settings.api_key:
        _warn_if_exposed(settings.host, "the API (without --api-key)")
    runtime = Runtime(settings)
    print(f"r1 serve — loading {settings.model} ({settings.quant or 'fp32'})...", file=sys.stderr)
    runtime.engine  # noqa: B018 (the property loads the model now: a missing model is an error before we say we are listening)
    print(
        f"r1 serve: OpenAI-compatible API at http://{settings.host}:{port}/v1 (model {settings.model!r})",
        file=sys.stderr,
    )
    try:
        server.serve(runtime, sock, api_key=settings.api_key)
    finally:
        runtime.close()
    return 0


def cmd_support(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"r1 support — loading {describe(settings)}...", file=sys.stderr)
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

    from app.memory import SolvedProblems, try_open_vector_store
    from app.runtime import Runtime

    settings = _settings(args)
    problem = sys.stdin.read() if args.problem == "-" else args.problem
    print(f"r1 solve — loading {describe(settings)}...", file=sys.stderr)
    engine = _load(settings)
    store, error = try_open_vector_store(settings)
    if error:
        print(f"r1: warning: {error}; solved problems are not remembered", file=sys.stderr)
    solution = solve(
        problem,
        task_type=args.task_type,
        strategy=args.strategy,
        budget=args.budget or settings.search_budget,
        seed=settings.seed,
        runtime=Runtime(settings, engine),
        memory=SolvedProblems(store),
        on_progress=lambda line: print(f"r1 solve: {line}", file=sys.stderr, flush=True),
    )
    if solution.cached_from:
        print(f"r1 solve: reused the verified solution of a similar problem: {solution.cached_from}", file=sys.stderr)
    if args.json:
        print(json.dumps(solution.to_dict(), indent=2))
        return 0
    for step in solution.steps:
        print(textwrap.indent(step["text"], "  "))
    reward = ", ".join(f"{k} {v:.2f}" for k, v in solution.reward.items())
    answer = solution.answer if solution.answer is not None else "(none found)"
    print(f"answer:\n{textwrap.indent(answer, '  ')}" if "\n" in answer else f"answer: {answer}")
    print(
        f"reward: {reward}; tokens: {solution.tokens['generated']} generated, {solution.tokens['reused']} of "
        f"{solution.tokens['prompt']} prompt tokens from cache; {solution.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {
        "generate": cmd_generate,
        "chat": cmd_chat,
        "ui": cmd_ui,
        "serve": cmd_serve,
        "support": cmd_support,
        "memory": cmd_memory,
        "solve": cmd_solve,
        "bench": cmd_bench,
        "train": cmd_train,
        "export": cmd_export,
        "quantize": cmd_quantize,
    }[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, GenerationError) as err:  # GenerationError: e.g. a remote server failed
        print(f"r1: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
