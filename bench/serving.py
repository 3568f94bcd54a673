"""Serving benchmark: concurrent streams, a shared system prompt, and an MCTS-shaped request tree.

1. Concurrency: N streaming clients at once (N = 1, 4, 8, 16), 128-token prompts, 64 new tokens each:
   aggregate tok/s, p50/p95 time to first token (TTFT) and inter-token latency (ITL), against the same N
   requests one after another on our engine, and against llama.cpp's own server (llama-cpp-python[server]
   on 127.0.0.1, same GGUF, same threads) under the same client load over HTTP/SSE.
2. Shared prefix: TTFT of a request behind a ~1,000-token system prompt, cold (prefix cache cleared)
   against cached (the same system prompt, another question). Target: cached >= 5x faster.
3. MCTS-shaped load: a 300-token problem, 8 children per expanded node, 3 levels, 32 tokens per step.
   Tokens prefilled with the radix cache against recomputing every prompt. Target: >= 5x fewer.

    python bench/serving.py                     # everything (builds llama-cpp-python[server] if missing)
    python bench/serving.py --skip-llamacpp     # our engine only

Our clients are threads calling `Engine.stream` in this process; llama.cpp's are threads reading its SSE
stream. Medians and percentiles are over requests; ratios compare numbers taken in this same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
    tokens: int = 0
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


@dataclass
class LoadResult:
    label: str
    wall_s: float
    timings: list[StreamTiming]

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.timings)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s

    def pct(self, values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")

    def row(self, baseline: float | None) -> str:
        ttfts = [t.ttft_s for t in self.timings]
        gaps = [g for t in self.timings for g in t.gaps_s]
        ratio = f"{self.tok_s / baseline:.2f}x" if baseline else "1.00x"
        return (
            f"| {self.label} | {self.tok_s:.1f} | {ratio} | {1e3 * self.pct(ttfts, 0.5):.0f} | {1e3 * self.pct(ttfts, 0.95):.0f} "
            f"| {1e3 * self.pct(gaps, 0.5):.1f} | {1e3 * self.pct(gaps, 0.95):.1f} |"
        )


def make_prompts(tokenizer, n: int, n_tokens: int, seed: int) -> list[str]:
    """n distinct English-ish prompts of exactly n_tokens tokens under our tokenizer (no shared prefix)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        words = [f"Note {i}:"] + [rng.choice(WORDS) for _ in range(n_tokens * 2)]
        ids = tokenizer.encode(" ".join(words))[:n_tokens]
        prompts.append(tokenizer.decode(ids))
    return prompts


# ----- our engine --------------------------------------------------------------------------------


def stream_ours(engine, prompt: str, new_tokens: int) -> StreamTiming:
    timing = StreamTiming(time.perf_counter())
    request = engine.submit(prompt, max_new_tokens=new_tokens, stop_token_ids=())
    for _ in request.stream():
        timing.piece()
    timing.tokens = request.result().generated_tokens
    return timing


def concurrent(label: str, fn, prompts: list[str]) -> LoadResult:
    timings: list[StreamTiming | None] = [None] * len(prompts)

    def client(i: int) -> None:
        timings[i] = fn(prompts[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(label, time.perf_counter() - start, timings)


def sequential(label: str, fn, prompts: list[str]) -> LoadResult:
    start = time.perf_counter()
    timings = [fn(p) for p in prompts]
    return LoadResult(label, time.perf_counter() - start, timings)


# ----- llama.cpp server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """llama-cpp-python's OpenAI-compatible server in a subprocess on 127.0.0.1."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int = 4096) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile(mode="w+")  # llama.cpp logs a lot: a pipe would fill and block it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--n_ctx",
                str(n_ctx),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("llama.cpp server exited: " + self.log.read()[-2000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError("llama.cpp server did not start within 120 s")

    def stream(self, prompt: str, new_tokens: int) -> StreamTiming:
        """One streamed completion; it may end early at end-of-sequence (its tokens are counted as they come).

        No logit_bias against EOS: llama-cpp-python applies it in Python over the whole vocabulary per token.
        """
        body = json.dumps({"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True})
        timing = StreamTiming(time.perf_counter())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            if json.loads(line[5:])["choices"][0]["text"]:
                timing.piece()
        conn.close()
        return timing

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ensure_llama_cpp_server() -> str | None:
    """Import llama_cpp.server, pip-installing llama-cpp-python[server] if needed; None or why it failed."""
    try:
        import llama_cpp.server  # noqa: F401

        return None
    except ImportError:
        pass
    print(
        "building llama-cpp-python[server] with pip (compiles llama.cpp, takes minutes)...", file=sys.stderr, flush=True
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "llama-cpp-python[server]"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return "pip install failed: " + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return None


# ----- the three measurements --------------------------------------------------------------------


def bench_concurrency(engine, gguf: Path, args) -> list[str]:
    lines = [
        "| load | aggregate tok/s | vs ours one after another | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    server = None
    if not args.skip_llamacpp:
        why = ensure_llama_cpp_server()
        if why:
            lines.append(f"| llama.cpp server | not measured: {why} | | | | | |")
        else:
            server = LlamaCppServer(gguf, args.threads)
    try:
        for n in args.clients:
            prompts = make_prompts(engine.tokenizer, n, args.prompt_tokens, seed=n)
            engine.clear_prefix_cache()
            ours_one = lambda p: stream_ours(engine, p, args.new_tokens)  # noqa: E731
            seq = sequential(f"ours, {n} one after another", ours_one, prompts)
            engine.clear_prefix_cache()
            conc = concurrent(f"ours, {n} concurrent", ours_one, prompts)
            lines += [seq.row(None), conc.row(seq.tok_s)]
            if server is not None:
                remote = concurrent(
                    f"llama.cpp server, {n} concurrent", lambda p: server.stream(p, args.new_tokens), prompts
                )
                lines.append(remote.row(seq.tok_s))
                lines.append(f"| ours / llama.cpp server at {n} | {conc.tok_s / remote.tok_s:.2f}x | | | | | |")
            print("\n".join(lines[-4:]), file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.close()
    return lines


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quant", default="int4", help="our engine's weights (default int4)")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--step-tokens", type=int, default=32, help="tokens per MCTS step")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--eager", action="store_true", help="our engine without its native decode step")
    parser.add_argument("--only", choices=["concurrency", "prefix", "mcts"], help="run one part")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model
    from model.loading.checkpoint import resolve_source
    from model.serving.scheduler import SchedulerConfig

    gguf = resolve_source("default")
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
        sections.append(("Shared system prompt", bench_shared_prefix(engine, args)))
    if args.only in (None, "mcts"):
        plain = model.Engine(
            engine.model,
            engine.tokenizer,
            scheduler=SchedulerConfig(prefix_cache=False),
            native_dir=None if engine.compiled is None else engine.compiled.build_dir,
        )
        sections.append(
            ("MCTS-shaped load", bench_mcts_shape({"prefix cache off": plain, "radix prefix cache": engine}, args))
        )
        plain.close()
    if args.only in (None, "concurrency"):
        sections.append(("Concurrent streams", bench_concurrency(engine, gguf, args)))
    engine.close()
    load = os.getloadavg()[0]
    print(
        f"\nquant={args.quant}{' (eager)' if args.eager else ''}, threads={args.threads}, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens, "
        f"load average {load:.2f}\n"
    )
    for title, lines in sections:
        print(f"### {title}\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
