"""Memory tiers: fact recall over a long conversation, time to first token with the prefix cache, and
vector-store ingest and query speed.

(a) recall: a 60-turn conversation plants 20 facts in its first turns, chats about other things, then
    asks about each fact. Prompts are built as the chat builds them (`app.memory.ConversationMemory`). The
    window (tier 2, counted with the default model's tokenizer) is small enough that every fact has left it
    by then. For each question we check whether the fact's text is in the prompt: with the window only, and
    with the window plus the turns it evicted into the vector store (tier 3: this user and conversation,
    top-k within the recall distance). With --answers the default model also answers from each prompt, and
    we check that its reply names the fact's value.
(b) time to first token (tier 1): a conversation of GSM8K questions answered by the default model, its
    prompts built by ConversationMemory. Each measured turn's prompt is served by the engine (the radix
    prefix cache holds the earlier turns) and by the same weights in an engine with the prefix cache off.
    Once with the default window (no evictions) and once with a small one (the window is cut every few turns).
(c) documents: the planted facts of bench/data/memory_facts.jsonl (written before the first run, never tuned
    on), each a one-sentence paragraph right after a long unrelated paragraph of GSM8K prose, in six notes
    files, stored with ten files of prose alone. Each fact is asked for in other words (a paraphrase);
    recall@k: a chunk holding the fact is among the k nearest of `search_documents`.
(d) ingest: `VectorStore.add_document` (the path of `r1 memory add`) over Markdown files made of
    GSM8K questions and worked answers (real prose) up to --chunks chunks, in chunks per second; query latency
    (embedding included) with the first file stored (the baseline) and with all of them.

Usage: python bench/memory.py [--parts recall,ttft,documents,ingest] [--window 512] [--k 3] [--answers] [--turns 24]
       [--chunks 10000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

# Run as a file, this script's folder comes first on sys.path and its name would shadow the `memory` package.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.config import Settings
from app.memory import ConversationMemory
from memory.matching import best_sentences
from memory.vector_store import VectorStore

FACTS = [  # (what the user says early on, what they ask at the end, the value the answer must contain)
    ("My sister's name is Clara.", "What is my sister's name?", "Clara"),
    ("My dog is a corgi called Waffles.", "What is my dog called?", "Waffles"),
    ("I was born in the city of Tampere.", "In which city was I born?", "Tampere"),
    ("My favourite colour is teal.", "What is my favourite colour?", "teal"),
    ("My bike lock combination is 3816.", "What is my bike lock combination?", "3816"),
    ("I work as a marine biologist.", "What is my job?", "marine biologist"),
    ("My car is a green Volvo.", "What car do I drive?", "Volvo"),
    ("My dentist appointment is on the 14th.", "When is my dentist appointment?", "14"),
    ("I am allergic to peanuts.", "What am I allergic to?", "peanuts"),
    ("My best friend lives in Osaka.", "Where does my best friend live?", "Osaka"),
    ("I play the cello in an orchestra.", "Which instrument do I play?", "cello"),
    ("My wifi password is marmalade42.", "What is my wifi password?", "marmalade42"),
    ("My grandmother turned 97 this year.", "How old is my grandmother?", "97"),
    ("My favourite book is Dune.", "What is my favourite book?", "Dune"),
    ("I keep the spare key under the blue flowerpot.", "Where is the spare key?", "flowerpot"),
    ("My son's school is called Maple Grove.", "What is my son's school called?", "Maple Grove"),
    ("I drink my coffee with oat milk.", "How do I take my coffee?", "oat milk"),
    ("My flight to Lima leaves at 6:45.", "When does my flight to Lima leave?", "6:45"),
    ("My manager's name is Priya.", "What is my manager's name?", "Priya"),
    ("My locker at the gym is number 212.", "What is my gym locker number?", "212"),
]
FILLER = [  # (question, a short answer): chat about other things between the facts and the questions
    (
        "What's a good way to cook rice?",
        "Rinse it, use about 1.5 cups of water per cup, simmer covered for 15 minutes.",
    ),
    ("Can you explain what a black hole is?", "A region where gravity is so strong that not even light escapes."),
    ("Tell me a fun fact about octopuses.", "Octopuses have three hearts and blue blood."),
    ("How do I fix a squeaky door?", "Put a little oil or soap on the hinge pins."),
    ("What are some tips for sleeping better?", "Keep a regular schedule, a dark room and no screens before bed."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light."),
    ("How many planets are in the solar system?", "Eight."),
    ("What's the difference between weather and climate?", "Weather is day to day; climate is the long-term average."),
    ("Suggest a name for a sailing boat.", "How about Sea Breeze?"),
    ("How do vaccines work?", "They train the immune system to recognise a germ before you meet it."),
    ("What is the tallest mountain on Earth?", "Mount Everest, at about 8,849 metres."),
    (
        "Give me a short poem about autumn.",
        "Leaves let go, the light grows thin, the year breathes out and draws us in.",
    ),
    ("How do I remove a coffee stain?", "Blot it, then rinse with cold water and a little dish soap."),
    ("What is photosynthesis?", "Plants turning light, water and carbon dioxide into sugar and oxygen."),
    ("How long should I boil an egg?", "About 7 minutes for a firm yolk."),
    ("Recommend a board game for four players.", "Ticket to Ride is a good choice."),
    ("What causes thunder?", "Lightning heats the air so fast that it expands with a bang."),
    ("How do airplanes stay in the air?", "Their wings push air down, and the air pushes the wings up."),
    ("What is a haiku?", "A three-line poem of five, seven and five syllables."),
    ("How can I learn to juggle?", "Start with one ball, then two, and practise over a bed."),
]
USER, SESSION = "bench-user", "bench-session"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/datasets/gsm8k/train.jsonl"
PLANTED_FACTS = Path(__file__).resolve().parent / "data" / "memory_facts.jsonl"
PREVIEW_CHARS = 300  # what `r1 memory search` showed of a hit before it showed the matching sentences


def default_tokenizer():
    from model.loading.checkpoint import resolve_source
    from model.loading.gguf import open_gguf, read_metadata
    from model.tokenizer import Tokenizer

    path = resolve_source("default")
    return Tokenizer.from_gguf(path, read_metadata(open_gguf(path)))


def recall(args: argparse.Namespace) -> None:
    engine = None
    if args.answers:
        import model

        engine = model.load("default", quant=args.quant)
    chat_model = engine or SimpleNamespace(tokenizer=default_tokenizer(), context_length=8192)
    settings = Settings(
        system_prompt="You are a helpful assistant. Answer briefly.",
        max_new_tokens=32,
        memory_window_tokens=args.window,
        memory_recall_k=args.k,
    )
    with tempfile.TemporaryDirectory() as tmp:
        # One conversation per condition, each with its own history (its own replies when --answers).
        memories = {
            "window": ConversationMemory(None, USER),
            "window + store": ConversationMemory(VectorStore(Path(tmp) / "chroma"), USER),
        }
        histories: dict[str, list[dict]] = {condition: [] for condition in memories}
        script = [(f"Please remember this: {fact}", "Noted, I will remember that.") for fact, _, _ in FACTS] + FILLER
        for condition, history in histories.items():  # 40 turns: the facts, then chat about other things
            for question, answer in script:
                history.append({"role": "user", "content": question})
                memories[condition].prompt(SESSION, history, chat_model, settings)
                history.append({"role": "assistant", "content": answer})
        in_prompt: dict[str, list[bool]] = {condition: [] for condition in memories}
        answered: dict[str, list[bool]] = {condition: [] for condition in memories}
        prompt_seconds = []
        for fact, question, value in FACTS:  # 20 more turns: the questions
            for condition, memory in memories.items():
                history = histories[condition]
                history.append({"role": "user", "content": question})
                start = time.perf_counter()
                messages = memory.prompt(SESSION, history, chat_model, settings).messages
                if condition == "window + store":
                    prompt_seconds.append(time.perf_counter() - start)
                in_prompt[condition].append(any(fact in m["content"] for m in messages))
                reply = "Let me check."
                if engine is not None:
                    reply = engine.chat(messages, max_new_tokens=32, temperature=0).strip() or reply
                    answered[condition].append(value.lower() in reply.lower())
                history.append({"role": "assistant", "content": reply})
        cut = memories["window + store"].window_of(SESSION)
        print(
            f"window budget {args.window} tokens (default model's tokenizer), up to {args.k} snippets from the store; "
            f"{cut.evicted_messages} messages evicted in {cut.evictions} cuts; 60 user turns, 20 facts"
        )
        print("| condition | fact in prompt | model answer names the fact |")
        print("|---|---:|---:|")
        for condition in memories:
            hit = sum(in_prompt[condition])
            named = f"{sum(answered[condition])}/{len(FACTS)}" if engine else "not run"
            print(f"| {condition} | {hit}/{len(FACTS)} ({100 * hit / len(FACTS):.0f}%) | {named} |")
        print(
            f"prompt with recall (window + query embedding + search) median "
            f"{1000 * statistics.median(prompt_seconds):.1f} ms",
            flush=True,
        )


def first_token(args: argparse.Namespace) -> None:
    import model
    from model.serving.scheduler import SchedulerConfig
    from model.tokenizer import split_reasoning

    engine = model.load("default", quant=args.quant or "auto", kv_cache_mb=256)
    plain = model.Engine(engine.model, engine.tokenizer, kv_cache_mb=256, scheduler=SchedulerConfig(prefix_cache=False))
    questions = [p.split("?")[0].strip() + "?" for p in corpus_paragraphs(args.corpus)[: args.turns]]
    for window in (None, args.ttft_window):
        engine.clear_prefix_cache()  # the second run asks the same questions: start it cold too
        settings = Settings(max_new_tokens=args.reply_tokens, memory_window_tokens=window)
        with tempfile.TemporaryDirectory() as tmp:
            memory = ConversationMemory(VectorStore(Path(tmp) / "chroma"), USER)
            history: list[dict] = []
            rows, cuts = [], 0
            for turn, question in enumerate(questions, 1):
                history.append({"role": "user", "content": question})
                turn_prompt = memory.prompt(SESSION, history, engine, settings)
                cut = memory.window_of(SESSION).evictions > cuts
                cuts = memory.window_of(SESSION).evictions
                ids = engine.chat_prompt(turn_prompt.messages)
                done = engine.submit(ids, max_new_tokens=args.reply_tokens, temperature=0).result()
                if turn > 1 and (turn % args.every == 0 or turn == len(questions) or window):
                    cold = plain.submit(ids, max_new_tokens=1).result()
                    rows.append((turn, len(ids), done.cached_tokens, done.ttft_s, cold.ttft_s, cut))
                history.append({"role": "assistant", "content": split_reasoning(done.text)[1]})
        label = (
            f"{window}-token window" if window else f"default window ({memory.window_of(SESSION).budget_tokens} tokens)"
        )
        print(
            f"\n{label}: {len(questions)} turns of GSM8K questions, {args.reply_tokens}-token greedy replies, "
            f"{cuts} cuts"
        )
        print("| turn | prompt tokens | from the prefix cache | TTFT with tier 1 ms | TTFT without ms | speed-up |")
        print("|---:|---:|---:|---:|---:|---:|")
        for turn, tokens, cached, warm, cold, cut in rows:
            note = " (after a cut)" if cut else ""
            print(
                f"| {turn}{note} | {tokens} | {cached} | {1000 * warm:.0f} | {1000 * cold:.0f} | {cold / warm:.1f}x |"
            )
        warm = statistics.median(r[3] for r in rows)
        cold = statistics.median(r[4] for r in rows)
        print(
            f"medians over the {len(rows)} measured turns: {1000 * warm:.0f} ms with tier 1, {1000 * cold:.0f} ms "
            f"without: {cold / warm:.1f}x; {sum(r[2] for r in rows) / sum(r[1] for r in rows):.0%} of prompt tokens "
            f"from cache",
            flush=True,
        )
    plain.close()
    engine.close()


def corpus_paragraphs(path: Path) -> list[str]:
    """GSM8K question + worked answer pairs as prose paragraphs (real English, 200-800 characters)."""
    paragraphs = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        answer = re.sub(r"<<[^>]*>>", "", item["answer"]).replace("\n#### ", " The answer is ").replace("\n", " ")
        paragraphs.append(f"{item['question']} {answer}.")
    return paragraphs


def documents(args: argparse.Namespace) -> None:
    facts = [json.loads(line) for line in PLANTED_FACTS.read_text().splitlines() if line.strip()]
    prose = corpus_paragraphs(args.corpus)
    long_prose = iter(p for p in prose if 350 <= len(p) <= 700)
    notes_files = 6
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(Path(tmp) / "chroma")
        for n in range(notes_files):  # each fact right after a long unrelated paragraph, another one after it
            parts = [f"# Notes {n + 1}"]
            for fact in facts[n::notes_files]:
                parts += [next(long_prose), fact["fact"]]
            parts.append(next(long_prose))
            (Path(tmp) / f"notes{n}.md").write_text("\n\n".join(parts))
        for n in range(10):  # prose alone: other documents to find instead
            (Path(tmp) / f"prose{n}.md").write_text("\n\n".join(next(long_prose) for _ in range(20)))
        chunks = sum(store.add_document(USER, path).chunks for path in sorted(Path(tmp).glob("*.md")))
        ranks, previewed, shown = [], 0, 0
        for fact in facts:
            hits = store.search_documents(USER, fact["question"], k=10)
            rank = next((i for i, hit in enumerate(hits, 1) if fact["fact"] in " ".join(hit.text.split())), None)
            ranks.append(rank)
            if rank is not None and rank <= 3:  # what `r1 memory search -k 3` shows of the hit holding the fact
                previewed += fact["fact"] in " ".join(hits[rank - 1].text.split())[:PREVIEW_CHARS]
                shown += fact["fact"] in best_sentences(store.embedding, fact["question"], [hits[rank - 1]])[0].text
    n = len(facts)
    print(
        f"documents: {n} planted facts in {notes_files} notes files + 10 prose files, {chunks} chunks; "
        f"one paraphrased question per fact; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| recall@1 | recall@3 | recall@10 | found in the top 3, and in the first 300 characters of its hit | "
        "found in the top 3, and in the matching sentences shown |"
    )
    print("|---:|---:|---:|---:|---:|")
    at = lambda k: sum(r is not None and r <= k for r in ranks)  # noqa: E731
    print(f"| {at(1)}/{n} | {at(3)}/{n} | {at(10)}/{n} | {previewed}/{n} | {shown}/{n} |")
    print("missed at 3: " + "; ".join(f["question"] for f, r in zip(facts, ranks) if r is None or r > 3), flush=True)


def ingest(args: argparse.Namespace) -> None:
    paragraphs = corpus_paragraphs(args.corpus)
    rng = random.Random(1)
    queries = [p.split("?")[0] + "?" for p in rng.sample(paragraphs, args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(Path(tmp) / "chroma")
        store.embedding(["warm up"])  # load MiniLM outside the timings

        def query_latency() -> tuple[list[float], list[float]]:
            """Seconds per search_documents call (what a user waits for), and per query embedding alone."""
            total, embed = [], []
            for query in queries:
                start = time.perf_counter()
                store.embedding([query])
                embed.append(time.perf_counter() - start)
                start = time.perf_counter()
                store.search_documents(USER, query, k=5)
                total.append(time.perf_counter() - start)
            return total, embed

        added, files, ingest_seconds, small, baseline_chunks = 0, 0, 0.0, ([], []), 0
        while added < args.chunks:  # files of --per-file paragraphs, cycling through the corpus
            path = Path(tmp) / f"doc{files:04d}.md"
            first = files * args.per_file
            path.write_text("\n\n".join(paragraphs[(first + i) % len(paragraphs)] for i in range(args.per_file)))
            start = time.perf_counter()
            added += store.add_document(USER, path).chunks
            ingest_seconds += time.perf_counter() - start
            files += 1
            if files == 1:
                small, baseline_chunks = query_latency(), added
        large = query_latency()
    print(
        f"ingest: {added} chunks in {files} Markdown files of GSM8K prose, {ingest_seconds:.1f} s, "
        f"{added / ingest_seconds:.1f} chunks/s"
    )
    print("| chunks stored | query median ms | query p95 ms | of which embedding the query, median ms |")
    print("|---:|---:|---:|---:|")
    for stored, (seconds, embed) in ((baseline_chunks, small), (added, large)):
        seconds = sorted(seconds)
        p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))]
        print(
            f"| {stored} | {1000 * statistics.median(seconds):.1f} | {1000 * p95:.1f} | {1000 * statistics.median(embed):.1f} |"
        )
    ratio = statistics.median(large[0]) / statistics.median(small[0])
    print(f"query median at {added} / at {baseline_chunks} chunks: {ratio:.2f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="recall,ttft,documents,ingest", help="which parts to run, comma-separated")
    parser.add_argument("--window", type=int, default=512, help="tier-2 budget in tokens (small, so facts leave it)")
    parser.add_argument("--k", type=int, default=3, help="snippets retrieved from the store per question")
    parser.add_argument("--answers", action="store_true", help="also have the default model answer each prompt")
    parser.add_argument(
        "--quant",
        choices=["int8", "int4"],
        default=None,
        help="weights for --answers (default fp32) and for the TTFT part (default: auto = int4)",
    )
    parser.add_argument("--turns", type=int, default=24, help="conversation turns for the TTFT part")
    parser.add_argument("--reply-tokens", type=int, default=48, help="tokens per reply in the TTFT part")
    parser.add_argument(
        "--every", type=int, default=4, help="measure TTFT without the cache every N turns (and the last)"
    )
    parser.add_argument("--ttft-window", type=int, default=1024, help="the small window of the TTFT part's second run")
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks to ingest for the speed part (0 skips it)")
    parser.add_argument("--per-file", type=int, default=100, help="corpus paragraphs per generated file")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="JSONL with question/answer (GSM8K)")
    parser.add_argument("--queries", type=int, default=50, help="queries per latency measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for MiniLM (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    known = {"recall", "ttft", "documents", "ingest"}
    if not parts <= known:
        parser.error(f"unknown parts {sorted(parts - known)}; choose from {', '.join(sorted(known))}")
    if "recall" in parts:
        recall(args)
    if "ttft" in parts:
        first_token(args)
    if "documents" in parts:
        documents(args)
    if "ingest" in parts and args.chunks:
        ingest(args)
    print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
