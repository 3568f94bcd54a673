"""Serving benchmark: concurrent streams against llama.cpp's own server, a shared system prompt, an MCTS-shaped tree.

1. Concurrency: N streaming clients at once (N = 1, 4, 16), ~128-token prompts, 64 greedy new tokens each, sent
   as OpenAI `/v1/completions` streams over HTTP to `r1 serve` and to llama.cpp's C++ `llama-server`
   (`--parallel 16 --cont-batching`, same GGUF, same threads), both servers up in the same run: aggregate
   tok/s, p50/p95 time to first token (TTFT) and inter-token latency (ITL), and ours / llama-server per N.
   Single stream: `llama-bench` pp128/tg128 beside both servers' one-client figures from the same run.
2. Shared prefix: TTFT of a request behind a ~1,000-token system prompt, cold (prefix cache cleared)
   against cached (the same system prompt, another question). Target: cached >= 5x faster.
3. MCTS-shaped load: a 300-token problem, 8 children per expanded node, 3 levels, 32 tokens per step.
   Tokens prefilled with the radix cache against recomputing every prompt. Target: >= 5x fewer.

    python bench/serving.py                     # everything (the first run builds llama.cpp: minutes)
    python bench/serving.py --only concurrency --clients 1,4,16
    python bench/serving.py --skip-llamacpp     # our engine only

llama-server and llama-bench are built once from the llama.cpp that llama-cpp-python's sdist vendors, with AMX
off (bench/llama_cpp_build.py: why) and cached under $R1_CACHE_DIR or ~/.cache/r1-reasoner; a failed build is
one line and the run goes on as with --skip-llamacpp. Parts 2 and 3 run our engine in this process. Every
request of part 1 has its own prompt (per N and run), so neither server's prefix cache helps it. Tokens are
the servers' own `usage` counts; a stream may end early at end-of-sequence. Percentiles are over requests
(TTFT) and streamed pieces (ITL); ratios compare numbers taken in this same run. The load average is printed
beside each table: this machine is shared.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "river stone lamp orbit cedar violet engine harbor pencil meadow signal copper lantern "
    "garden falcon prism tunnel marble canyon ember walnut beacon glacier ribbon compass"
).split()


@dataclass
class StreamTiming:
    start: float
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)  # between consecutive streamed pieces
    tokens: int = 0  # pieces, until the server's usage count replaces it
    prompt_tokens: int = 0
    _last: float = 0.0

    def piece(self) -> None:
        """A streamed piece arrived now."""
        now = time.perf_counter()
        if self.ttft_s is None:
            self.ttft_s = now - self.start
        else:
            self.gaps_s.append(now - self._last)
        self._last = now
        self.tokens += 1


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


@dataclass
class LoadResult:
    """Streams of one server under one client count, pooled over runs (their walls add up)."""

    label: str
    wall_s: float = 0.0
    timings: list[StreamTiming] = field(default_factory=list)

    def add(self, wall_s: float, timings: list[StreamTiming]) -> None:
        self.wall_s += wall_s
        self.timings += timings

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.timings)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first over the time after the first: a stream's decode speed."""
        return sum(t.tokens - 1 for t in self.timings) / sum(sum(t.gaps_s) for t in self.timings)

    @property
    def prefill_tok_s(self) -> float:
        """Prompt tokens over TTFT (HTTP, tokenizing and the first decode step included)."""
        return sum(t.prompt_tokens for t in self.timings) / sum(t.ttft_s for t in self.timings)

    def row(self) -> str:
        ttfts = [t.ttft_s for t in self.timings]
        gaps = [g for t in self.timings for g in t.gaps_s]
        return (
            f"| {self.label} | {self.tok_s:.1f} | {1e3 * pct(ttfts, 0.5):.0f} | {1e3 * pct(ttfts, 0.95):.0f} "
            f"| {1e3 * pct(gaps, 0.5):.1f} | {1e3 * pct(gaps, 0.95):.1f} |"
        )


def make_prompts(tokenizer, n: int, n_tokens: int, seed: int) -> list[str]:
    """n distinct English-ish prompts of exactly n_tokens tokens under our tokenizer (no shared prefix)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        words = [f"Note {seed}.{i}:"] + [rng.choice(WORDS) for _ in range(n_tokens * 2)]
        ids = tokenizer.encode(" ".join(words))[:n_tokens]
        prompts.append(tokenizer.decode(ids))
    return prompts


def concurrent(fn, prompts: list[str]) -> tuple[float, list[StreamTiming]]:
    """fn(prompt) for every prompt at once, one thread each; the wall time and the timings."""
    timings: list[StreamTiming | None] = [None] * len(prompts)

    def client(i: int) -> None:
        timings[i] = fn(prompts[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(t is None for t in timings):
        raise RuntimeError("a client failed (its error is printed above)")
    return time.perf_counter() - start, timings


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (uptime: 1, 5, 15 min)"


# ----- OpenAI-compatible servers over HTTP --------------------------------------------------------


@dataclass
class HTTPServer:
    """A running server's address and the model id it lists first."""

    name: str
    url: str  # http://127.0.0.1:PORT
    model: str

    @classmethod
    def of(cls, name: str, url: str) -> HTTPServer:
        with urllib.request.urlopen(url + "/v1/models", timeout=30) as response:
            return cls(name, url, json.load(response)["data"][0]["id"])

    def stream(self, prompt: str, new_tokens: int) -> StreamTiming:
        """One greedy streamed completion; tokens and prompt tokens from the server's usage chunk."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": new_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        host, port = self.url.removeprefix("http://").split(":")
        timing = StreamTiming(time.perf_counter())
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status}: {response.read()[:300]!r}")
        usage = None
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                timing.piece()
            usage = chunk.get("usage") or usage
        conn.close()
        if usage:
            timing.tokens, timing.prompt_tokens = usage["completion_tokens"], usage["prompt_tokens"]
        return timing


def start_servers(args, gguf: Path, log_dir: Path, stack) -> tuple[list[HTTPServer], list[str]]:
    """`r1 serve` and (unless skipped, unbuildable or failing to start) llama-server, entered on `stack`; notes
    for the report. A llama.cpp that cannot be built or started is one line, and the run goes on without it."""
    from bench.llama_cpp_build import ensure_binaries, server_command
    from tests.servers import ServerProcess, free_port, r1_serve

    notes = []

    def skip_llamacpp(why: str) -> None:
        print(f"llama.cpp not measured: {why}", file=sys.stderr, flush=True)
        notes.append(f"llama.cpp not measured: {why}")
        args.skip_llamacpp = True

    binaries = None
    if not args.skip_llamacpp:  # built before our server starts: the build takes minutes of both cores
        binaries = ensure_binaries(jobs=args.build_jobs)
        if isinstance(binaries, str):
            skip_llamacpp(binaries)
    if args.eager:
        os.environ["R1_COMPILED_STEP"] = "0"
    else:
        notes.append(f"r1 serve's native decode step: {ensure_native_step()}")
    ours = stack.enter_context(r1_serve(log_dir, data_dir=log_dir / "data", quant=args.quant, threads=args.threads))
    servers = [HTTPServer.of("r1 serve", ours.url)]
    if args.skip_llamacpp:
        return servers, notes
    args.binaries = binaries
    port = free_port()
    command = server_command(
        binaries.server,
        gguf,
        port=port,
        threads=args.threads,
        parallel=args.parallel,
        ctx_per_slot=args.prompt_tokens + args.new_tokens + 64,
        ubatch=args.llama_ubatch,
    )
    try:
        theirs = stack.enter_context(ServerProcess("llama-server", command, port, log_dir / "llama-server.log"))
    except RuntimeError as err:  # its log's last line says why
        lines = str(err).strip().splitlines()
        skip_llamacpp(lines[0].rstrip(":") + ("" if len(lines) < 2 else f": {lines[-1].strip()[:200]}"))
        return servers, notes
    servers.append(HTTPServer.of("llama-server", theirs.url))
    notes.append("llama-server: " + " ".join([binaries.server.name, *command[1:]]).replace(str(gguf), gguf.name))
    return servers, notes


def ensure_native_step() -> str:
    """Build our native decode step here (r1 serve then loads it from the cache at start, not mid-run)."""
    from model.loading.weight_cache import default_cache_dir
    from model.serving.compiled_step import NativeBuildError, build_library, find_compiler

    compiler = find_compiler()
    if compiler is None:
        return "unavailable (no C++ compiler): r1 serve decodes eagerly"
    try:
        return f"ready ({build_library(default_cache_dir() / 'native', compiler).name})"
    except NativeBuildError as err:
        return f"unavailable ({str(err).splitlines()[0][:200]}): r1 serve decodes eagerly"


# ----- the three measurements --------------------------------------------------------------------


def bench_concurrency(tokenizer, gguf: Path, args) -> list[tuple[str, list[str]]]:
    """Both servers under each client count in turn; the concurrency table and the single-stream table."""

    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="r1-serving-")))
        servers, notes = start_servers(args, gguf, log_dir, stack)
        for server in servers:  # first-request costs (allocation, lazy loads) stay out of the figures
            server.stream("Warm up: one two three four five six seven eight.", 8)
        results: dict[tuple[str, int], LoadResult] = {}
        load_before = load_average()
        for n in args.clients:
            for run in range(args.runs):
                prompts = make_prompts(tokenizer, n, args.prompt_tokens, seed=1000 * run + n)
                for server in servers:
                    result = results.setdefault(
                        (server.name, n), LoadResult(f"{server.name}, {n} client{'s' * (n != 1)}")
                    )
                    result.add(*concurrent(lambda p, s=server: s.stream(p, args.new_tokens), prompts))
            print("\n".join(results[s.name, n].row() for s in servers), file=sys.stderr, flush=True)
        load_after = load_average()
    # After both servers have stopped: llama.cpp's idle workers spin for a while before they sleep.
    llama_bench = None if args.skip_llamacpp else run_llama_bench(args.binaries, gguf, args)

    lines = [
        "| load | aggregate tok/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in args.clients:
        lines += [results[s.name, n].row() for s in servers]
        if len(servers) == 2:
            ours, theirs = results["r1 serve", n], results["llama-server", n]
            lines.append(f"| ours / llama-server at {n} | {ours.tok_s / theirs.tok_s:.2f}x | | | | |")
    lines += ["", f"Before: {load_before}. After: {load_after}.", *(f"{note}." for note in notes)]
    sections = [("Concurrent streams (HTTP, /v1/completions)", lines)]
    if 1 in args.clients:
        sections.append(("Single stream", single_stream_table(servers, results, llama_bench, args)))
    return sections


def single_stream_table(servers, results, llama_bench, args) -> list[str]:
    """Decode and prefill tok/s of one stream: llama-bench (no server), then each server's 1-client run."""
    tg, pp = f"tg{args.bench_tokens}", f"pp{args.bench_tokens}"
    columns = [
        (f"{s.name}, 1 client", results[s.name, 1].decode_tok_s, results[s.name, 1].prefill_tok_s) for s in servers
    ]
    if isinstance(llama_bench, dict):
        columns.insert(0, ("llama-bench", llama_bench[tg], llama_bench[pp]))
        ours = columns[1]
        columns.append(("r1 serve / llama-bench", ours[1] / llama_bench[tg], ours[2] / llama_bench[pp]))
    lines = [
        "| single stream | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
        f"| decode tok/s ({tg}; streams: tokens after the first / time after it) | "
        + " | ".join(f"{c[1]:.2f}x" if "/" in c[0] else f"{c[1]:.1f}" for c in columns)
        + " |",
        f"| prefill tok/s ({pp}; streams: prompt tokens / TTFT) | "
        + " | ".join(f"{c[2]:.2f}x" if "/" in c[0] else f"{c[2]:.1f}" for c in columns)
        + " |",
        "",
    ]
    if isinstance(llama_bench, str):
        lines.append(f"llama-bench not measured: {llama_bench}.")
    return lines + [f"{load_average()}."]


def run_llama_bench(binaries, gguf: Path, args) -> dict[str, float] | str:
    """llama-bench's pp/tg tok/s on the same GGUF and threads, or why it failed."""
    from bench.llama_cpp_build import bench_command, parse_llama_bench

    command = bench_command(
        binaries.bench,
        gguf,
        threads=args.threads,
        tokens=args.bench_tokens,
        repetitions=args.runs,
        ubatch=args.llama_ubatch,
    )
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"exit {proc.returncode}: " + " | ".join(proc.stderr.strip().splitlines()[-2:])
    return parse_llama_bench(proc.stdout)


def bench_shared_prefix(engine, args) -> list[str]:
    system = " ".join(
        f"Rule {i}: always answer question {i} with the number {i * 7} and a short reason." for i in range(60)
    )
    prefix = engine.tokenizer.encode(system)[:1000]
    cold, cached = [], []
    for round_ in range(args.runs):
        engine.clear_prefix_cache()
        first = engine.submit(prefix + engine.tokenizer.encode(f" Question {round_}a?"), max_new_tokens=1).result()
        second = engine.submit(prefix + engine.tokenizer.encode(f" Question {round_}b?"), max_new_tokens=1).result()
        assert first.cached_tokens == 0 and second.cached_tokens >= 992, (first.cached_tokens, second.cached_tokens)
        cold.append(first.ttft_s or first.seconds)
        cached.append(second.ttft_s or second.seconds)
    c, h = statistics.median(cold), statistics.median(cached)
    return [
        "| system prompt | TTFT cold ms | TTFT cached ms | speed-up (target >= 5x) |",
        "|---|---:|---:|---:|",
        f"| {len(prefix)} tokens, medians of {args.runs} | {1e3 * c:.0f} | {1e3 * h:.0f} | {c / h:.1f}x |",
    ]


def bench_mcts_shape(engines: dict[str, object], args) -> list[str]:
    """Expand one node per level into 8 children (as an MCTS iteration does), 3 levels deep."""
    lines = ["| MCTS-shaped load | prompt tokens | prefilled | wall s |", "|---|---:|---:|---:|"]
    results = {}
    for label, engine in engines.items():
        problem = engine.tokenizer.encode(
            " ".join(
                f"Step {i}: a farmer has {i * 3} sheep and buys {i + 2} more at {i + 5} dollars each."
                for i in range(40)
            )
        )[:300]
        engine.clear_prefix_cache()
        node, total, computed, start = list(problem), 0, 0, time.perf_counter()
        for level in range(3):
            done = engine.generate_batch([node] * 8, [_params(level * 8 + k, args.step_tokens) for k in range(8)])
            total += sum(c.prompt_tokens for c in done)
            computed += sum(c.prompt_tokens - c.cached_tokens for c in done)
            node = node + done[0].token_ids  # descend into the first child
        results[label] = (total, computed, time.perf_counter() - start)
        lines.append(f"| {label} | {total} | {computed} | {results[label][2]:.1f} |")
    (_, plain, t_plain), (_, radix, t_radix) = results["prefix cache off"], results["radix prefix cache"]
    lines.append(
        f"| ratio (target >= 5x fewer) | | {plain / max(radix, 1):.1f}x fewer | {t_plain / t_radix:.2f}x faster |"
    )
    return lines


def _params(seed: int, new_tokens: int):
    from model import SamplingParams

    return SamplingParams(max_new_tokens=new_tokens, temperature=0.8, seed=seed, stop_token_ids=())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="both servers' and llama-bench's threads (default 2)")
    parser.add_argument("--quant", default="int4", help="our engine's weights (default int4)")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--step-tokens", type=int, default=32, help="tokens per MCTS step")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--parallel", type=int, default=16, help="llama-server's slots (--parallel, default 16)")
    parser.add_argument(
        "--llama-ubatch", type=int, help="llama.cpp's --ubatch-size (default: its own, 512; 1 if its prefill crashes)"
    )
    parser.add_argument("--bench-tokens", type=int, default=128, help="llama-bench's pp/tg length (default 128)")
    parser.add_argument("--build-jobs", type=int, default=2, help="parallel jobs of the one-off llama.cpp build")
    parser.add_argument("--eager", action="store_true", help="our engine without its native decode step")
    parser.add_argument("--only", choices=["concurrency", "prefix", "mcts"], help="run one part")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model.loading.checkpoint import load_checkpoint, resolve_source

    gguf = resolve_source("default")
    sections = []
    if args.only in (None, "concurrency"):
        if gguf.suffix != ".gguf":
            raise SystemExit(f"the default model is not a GGUF file ({gguf}): llama-server cannot run it")
        sections += bench_concurrency(load_checkpoint(gguf).tokenizer, gguf, args)
    if args.only in (None, "prefix", "mcts"):
        sections += bench_in_process(gguf, args)
    print(
        f"\nquant={args.quant}{' (eager)' if args.eager else ''}, threads={args.threads}, {args.prompt_tokens}-token "
        f"prompts, {args.new_tokens} new tokens, runs={args.runs}, {load_average()}\n"
    )
    for title, lines in sections:
        print(f"### {title}\n\n" + "\n".join(lines) + "\n")
    return 0


def bench_in_process(gguf: Path, args) -> list[tuple[str, list[str]]]:
    """Parts 2 and 3 on our engine loaded in this process."""
    import model
    from model.serving.scheduler import SchedulerConfig

    engine = model.load(gguf, quant=args.quant, threads=args.threads, compiled_step=not args.eager)
    if engine.compiled is not None:  # measure the engine as it runs once its native decode step is built
        print(
            "native decode step:",
            "ready" if engine.compiled.library.wait() else engine.compiled.library.error,
            flush=True,
        )
    engine.generate("warm up", max_new_tokens=4)
    sections = []
    if args.only in (None, "prefix"):
        sections.append(("Shared system prompt", bench_shared_prefix(engine, args) + ["", f"{load_average()}."]))
    if args.only in (None, "mcts"):
        plain = model.Engine(
            engine.model,
            engine.tokenizer,
            scheduler=SchedulerConfig(prefix_cache=False),
            native_dir=None if engine.compiled is None else engine.compiled.build_dir,
        )
        lines = bench_mcts_shape({"prefix cache off": plain, "radix prefix cache": engine}, args)
        sections.append(("MCTS-shaped load", lines + ["", f"{load_average()}."]))
        plain.close()
    engine.close()
    return sections


if __name__ == "__main__":
    sys.exit(main())
