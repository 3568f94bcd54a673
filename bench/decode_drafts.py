"""Draft-token A/Bs of `bench/decode.py`: jump-forward under grammars (`--grammar`) and prompt-lookup speculation
(`--speculative`), each against the same engine with its drafts off, in interleaved rounds (model/serving/drafts.py).

Both engines share one loaded model (the default GGUF at `quant="auto"`, int4) and its native decode step; only
the scheduler's `DraftConfig` differs. Every A/B also checks that both produced the same token ids.

- `--grammar`: real work under llguidance grammars: solve's steps (`app.solve`, greedy strategy, on problems of
  bench/data/symbolic.jsonl) and the support bot's actions (`app.Support` over scripted flows of
  bench/data/support_flows.jsonl). Per kind of request (solve step, bot tool call, bot message): forward steps
  per request and generated tok/s over the decode phase (first token -> end).
- `--speculative`: greedy chat completions of copy-heavy prompts (a passage given twice then "copy it once
  more", the bot quoting a tool result, a code edit) and plain chat; decode tok/s (first token -> end), forward
  steps, drafted and accepted tokens; llama.cpp plain and with llama-cpp-python's prompt lookup
  (`LlamaPromptLookupDecoding`) as the anchor, in the same rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def twins(eng, drafts) -> tuple[object, object]:
    """(drafts on, drafts off): two engines over `eng`'s model and native step, differing only in their drafts."""
    from model.engine import Engine
    from model.serving.drafts import NO_DRAFTS
    from model.serving.scheduler import SchedulerConfig

    native = eng.compiled.build_dir if eng.compiled is not None else None
    made = [
        Engine(
            eng.model, eng.tokenizer, threads=eng.threads, scheduler=SchedulerConfig(drafts=drafts), native_dir=native
        )
        for drafts in (drafts, NO_DRAFTS)
    ]
    for twin in made:
        if twin.compiled is not None:
            twin.compiled.library.wait()
    return made[0], made[1]


class Recorder:
    """Every request an engine's `submit` hands out (the features call it underneath)."""

    def __init__(self, eng) -> None:
        self.requests: list = []
        submit = eng.submit

        def recording(*args, **kwargs):
            request = submit(*args, **kwargs)
            self.requests.append(request)
            return request

        eng.submit = recording


@dataclass
class Tally:
    """Requests of one kind on one engine: generated tokens, forward steps, decode seconds."""

    requests: int = 0
    tokens: int = 0
    steps: int = 0
    decode_s: float = 0.0
    drafted: int = 0
    accepted: int = 0

    def add(self, request) -> None:
        c = request.result()
        self.requests += 1
        self.tokens += c.generated_tokens
        self.steps += request.forward_steps
        self.decode_s += c.seconds - (c.ttft_s or c.seconds)
        self.drafted += request.drafted
        self.accepted += request.draft_accepted

    @property
    def decode_rate(self) -> float:
        """Tokens after each request's first, per second of decoding."""
        return (self.tokens - self.requests) / self.decode_s if self.decode_s > 0 else float("nan")


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


# ----- --grammar ------------------------------------------------------------------------------------


def action_kind(text: str) -> str:
    return "bot tool call" if text.startswith('{"tool"') else "bot message"


def grammar_ab(eng, runs: int, problems: int, flows: int) -> str:
    """Jump-forward on vs off on solve steps and bot actions; the report's markdown."""
    from app import Support, solve
    from bench.support import FLOWS, Databases
    from model.serving.drafts import DraftConfig

    on, off = twins(eng, DraftConfig(prompt_lookup=False))  # jump-forward alone
    recorders = {"on": Recorder(on), "off": Recorder(off)}
    questions = [
        json.loads(line)["question"]
        for line in (ROOT / "bench/data/symbolic.jsonl").read_text().splitlines()
        if line.strip()
    ][:problems]
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for line in FLOWS.read_text().splitlines():
        if line.strip():
            flow = json.loads(line)
            by_kind[flow["kind"]].append(flow)
    chosen = [flow for i in range(flows) for kinds in by_kind.values() for flow in kinds[i : i + 1]][:flows]
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    outputs: dict[str, list[list[int]]] = {"on": [], "off": []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as workdir:
        databases = Databases(Path(workdir))
        for round_ in range(runs):
            for label, engine in (("off", off), ("on", on)) if round_ % 2 == 0 else (("on", on), ("off", off)):
                engine.clear_prefix_cache()
                recorder = recorders[label]
                start = len(recorder.requests)
                for question in questions:
                    solve(question, "math", "greedy", engine=engine, use_cache=False, seed=0)
                solve_end = len(recorder.requests)
                for flow in chosen:
                    db = databases.fresh()
                    try:
                        support = Support(db, engine)
                        for text in flow["turns"]:
                            support.reply("bench", text)
                    finally:
                        db.close()
                for i, request in enumerate(recorder.requests[start:]):
                    text = request.result().text
                    kind = "solve step" if start + i < solve_end else action_kind(text)
                    tallies[(kind, label)].add(request)
                    if round_ == 0:
                        outputs[label].append(request.result().token_ids)
            loads.append(os.getloadavg()[0])
            print(f"grammar round {round_ + 1}/{runs} done, {load()}", flush=True)
    for engine in (on, off):
        engine.close()
    same = outputs["on"] == outputs["off"]
    lines = [
        "| requests (per round) | forward steps per request, off -> on | generated tokens per request "
        "| decode tok/s off | decode tok/s on | on / off | forced tokens drafted / kept |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("solve step", "bot tool call", "bot message"):
        a, b = tallies.get((kind, "off")), tallies.get((kind, "on"))
        if a is None or b is None or not a.requests:
            continue
        lines.append(
            f"| {kind} ({a.requests // runs}) | {a.steps / a.requests:.1f} -> {b.steps / b.requests:.1f} "
            f"| {a.tokens / a.requests:.1f} | {a.decode_rate:.1f} | {b.decode_rate:.1f} "
            f"| {b.decode_rate / a.decode_rate:.2f}x | {b.drafted} / {b.accepted} |"
        )
    lines.append("")
    lines.append(
        f"{len(questions)} solve problems (greedy strategy) and {len(chosen)} support flows per round, {runs} "
        f"rounds alternating which engine goes first; decode tok/s = tokens after each request's first / its "
        f"time after its first token, summed over the rounds; load average per round "
        f"{', '.join(f'{x:.2f}' for x in loads)}. Same token ids with jump-forward on and off: "
        f"{'yes' if same else 'NO'} ({len(outputs['on'])} requests)."
    )
    return "\n".join(lines)


# ----- --speculative --------------------------------------------------------------------------------

_PASSAGE = (
    "The history of computing is a story of abstractions stacked upon abstractions. Early machines were programmed "
    "by rewiring panels of cables, and every new problem meant a new arrangement of hardware. Stored-program "
    "computers changed that: instructions became data, and the same machine could run a payroll in the morning and "
    "a ballistics table in the afternoon."
)
_ORDER = json.dumps(
    {
        "order_id": "#W4316152",
        "status": "delivered",
        "items": [
            {"name": "Water Bottle", "options": {"capacity": "750ml", "material": "stainless steel"}, "price": 24.5},
            {"name": "Desk Lamp", "options": {"color": "black", "brightness": "high"}, "price": 61.99},
        ],
        "address": {"address1": "782 Oak Street", "city": "Denver", "zip": "80202"},
    }
)
_CODE = """def total_price(items):
    total = 0
    for item in items:
        total = total + item["price"] * item["quantity"]
    return total
"""

SPECULATIVE_PROMPTS: dict[str, tuple[str, list[dict[str, str]]]] = {
    "copy: passage twice, copy once more": (
        "copy-heavy",
        [
            {
                "role": "user",
                "content": f"Here is a passage:\n\n{_PASSAGE}\n\nHere it is again:\n\n{_PASSAGE}\n\n"
                "Copy the passage once more, exactly, word for word.",
            }
        ],
    ),
    "bot quoting a tool result": (
        "copy-heavy",
        [
            {
                "role": "system",
                "content": "You are a retail support agent. Quote tool results to the customer exactly.",
            },
            {"role": "user", "content": "What is in my order #W4316152?"},
            {"role": "assistant", "content": f"get_order_details returned: {_ORDER}"},
            {"role": "user", "content": "Please repeat the full order details exactly as the tool returned them."},
        ],
    ),
    "code edit: rename a variable": (
        "copy-heavy",
        [
            {
                "role": "user",
                "content": f"Here is a Python function:\n\n```python\n{_CODE}```\n\nRename the variable "
                "`total` to `amount` and write out the whole function.",
            }
        ],
    ),
    "plain chat: history of computing": (
        "plain",
        [{"role": "user", "content": "Tell me about the history of computing in a few sentences."}],
    ),
    "plain chat: advice": (
        "plain",
        [{"role": "user", "content": "What are three good habits for a new programmer? Explain each briefly."}],
    ),
}


@dataclass
class Series:
    decode_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    ids: list[int] | None = None

    @property
    def rate(self) -> float:
        """Median over the runs of (tokens after the first) / (seconds after the first token)."""
        return statistics.median((n - 1) / s for n, s in zip(self.tokens, self.decode_s) if s > 0)


def ours_run(eng, prompt: list[int], new_tokens: int, series: Series) -> None:
    eng.clear_prefix_cache()
    request = eng.submit(prompt, max_new_tokens=new_tokens, temperature=0.0)
    c = request.result()
    series.decode_s.append(c.seconds - c.ttft_s)
    series.tokens.append(c.generated_tokens)
    series.steps, series.drafted, series.accepted = request.forward_steps, request.drafted, request.draft_accepted
    series.ids = c.token_ids


def llama_cpp_run(llm, prompt: list[int], new_tokens: int, series: Series) -> None:
    """llama-cpp-python's generation loop (Llama.generate, greedy), with its draft model when it has one."""
    llm.reset()
    eos = llm.token_eos()
    n, first = 0, None
    start = time.perf_counter()
    for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        if first is None:
            first = time.perf_counter()
        if token == eos:
            break
        n += 1
        if n == new_tokens:
            break
    series.decode_s.append(time.perf_counter() - (first or start))
    series.tokens.append(n)


def speculative_ab(eng, gguf: Path, runs: int, new_tokens: int, threads: int, with_llama_cpp: bool, ubatch: int) -> str:
    """Prompt lookup on vs off (ours), and llama.cpp plain vs its prompt lookup; the report's markdown."""
    from model.serving.drafts import DraftConfig

    on, off = twins(eng, DraftConfig(jump_forward=False))  # prompt lookup alone (these prompts have no grammar)
    prompts = {name: (kind, eng.chat_prompt(messages)) for name, (kind, messages) in SPECULATIVE_PROMPTS.items()}
    runners: dict[str, Callable[[list[int], Series], None]] = {
        "ours": lambda p, s: ours_run(off, p, new_tokens, s),
        "ours lookup": lambda p, s: ours_run(on, p, new_tokens, s),
    }
    llamas = []
    if with_llama_cpp:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        n_ctx = max(len(p) for _, p in prompts.values()) + new_tokens + 16
        common = dict(
            model_path=str(gguf),
            n_ctx=n_ctx,
            n_batch=512,
            n_ubatch=ubatch,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        plain = Llama(**common)
        lookup = Llama(**common, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))
        llamas = [plain, lookup]
        runners["llama.cpp"] = lambda p, s: llama_cpp_run(plain, p, new_tokens, s)
        runners["llama.cpp lookup"] = lambda p, s: llama_cpp_run(lookup, p, new_tokens, s)
    series = {(name, runner): Series() for name in prompts for runner in runners}
    for _, prompt in prompts.values():  # warm-up
        for run in runners.values():
            run(prompt, Series())
    loads = []
    for round_ in range(runs):
        for name, (_, prompt) in prompts.items():
            order = list(runners.items())
            for runner, run in order if round_ % 2 == 0 else order[::-1]:
                run(prompt, series[(name, runner)])
        loads.append(os.getloadavg()[0])
        print(f"speculative round {round_ + 1}/{runs} done, {load()}", flush=True)
    for closable in (on, off, *llamas):
        closable.close()
    lines = [
        "| prompt | kind | tokens | ours tok/s | ours + lookup tok/s | ratio | steps off -> on | drafted / kept "
        "| same ids | llama.cpp tok/s | llama.cpp + lookup tok/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, (kind, _) in prompts.items():
        a, b = series[(name, "ours")], series[(name, "ours lookup")]
        row = (
            f"| {name} | {kind} | {a.tokens[-1]} | {a.rate:.1f} | {b.rate:.1f} | {b.rate / a.rate:.2f}x "
            f"| {a.steps} -> {b.steps} | {b.drafted} / {b.accepted} | {'yes' if a.ids == b.ids else 'NO'} |"
        )
        if with_llama_cpp:
            c, d = series[(name, "llama.cpp")], series[(name, "llama.cpp lookup")]
            row += f" {c.rate:.1f} | {d.rate:.1f} | {d.rate / c.rate:.2f}x |"
        else:
            row += " n/a | n/a | n/a |"
        lines.append(row)
    lines.append("")
    lines.append(
        f"Greedy, at most {new_tokens} new tokens (each engine stops at EOS); decode tok/s = tokens after the first / "
        f"time after the first token, median of {runs} interleaved rounds (order alternating); threads={threads}; "
        f"load average per round {', '.join(f'{x:.2f}' for x in loads)}. Steps, drafts and ids: the last round."
        + (
            f" llama.cpp: n_ubatch={ubatch}"
            + (
                " (AMX CPU workaround: multi-token evaluations, prompt lookup's "
                "verification included, run one token per physical batch)"
                if ubatch == 1
                else ""
            )
            if with_llama_cpp
            else ""
        )
    )
    return "\n".join(lines)
