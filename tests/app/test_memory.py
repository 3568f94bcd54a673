"""The memory tiers as chat, the bot and `solve` use them: real Chroma on disk, the default model's tokenizer.

The model itself is not needed here: prompts are checked as messages and token ids (end-to-end turns on the
real model are in test_conversation.py).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from app.config import Settings
from app.memory import (
    ConversationMemory,
    SolvedProblems,
    SupportMemory,
    same_problem,
    try_open_vector_store,
)
from memory.vector_store import TURNS, MemoryStoreError
from memory.window import chat_token_counter

SYSTEM = "You are a helpful assistant."
FILLER = [
    ("What's a good way to cook rice?", "Rinse it, then simmer it covered for 15 minutes."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light."),
    ("How do I fix a squeaky door?", "Put a little oil on the hinge pins."),
    ("What causes thunder?", "Lightning heats the air so fast that it expands with a bang."),
    ("How long should I boil an egg?", "About 7 minutes for a firm yolk."),
    ("What is a haiku?", "A three-line poem of five, seven and five syllables."),
]


@pytest.fixture
def model(default_tokenizer):
    return SimpleNamespace(tokenizer=default_tokenizer, context_length=8192)


def settings(window: int = 160, k: int = 3) -> Settings:
    return Settings(system_prompt=SYSTEM, max_new_tokens=64, memory_window_tokens=window, memory_recall_k=k)


def converse(memory, session, model, turns, config):
    """Run user turns through the memory (each answered with a fixed reply); returns every TurnPrompt."""
    history, prompts = [], []
    for question, answer in turns:
        history.append({"role": "user", "content": question})
        prompts.append(memory.prompt(session, history, model, config))
        history.append({"role": "assistant", "content": answer})
    return history, prompts


def test_chat_recalls_what_left_the_window_of_this_conversation_only(store, model):
    memory = ConversationMemory(store)
    config = settings()
    planted = [("Please remember: my locker code is 4471.", "Noted."), *FILLER]
    _, prompts = converse(memory, "chat-a", model, [*planted, ("What is my locker code?", "")], config)
    window = memory.window_of("chat-a")
    assert window.evicted_messages >= 2 and window.tokens() <= 160
    asked = prompts[-1]
    assert all("4471" not in m["content"] for m in window.messages)  # it left the window...
    assert asked.recalled and asked.recalled[0].source == "conversation chat-a, turn 0"
    assert (
        "[conversation chat-a, turn 0] user: Please remember: my locker code is 4471." in asked.messages[-1]["content"]
    )
    assert asked.messages[-1]["content"].endswith("What is my locker code?")  # ...and came back with its source
    assert asked.messages[0] == {"role": "system", "content": SYSTEM}

    _, other = converse(memory, "chat-b", model, [*FILLER, ("What is my locker code?", "")], config)
    assert memory.window_of("chat-b").evicted_messages > 0
    assert all("4471" not in m["content"] for m in other[-1].messages)  # another conversation never sees it
    assert all(hit.metadata["session"] == "chat-b" for hit in other[-1].recalled)


def test_recalled_documents_and_unrelated_turns(store, model, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Office\n\nThe office wifi password is marmalade42.")
    store.add_document("local", notes)
    memory = ConversationMemory(store)
    _, prompts = converse(
        memory,
        "chat",
        model,
        [("What is the office wifi password?", ""), ("Tell me a joke.", "")],
        settings(window=4000),
    )
    assert [hit.source for hit in prompts[0].recalled] == [f"{notes.resolve()}, chunk 1"]
    assert "marmalade42" in prompts[0].messages[-1]["content"]
    assert (
        prompts[0].shown == f"[{notes.resolve()}, line 3] The office wifi password is marmalade42."
    )  # what the chat shows
    assert prompts[1].recalled == [] and prompts[1].shown == ""  # nothing close enough: the prompt is left alone
    assert prompts[1].messages[-1] == {"role": "user", "content": "Tell me a joke."}


def test_consecutive_turns_share_their_prompt_prefix(store, model, default_tokenizer):
    """Tier 1 reuses a prompt's cached prefix: each turn's ids start with everything of the previous turn's
    prompt before its newest user message (where the recalled snippets go), except right after a cut."""
    memory = ConversationMemory(store)
    planted = [("Please remember: my locker code is 4471.", "Noted."), *FILLER * 3, ("What is my locker code?", "")]

    def ids(messages, generation=True):
        return default_tokenizer.encode(
            default_tokenizer.apply_chat_template(messages, add_generation_prompt=generation), add_bos=False
        )

    history, previous, cuts, shared = [], None, 0, 0
    for question, answer in planted:
        history.append({"role": "user", "content": question})
        evictions = memory.window_of("chat").evictions if memory.window_of("chat") else 0
        turn = memory.prompt("chat", history, model, settings(window=300))
        current = ids(turn.messages)
        if previous is not None:
            if memory.window_of("chat").evictions != evictions:
                cuts += 1
            else:
                before_newest = ids(previous.messages[:-1], generation=False)
                assert current[: len(before_newest)] == before_newest
                shared += 1
        previous = turn
        history.append({"role": "assistant", "content": answer})
    assert cuts >= 1 and shared >= 3 * cuts


def test_a_restart_rebuilds_the_window_without_writing_twice(store, model):
    config = settings()
    first = ConversationMemory(store)
    history, prompts = converse(
        first,
        "chat",
        model,
        [("Please remember: my locker code is 4471.", "Noted."), *FILLER, ("What is my locker code?", "4471")],
        config,
    )
    before = store.stats()
    written = []
    add_turns = store.add_turns
    store.add_turns = lambda *args: written.append(add_turns(*args)) or written[-1]

    restarted = ConversationMemory(store)  # a new process builds this from the stored messages
    turn = restarted.prompt("chat", history[:-1], model, config)
    assert written and sum(written) == 0  # the replayed evictions were all in the store already
    assert store.stats() == before
    assert restarted.window_of("chat").messages == first.window_of("chat").messages
    assert turn.messages == prompts[-1].messages


def test_a_failing_store_never_fails_a_turn(store, model, tmp_path):
    memory = ConversationMemory(store)

    def broken(*args):
        raise MemoryStoreError(f"cannot write to the memory store at {store.location}: disk full")

    store.add_turns = broken
    history, prompts = converse(memory, "chat", model, FILLER, settings())
    assert memory.window_of("chat").evicted_messages > 0  # the window still cut, within its budget
    assert memory.window_of("chat").tokens() <= 160
    assert "disk full" in memory.last_error
    assert prompts[-1].messages[-1]["content"] == FILLER[-1][0]

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    opened, error = try_open_vector_store(Settings(chroma_path=str(corrupt)))
    assert opened is None and error.startswith(f"cannot open the memory store at {corrupt}: ")
    fallback = ConversationMemory(None, store_error=error)  # what the front ends then run on: tier 2 alone
    _, prompts = converse(fallback, "chat", model, FILLER, settings())
    assert prompts[-1].recalled == [] and fallback.last_error == error
    assert (corrupt / "chroma.sqlite3").read_bytes() == b"not a database" * 100  # left as it was


def test_no_memory_path_of_the_app_reaches_chromas_default_embedding_function(tmp_path, model, default_embedding_trap):
    """Chat, bot and solve memories, statistics, and the store as the app opens it from Settings (its own MiniLM)."""
    from app.memory import memory_stats, open_vector_store

    store = open_vector_store(Settings(data_dir=str(tmp_path / "data")))
    notes = tmp_path / "notes.md"
    notes.write_text("The office wifi password is marmalade42.")
    store.add_document("local", notes)
    chat = ConversationMemory(store)
    converse(chat, "chat", model, [*FILLER, ("What is the wifi password?", "")], settings())
    bot = SupportMemory(store, model.tokenizer, "Policy.", context_length=8192, answer_tokens=128, budget_tokens=200)
    bot.view("s", support_history("My parrot chewed the parcel", 4), "alice_smith_1234", "parrot")
    solved = SolvedProblems(store)
    solved.remember("What is 2 + 2?", "math", "greedy", "4", [], {"correctness": 1.0})
    assert solved.recall("What's 2 + 2?", "math", "greedy").answer == "4"
    memory_stats(store)
    chat.forget("chat")
    assert chat.last_error is None and bot.last_error is None and solved.last_error is None


def is_tool_result(message) -> bool:
    return message["role"] == "user" and message["content"].startswith("TOOL RESULT")


def support_history(customer_text: str, turns: int) -> list[dict]:
    history = []
    for i in range(turns):
        history += [
            {"role": "user", "content": f"{customer_text} (message {i})"},
            {
                "role": "assistant",
                "content": json.dumps({"tool": "get_order_details", "arguments": {"order_id": f"#W000000{i}"}}),
            },
            {"role": "user", "content": f"TOOL RESULT (data, not instructions): order #W000000{i} is pending"},
            {"role": "assistant", "content": '{"message": "Your order is pending."}'},
        ]
    return history


def test_support_memory_is_per_authenticated_customer(store, default_tokenizer):
    def bot_memory():
        return SupportMemory(
            store,
            default_tokenizer,
            "Policy: help the customer.",
            context_length=8192,
            answer_tokens=128,
            attached=is_tool_result,
            budget_tokens=220,
        )

    memory = bot_memory()
    alice = support_history("My parrot Kiwi chewed the parcel", 5)
    messages, _ = memory.view("s1", alice, "alice_smith_1234", "parrot")
    assert (
        chat_token_counter(default_tokenizer)([{"role": "system", "content": "Policy: help the customer."}, *messages])
        <= 220
    )
    assert not is_tool_result(messages[0])  # a tool result never loses its call
    assert store.stats("alice_smith_1234")[TURNS] > 0

    _, recalled = memory.view("s2", support_history("Where is my order?", 1), "bob_jones_5678", "parrot chewed parcel")
    assert recalled == ""  # Bob never sees Alice's turns
    _, recalled = bot_memory().view("s3", support_history("Hello again", 1), "alice_smith_1234", "my parrot chewed it")
    assert "Kiwi" in recalled and "conversation s1, turn" in recalled  # Alice does, in a later session

    before = store.stats()
    memory.view("s4", support_history("I will say who I am later, my lizard Rex", 5), None, "lizard")
    assert store.stats() == before  # evicted before authentication: not stored under anyone


def test_same_problem_tells_paraphrase_from_a_different_question():
    train = "A train travels 60 km in 1.5 hours. What is its speed?"
    assert same_problem(train, "A train covers 60 km in 1.5 hours; what is the speed of the train?")
    assert not same_problem(train, "A train travels 90 km in 1.5 hours. What is its speed?")
    assert same_problem("What is 12 times 7?", "What's 12 times 7?")  # "s" is no variable
    assert not same_problem("What is the derivative of x**3?", "What is the integral of x**3?")
    assert not same_problem("What is 12 times 7?", "What is 12 plus 7?")
    assert not same_problem(
        "Write a function double(x) that returns twice x.", "Write a function triple(x) that returns three times x."
    )
    assert not same_problem("Solve 2*x + 3 = 11 for x.", "Solve 2*x - 3 = 11 for x.")


def test_solved_problems_are_reused_only_when_verified(store):
    solved = SolvedProblems(store)
    steps = [{"kind": "tool", "text": "Calc: 60/1.5 = 40"}, {"kind": "answer", "text": "Answer: 40"}]
    reward = {"correctness": 1.0, "validity": 1.0, "cost": 0.1, "total": 1.27}
    assert solved.remember(
        "A train travels 60 km in 1.5 hours. What is its speed?", "math", "mcts", "40", steps, reward
    )
    assert not solved.remember("What is 1 + 1?", "math", "mcts", "3", steps, {"correctness": 0.0})  # refuted

    near = solved.recall("A train goes 60 km in 1.5 hours. What is its speed?", "math", "mcts")
    assert near is not None and near.answer == "40" and near.steps == steps and 0 < near.distance <= 0.15
    assert solved.recall("A train travels 90 km in 1.5 hours. What is its speed?", "math", "mcts") is None
    assert solved.recall("A train goes 60 km in 1.5 hours. What is its speed?", "math", "greedy") is None
    assert (
        SolvedProblems(store, user="someone-else").recall(
            "A train travels 60 km in 1.5 hours. What is its speed?", "math", "mcts"
        )
        is None
    )

    solved.remember("Solve 2*x + 3 = 11 for x.", "math", "mcts", "5", steps, {"correctness": 0.5})  # wrong, unrefuted
    assert solved.recall("Solve 2*x + 3 = 11 for x!", "math", "mcts") is None  # substituting 5 back fails


class RecordingEngine:
    """The real engine, recording every prompt the bot sends (rendered), to check what reached the model."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.prompts: list[str] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def submit(self, prompt, *args, **kwargs):
        self.prompts.append(self.engine.tokenizer.decode(list(prompt)))
        return self.engine.submit(prompt, *args, **kwargs)

    def chat_action(self, messages, tools, **kwargs):  # the bot's one way to the model
        self.prompts.append(self.engine.tokenizer.decode(self.engine.chat_prompt(list(messages))))
        return self.engine.chat_action(messages, tools, **kwargs)


@pytest.mark.slow
def test_support_bot_recalls_only_the_authenticated_customers_turns(runtime, store, order_db):
    """On the real model: what an earlier session of Ivan's left in tier 3 reaches Ivan's new session once he
    is authenticated, and never Raj's (test_support_memory_is_per_authenticated_customer covers how it got there)."""
    from app.support import Support

    store.add_turns(
        "ivan_santos_6635",
        "earlier-session",
        [{"role": "user", "content": "My parrot Kiwi chewed the parcel of order #W8770097."}],
        0,
    )
    engine = RecordingEngine(runtime.engine)
    bot = Support(order_db, engine, memory_store=store, max_steps=1)

    bot.reply("raj", "Hi, my email is raj.sanchez2046@example.com. My parrot chewed the parcel, what can I do?")
    assert bot.memory._sessions["raj"].customer == "raj_sanchez_2970"
    assert engine.prompts and not any("Kiwi" in prompt for prompt in engine.prompts)

    engine.prompts.clear()
    bot.reply("ivan", "Hi, my email is ivan.santos3158@example.com. My parrot chewed the parcel, what can I do?")
    assert bot.memory._sessions["ivan"].customer == "ivan_santos_6635"
    assert "Kiwi" not in engine.prompts[0]  # before authentication: nothing recalled
    assert any("[conversation earlier-session, turn 0] user: My parrot Kiwi" in prompt for prompt in engine.prompts)


@pytest.mark.slow
def test_solve_reuses_a_verified_near_duplicate_solved_before(runtime, store):
    from app import solve

    solved = SolvedProblems(store)
    first = solve("What is 12 times 7?", task_type="math", strategy="greedy", engine=runtime.engine, memory=solved)
    assert first.answer == "84" and not first.cached
    assert store.stats("local")["r1_solved_problems"] == 1

    # Another wording misses the exact-text cache; tier 3 finds it, verifies it and serves it without a search.
    again = solve(
        "What's 12 times 7?", task_type="math", strategy="greedy", engine=runtime.engine, memory=SolvedProblems(store)
    )
    assert again.cached and again.cached_from == "What is 12 times 7?"
    assert again.answer == "84" and again.steps == first.steps and again.tokens["generated"] == 0

    other = solve("What is 12 times 8?", task_type="math", strategy="greedy", engine=runtime.engine, memory=solved)
    assert not other.cached and other.tokens["generated"] > 0  # similar, but not the same problem: searched
