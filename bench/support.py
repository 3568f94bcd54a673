"""Support bot, τ-bench style: does the bot complete customers' requests on a fresh database?

Two sets, each run with the real model as the bot (`app.Support`, greedy, grammar-constrained):

  flows  bench/data/support_flows.jsonl: scripted customers in legitimate flows, 12 each of look-up, cancel
         and return (users and orders chosen from the vendored τ-bench data, authentication by email and by
         name and zip alternating, one flow in four asks in its first message). The completion rate per kind.
  tau    ../shared/datasets/tau_retail/tasks_train.json: a simulated customer (a local model: by default the
         same model as the bot, `--user-model` another checkpoint) plays each task's `instruction`, sampled
         with a seed per trial. pass^1 and pass^k over `--k` seeds (τ-bench's estimator).

Every bot message is also checked for grounding (app/support/grounding.py): the share of messages with a
sentence that states a number, id, amount, date or product name found in no tool result and no customer
message of the dialogue so far. `--rescore FILE` reports it for a saved `--json` run (one made before the
check existed, say) without running the model.

Every dialogue starts on a fresh copy of the database. It passes when the final database equals the gold
state (the task's gold actions replayed on another fresh copy, as tests/tools/orders/test_gold_replay.py
does) and every required output was said; a look-up flow passes when the bot looked the order up and told
the customer its status. Same-run baselines check the checker: an agent making the gold calls must pass every
dialogue, one doing nothing none. Failed dialogues are put under the first step
they did not reach: auth, lookup, wrong tool, wrong arguments, confirmation, database (see `failure_step`).

    python bench/support.py --set flows                      # 36 scripted flows
    python bench/support.py --set tau --limit 5 --k 2        # first 5 tasks, 2 seeds each
    python bench/support.py --rescore run.json               # grounding of a saved run's messages
    r1 bench support --set tau --limit 5 --user-model path/to/other.gguf
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Run as a file, this script's folder comes first on sys.path and bench/memory.py would shadow `memory`.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "bench" / "data" / "support_flows.jsonl"
TAU_TASKS = ROOT.parent / "shared" / "datasets" / "tau_retail" / "tasks_train.json"
STOP = "###STOP###"

# τ-bench's user-simulation prompt, shortened for a small model, and one worked turn: a 135M model asked to
# role-play a customer in chat turns answers as an assistant instead, so it is asked to write the next line of
# a transcript.
CUSTOMER_PROMPT = """You write the next message of a customer in a chat with an online shop's support agent.
Rules: one or two short sentences; use only the names, emails, zip codes and order ids in the customer's
situation, never made-up ones; say "yes" when the agent asks to confirm the change the customer wants; when
the request is done, write {stop}."""
CUSTOMER_EXAMPLE = (
    "Customer's situation: Your name is Mia Park and your zip code is 10001. Cancel order "
    "#W1111111 because no longer needed.\n\nChat so far:\nAgent: Hi! How can I help you today?\n\n"
    "Write the customer's next message.",
    "Hi, I am Mia Park, zip code 10001. Please cancel order #W1111111, I no longer need it.",
)


@dataclass
class Dialogue:
    """One dialogue's record: what was said, every tool call (held-back proposals included), the verdict."""

    name: str
    kind: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (customer, bot)
    calls: list = field(default_factory=list)  # app.support.ToolCall
    calls_per_turn: list[int] = field(default_factory=list)  # how many of `calls` each customer turn made
    passed: bool = False
    step: str = ""  # the first step not reached, for a failure
    seconds: float = 0.0


# ----- databases and gold states ------------------------------------------------------------------


class Databases:
    """Fresh databases for dialogues: copies of one template built from the vendored data."""

    def __init__(self, workdir: Path) -> None:
        from tools.orders import OrderDB

        self.workdir = workdir
        self.template = workdir / "template.db"
        OrderDB.create(self.template).close()
        db = self.fresh()
        self.initial = db.export()
        db.close()

    def fresh(self):
        from tools.orders import OrderDB

        path = self.workdir / "dialogue.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, path)
        return OrderDB(path, durable=False)

    def gold_state(self, actions: list[dict]) -> dict:
        """The database after the gold actions, replayed as an agent calls tools (name + JSON arguments)."""
        from tools.orders import call_tool, order_tools

        db = self.fresh()
        try:
            tools = order_tools(db)
            for action in actions:
                result = call_tool(tools, action["name"], json.dumps(action["kwargs"]))
                if result.startswith("Error"):
                    raise RuntimeError(f"gold action {action} fails: {result}")
            return db.export()
        finally:
            db.close()


# ----- the verdict --------------------------------------------------------------------------------


def failure_step(dialogue: Dialogue, user_id: str, actions: list[dict]) -> str:
    """The first step of the gold path the dialogue did not reach (or "database": all reached, state differs)."""
    from app.support.guard import NEEDS_CONFIRMATION

    ok = [c for c in dialogue.calls if not c.result.startswith(("Refused", "Error"))]
    if not any(c.name.startswith("find_user_id") and c.result == user_id for c in ok):
        return "auth"
    if not actions:  # a look-up flow
        return "lookup" if not any(c.name == "get_order_details" for c in ok) else "told"
    proposed = [c for c in dialogue.calls if c.result == NEEDS_CONFIRMATION or c in ok]
    for action in actions:
        same_tool = [
            c
            for c in proposed
            if c.name == action["name"] and c.arguments.get("order_id") == action["kwargs"]["order_id"]
        ]
        if not same_tool:
            return "wrong tool"
        if not any(_same_call(c.arguments, action["kwargs"]) for c in same_tool):
            return "wrong arguments"
        if not any(c.name == action["name"] and _same_call(c.arguments, action["kwargs"]) for c in ok):
            return "confirmation"
    return "database"


def _same_call(arguments: dict, gold: dict) -> bool:
    norm = lambda v: sorted(v) if isinstance(v, list) else v  # noqa: E731 (item lists compare as multisets)
    return arguments.keys() == gold.keys() and all(norm(arguments[k]) == norm(gold[k]) for k in gold)


def judge(
    dialogue: Dialogue,
    db,
    databases: Databases,
    user_id: str,
    actions: list[dict],
    outputs: list[str],
    order_id: str | None = None,
) -> None:
    """Set `passed` and, for a failure, `step`."""
    final = db.export()
    gold = databases.gold_state(actions)
    said = " ".join(bot for _, bot in dialogue.turns).lower()
    passed = final == gold and all(output.lower() in said for output in outputs)
    if not actions and order_id is not None:  # a look-up: the order was looked up and its status told
        status = databases.initial["orders"][order_id]["status"]
        looked_up = any(
            c.name == "get_order_details"
            and c.arguments.get("order_id") == order_id
            and not c.result.startswith(("Refused", "Error"))
            for c in dialogue.calls
        )
        passed = passed and looked_up and status in said
    dialogue.passed = passed
    dialogue.step = "" if passed else failure_step(dialogue, user_id, actions)


# ----- the two sets -------------------------------------------------------------------------------


def run_flow(bot, databases: Databases, flow: dict, index: int) -> Dialogue:
    from app import Support

    dialogue = Dialogue(f"{flow['kind']}-{index}", flow["kind"])
    db = databases.fresh()
    try:
        support = Support(db, bot, **SUPPORT_OPTIONS)
        start = time.perf_counter()
        for text in flow["turns"]:
            reply = support.reply("bench", text)
            dialogue.turns.append((text, reply.text))
            dialogue.calls.extend(reply.tool_calls)
            dialogue.calls_per_turn.append(len(reply.tool_calls))
        dialogue.seconds = time.perf_counter() - start
        judge(dialogue, db, databases, flow["user_id"], flow["actions"], [], flow.get("order_id"))
    finally:
        db.close()
    return dialogue


class SimulatedCustomer:
    """A local model playing a task's instruction: shown the chat so far, it writes the customer's next message."""

    def __init__(self, engine, instruction: str, seed: int, temperature: float, max_new_tokens: int = 60) -> None:
        self.engine = engine
        self.instruction = instruction
        self.lines: list[str] = []
        self.seed = seed
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens

    def say(self, bot_text: str) -> str:
        from model import SamplingParams

        self.lines.append(f"Agent: {bot_text}")
        request = (
            f"Customer's situation: {self.instruction.strip()}\n\nChat so far:\n"
            + "\n".join(self.lines)
            + "\n\nWrite the customer's next message."
        )
        messages = [
            {"role": "system", "content": CUSTOMER_PROMPT.format(stop=STOP)},
            {"role": "user", "content": CUSTOMER_EXAMPLE[0]},
            {"role": "assistant", "content": CUSTOMER_EXAMPLE[1]},
            {"role": "user", "content": request},
        ]
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=0.95,
            seed=self.seed * 1000 + len(self.lines),
            stop=("\n",),
        )
        text = self.engine.submit(self.engine.chat_prompt(messages), params).result().text.strip()
        text = text.removeprefix("Customer:").strip() or "Hello?"
        self.lines.append(f"Customer: {text}")
        return text


def run_task(bot, customer_engine, databases: Databases, task: dict, index: int, seed: int, args) -> Dialogue:
    from app import Support

    dialogue = Dialogue(f"task-{index}-seed-{seed}", "+".join(sorted({a["name"] for a in task["actions"]})))
    customer = SimulatedCustomer(customer_engine, task["instruction"], seed, args.user_temperature)
    db = databases.fresh()
    try:
        support = Support(db, bot, **SUPPORT_OPTIONS)
        start = time.perf_counter()
        bot_text = "Hi! How can I help you today?"
        for _ in range(args.max_turns):
            text = customer.say(bot_text)
            if STOP in text:
                break
            reply = support.reply("bench", text)
            bot_text = reply.text
            dialogue.turns.append((text, bot_text))
            dialogue.calls.extend(reply.tool_calls)
            dialogue.calls_per_turn.append(len(reply.tool_calls))
        dialogue.seconds = time.perf_counter() - start
        judge(dialogue, db, databases, task["user_id"], task["actions"], task.get("outputs", []))
    finally:
        db.close()
    return dialogue


SUPPORT_OPTIONS: dict = {}  # the bot as it ships (app.support.SupportOptions defaults)


# ----- reporting ----------------------------------------------------------------------------------


def grounding(
    turns: list, calls_per_turn: list[int], results: list[str], products: tuple[str, ...]
) -> list[tuple[str, bool, bool]]:
    """(bot message, written by code, holds a sentence that no tool result or customer message so far grounds)
    for each turn of one dialogue. Code writes the confirmation question of a held write (its result is the
    guard's NEEDS_CONFIRMATION), stating the call's ids, which may come from the database without a read."""
    from app.support.grounding import Evidence, unsupported
    from app.support.guard import NEEDS_CONFIRMATION

    checked, said, done = [], [], 0
    for (customer, bot), count in zip(turns, calls_per_turn):
        said.append(customer)
        held = NEEDS_CONFIRMATION in results[done : done + count]
        done += count
        evidence = Evidence([r for r in results[:done] if r != NEEDS_CONFIRMATION] + said)
        checked.append((bot, held, bool(unsupported(bot, evidence, products))))
    return checked


def report_grounding(
    records: list[tuple[list, list[int], list[str]]], products: tuple[str, ...], verbose: bool
) -> None:
    checked = [c for turns, per_turn, results in records for c in grounding(turns, per_turn, results, products)]
    for label, by_code in (("model-written messages", False), ("code-written confirmation questions", True)):
        group = [(message, bad) for message, code, bad in checked if code == by_code]
        bad = [message for message, is_bad in group if is_bad]
        print(
            f"{label} with an ungrounded sentence: {len(bad)}/{len(group)} ({100 * len(bad) / max(len(group), 1):.0f}%)"
        )
        for message in bad if verbose else []:
            print(f"    ungrounded> {message[:200]}")
    print(f"(load average {os.getloadavg()[0]:.1f})")


def product_names() -> tuple[str, ...]:
    from tools.orders import OrderDB
    from tools.orders.actions import list_all_product_types

    with tempfile.TemporaryDirectory(prefix="r1-bench-support-") as workdir:
        db = OrderDB.create(Path(workdir) / "products.db")
        try:
            return tuple(json.loads(list_all_product_types(db)))
        finally:
            db.close()


def pass_hat_k(successes: list[int], trials: int, k: int) -> float:
    """τ-bench's pass^k: the chance that k trials of a task, drawn from its `trials`, all pass; mean over tasks."""
    return statistics.mean(math.comb(c, k) / math.comb(trials, k) for c in successes)


def show(dialogue: Dialogue, verbose: bool) -> None:
    from app.support.guard import NEEDS_CONFIRMATION

    verdict = "pass" if dialogue.passed else f"FAIL at {dialogue.step}"
    print(
        f"{dialogue.name:<28} {verdict:<24} {dialogue.seconds:6.1f}s  calls: "
        + ", ".join(f"{c.name}" + ("(held)" if c.result == NEEDS_CONFIRMATION else "") for c in dialogue.calls),
        flush=True,
    )
    if verbose:
        for customer, bot in dialogue.turns:
            print(f"    customer> {customer[:200]}\n    bot>      {bot[:200]}")


def report(dialogues: list[Dialogue], by: str) -> None:
    kinds = sorted({d.kind for d in dialogues})
    print(f"\n{'kind':<48} {'passed':>8}  failed at (first step not reached)")
    for kind in [*kinds, "all"]:
        group = [d for d in dialogues if kind in ("all", d.kind)]
        steps = Counter(d.step for d in group if not d.passed)
        print(f"{kind:<48} {sum(d.passed for d in group):>3}/{len(group):<4}  {dict(steps.most_common())}")
    seconds = [d.seconds for d in dialogues]
    print(f"\nseconds per dialogue: median {statistics.median(seconds):.1f}, total {sum(seconds):.0f} ({by})")


def baselines(databases: Databases, cases: list[dict]) -> None:
    """The checker on two agents without a model: one that makes the gold calls (and says the order's status
    and the required outputs) must pass every case; one that does nothing must pass none."""
    from app.support.agent import ToolCall
    from tools.orders import call_tool, order_tools

    gold_ok = nothing_ok = 0
    for case in cases:
        order_id = case.get("order_id")
        for agent in ("gold", "nothing"):
            dialogue = Dialogue(agent, agent)
            db = databases.fresh()
            try:
                if agent == "gold":
                    tools = order_tools(db)
                    user = databases.initial["users"][case["user_id"]]
                    calls = [("find_user_id_by_email", {"email": user["email"]})]
                    calls += [("get_order_details", {"order_id": order_id})] if order_id else []
                    calls += [(a["name"], a["kwargs"]) for a in case["actions"]]
                    dialogue.calls = [ToolCall(n, a, call_tool(tools, n, json.dumps(a))) for n, a in calls]
                    status = databases.initial["orders"][order_id]["status"] if order_id else ""
                    dialogue.turns = [("", " ".join([f"Your order is {status}.", *case.get("outputs", [])]))]
                judge(dialogue, db, databases, case["user_id"], case["actions"], case.get("outputs", []), order_id)
            finally:
                db.close()
            gold_ok += agent == "gold" and dialogue.passed
            nothing_ok += agent == "nothing" and dialogue.passed
    print(
        f"baselines (same checker, no model): gold calls pass {gold_ok}/{len(cases)}, "
        f"doing nothing passes {nothing_ok}/{len(cases)}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Sets and scoring: see the module docstring."
    )
    parser.add_argument("--set", choices=["flows", "tau"], default="tau")
    parser.add_argument(
        "--limit", type=int, default=0, help="first N flows per kind / first N tasks (default: 12 / 10)"
    )
    parser.add_argument("--offset", type=int, default=0, help="tau: skip the first N tasks")
    parser.add_argument("--k", type=int, default=2, help="tau: trials (customer seeds) per task; pass^1..pass^k")
    parser.add_argument(
        "--model", default="default", help="the bot's model: a .gguf file or HF directory (default: bundled)"
    )
    parser.add_argument("--user-model", default=None, help="tau: the simulated customer's model (default: --model)")
    parser.add_argument("--quant", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--user-temperature", type=float, default=0.7, help="tau: the customer's sampling temperature")
    parser.add_argument("--max-turns", type=int, default=8, help="tau: customer messages per dialogue")
    parser.add_argument("--verbose", action="store_true", help="print every dialogue")
    parser.add_argument("--json", type=Path, help="also write every dialogue here")
    parser.add_argument("--rescore", type=Path, help="only report the grounding of the messages of a saved --json run")
    args = parser.parse_args()
    if args.rescore:
        saved = json.loads(args.rescore.read_text())
        report_grounding(
            [(d["turns"], d["calls_per_turn"], [c["result"] for c in d["calls"]]) for d in saved],
            product_names(),
            args.verbose,
        )
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model

    bot_engine = model.load(args.model, quant=args.quant, threads=args.threads)
    dialogues: list[Dialogue] = []
    with tempfile.TemporaryDirectory(prefix="r1-bench-support-") as workdir:
        databases = Databases(Path(workdir))
        if args.set == "flows":
            flows = [json.loads(line) for line in FLOWS.read_text().splitlines() if line.strip()]
            per_kind = args.limit or 12
            counts: Counter = Counter()
            chosen = []
            for flow in flows:
                counts[flow["kind"]] += 1
                if counts[flow["kind"]] <= per_kind:
                    chosen.append(flow)
            baselines(databases, chosen)
            for i, flow in enumerate(chosen):
                dialogues.append(run_flow(bot_engine, databases, flow, i))
                show(dialogues[-1], args.verbose)
            report(dialogues, f"{args.model}, {len(chosen)} flows")
            report_grounding(
                [(d.turns, d.calls_per_turn, [c.result for c in d.calls]) for d in dialogues],
                product_names(),
                args.verbose,
            )
        else:
            if not TAU_TASKS.exists():
                raise SystemExit(f"{TAU_TASKS} not found (../shared/datasets is beside the project in CI and dev)")
            tasks = json.loads(TAU_TASKS.read_text())[args.offset :][: args.limit or 10]
            customer_engine = (
                bot_engine
                if args.user_model in (None, args.model)
                else model.load(args.user_model, quant=args.quant, threads=args.threads)
            )
            baselines(databases, tasks)
            successes = []
            for i, task in enumerate(tasks, start=args.offset):
                results = []
                for seed in range(args.k):
                    results.append(run_task(bot_engine, customer_engine, databases, task, i, seed, args))
                    show(results[-1], args.verbose)
                dialogues.extend(results)
                successes.append(sum(d.passed for d in results))
            report(
                dialogues,
                f"bot {args.model}, customer {args.user_model or args.model}, {len(tasks)} tasks x {args.k} seeds",
            )
            for k in range(1, args.k + 1):
                print(f"pass^{k}: {pass_hat_k(successes, args.k, k):.3f}")
            report_grounding(
                [(d.turns, d.calls_per_turn, [c.result for c in d.calls]) for d in dialogues],
                product_names(),
                args.verbose,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "name": d.name,
                        "kind": d.kind,
                        "passed": d.passed,
                        "step": d.step,
                        "seconds": round(d.seconds, 2),
                        "turns": d.turns,
                        "calls_per_turn": d.calls_per_turn,
                        "calls": [{"name": c.name, "arguments": c.arguments, "result": c.result} for c in d.calls],
                    }
                    for d in dialogues
                ],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
