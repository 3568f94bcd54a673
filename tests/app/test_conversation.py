"""Conversations: real SQLite, kept across store instances (restarts); reply turns on the real model."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from app.chat_route import PreviousTurn
from app.conversation import Chat, ConversationNotFound, ConversationStore, Message, _previous_tool_turn
from app.runtime import Runtime
from app.tool_turn import NO_VERIFIED_ANSWER, ToolTurn


def test_conversations_survive_a_restart_in_order(tmp_path):
    store = ConversationStore.in_data_dir(tmp_path)
    first = store.create()
    second = store.create()
    store.add(first, Message("user", "What is 2 + 2?\nPlease answer briefly."))
    store.add(first, Message("assistant", "4", reasoning="2 + 2 = 4", finish_reason="stop"))
    store.add(second, Message("user", "x" * 100))

    reopened = ConversationStore.in_data_dir(tmp_path)
    summaries = reopened.list()
    assert [s.id for s in summaries] == [second, first]  # most recently updated first
    assert summaries[1].title == "What is 2 + 2? Please answer briefly." and summaries[1].messages == 2
    assert len(summaries[0].title) == 60 and summaries[0].title.endswith("…")
    assert reopened.messages(first) == [
        Message("user", "What is 2 + 2?\nPlease answer briefly."),
        Message("assistant", "4", "2 + 2 = 4", "stop"),
    ]


def test_a_file_from_before_memory_recall_is_upgraded_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "conversations.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as it was, with one conversation in it
        db.executescript(
            "CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL, created_at REAL NOT NULL, "
            "updated_at REAL NOT NULL);"
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL REFERENCES conversations(id) "
            "ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL, reasoning TEXT NOT NULL DEFAULT '', "
            "finish_reason TEXT, created_at REAL NOT NULL);"
            "INSERT INTO conversations VALUES (1, 'old', 1.0, 1.0);"
            "INSERT INTO messages VALUES (1, 1, 'user', 'hello', '', NULL, 1.0);"
        )
    store = ConversationStore(path)
    assert store.messages(1) == [Message("user", "hello")]
    store.add(1, Message("assistant", "hi", finish_reason="stop", recalled="[notes.md, chunk 1] hello"))
    assert ConversationStore(path).messages(1)[-1].recalled == "[notes.md, chunk 1] hello"
    turn = ToolTurn("What is 12 times 7?", "math", "verified", answer="84")
    store.add(1, Message("assistant", "84", finish_reason="stop", tool=turn))  # the tool column was added too
    assert ConversationStore(path).messages(1)[-1].tool == turn
    assert store.session_id(1) == "chat-1-1000000"


def test_bad_role_and_unknown_conversation_are_clear_errors(tmp_path):
    store = ConversationStore.in_data_dir(tmp_path)
    conversation = store.create()
    with pytest.raises(ValueError, match="role must be one of"):
        store.add(conversation, Message("system", "hi"))
    with pytest.raises(ConversationNotFound, match="no conversation with id 999"):
        store.messages(999)
    store.delete(conversation)
    assert store.list() == []
    with pytest.raises(ConversationNotFound):
        store.add(conversation, Message("user", "hi"))


@pytest.mark.slow
def test_reply_streams_then_stores_both_turns(tmp_path, runtime):
    chat = Chat(runtime, ConversationStore.in_data_dir(tmp_path))
    conversation = chat.store.create()
    partials = list(chat.reply(conversation, "What is the capital of France?"))
    assert len(partials) > 1 and all(p.finish_reason is None for p in partials)
    stored = chat.store.messages(conversation)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].content == partials[-1].content and "Paris" in stored[1].content
    assert stored[1].finish_reason in ("stop", "length")

    # The next turn sees the history: the model is asked about what it said.
    partials = list(chat.reply(conversation, "Repeat the name of that city."))
    assert "Paris" in partials[-1].content
    assert len(chat.store.messages(conversation)) == 4


@pytest.mark.slow
def test_stop_from_another_thread_stores_the_partial_reply(tmp_path, runtime):
    long_replies = Runtime(dataclasses.replace(runtime.settings, max_new_tokens=1000), engine=runtime.engine)
    chat = Chat(long_replies, ConversationStore.in_data_dir(tmp_path))
    conversation = chat.store.create()
    replies = chat.reply(conversation, "Count from 1 to 500, one number per line.")
    next(replies)  # generation is running
    stopper = threading.Thread(target=chat.stop, args=(conversation,))
    stopper.start()
    stopper.join()
    for _ in replies:
        pass
    last = chat.store.messages(conversation)[-1]
    assert last.role == "assistant" and last.finish_reason == "cancelled"
    assert chat.stop(conversation) is False  # nothing left to stop


def test_empty_message_stores_nothing(tmp_path):
    chat = Chat(runtime=None, store=ConversationStore.in_data_dir(tmp_path))  # fails before the engine is needed
    conversation = chat.store.create()
    with pytest.raises(ValueError, match="empty message"):
        next(chat.reply(conversation, "   "))
    assert chat.store.messages(conversation) == []


@pytest.mark.slow
def test_reply_turns_go_through_the_memory_tiers(tmp_path, runtime, store):
    """On the real model, with a window small enough that the first turn leaves it: tier 1 serves each turn's
    shared prefix from cache, tier 2 keeps the prompt in budget, tier 3 brings the fact back with its source,
    which is stored with the reply."""
    from app.memory import ConversationMemory

    settings = dataclasses.replace(runtime.settings, max_new_tokens=8, memory_window_tokens=90)
    chat = Chat(
        Runtime(settings, engine=runtime.engine), ConversationStore.in_data_dir(tmp_path), ConversationMemory(store)
    )
    conversation = chat.store.create()
    engine, checked = runtime.engine, 0
    for number, text in enumerate(
        [
            "Please remember: my locker code is 4471.",
            "Why is the sky blue?",
            "How do I fix a squeaky door?",
            "What causes thunder?",
        ]
    ):
        window = chat.memory.window_of(chat.store.session_id(conversation))
        cuts = window.evictions if window else 0
        before = engine.cache_stats().hit_tokens
        list(chat.reply(conversation, text))
        window = chat.memory.window_of(chat.store.session_id(conversation))
        if number and window.evictions == cuts:  # the previous prompt, up to its newest user message, came from cache
            previous = [{"role": "system", "content": settings.system_prompt}, *window.messages[1:-2]]
            shared = len(engine.tokenizer.encode(engine.tokenizer.apply_chat_template(previous), add_bos=False))
            assert engine.cache_stats().hit_tokens - before >= shared // 16 * 16 > 0
            checked += 1
    assert checked >= 1 and window.evicted_messages >= 2 and window.tokens() <= 90

    list(chat.reply(conversation, "What is my locker code?"))
    answer = chat.store.messages(conversation)[-1]
    assert answer.recalled.startswith(
        f"[conversation {chat.store.session_id(conversation)}, turn 0] user: Please remember"
    )
    assert "4471" in answer.recalled
    chat.delete(conversation)  # forgets its turns in the store too
    assert store.stats("local")["r1_turns"] == 0


def test_a_follow_up_refers_to_the_last_tool_turn_of_the_stored_conversation(tmp_path):
    store = ConversationStore.in_data_dir(tmp_path)
    conversation = store.create()
    store.add(conversation, Message("user", "What is the derivative of x**3 * sin(x)?"))
    turn = ToolTurn(
        "What is the derivative of x**3 * sin(x)?", "math", "verified", answer="x**3*cos(x) + 3*x**2*sin(x)"
    )
    store.add(conversation, Message("assistant", turn.answer, finish_reason="stop", tool=turn))
    store.add(conversation, Message("user", "thanks!"))
    store.add(conversation, Message("assistant", "You're welcome.", finish_reason="stop"))
    assert _previous_tool_turn(store.messages(conversation)) == PreviousTurn(turn.problem, turn.answer)
    assert _previous_tool_turn(store.messages(conversation)[:1]) is None


@pytest.mark.slow
def test_a_maths_question_goes_through_the_tools_and_is_stored_with_its_steps(tmp_path, runtime, monkeypatch):
    from app.solution import PathCache

    monkeypatch.setattr(runtime, "path_cache", PathCache())  # searched here, not served from an earlier test's solve
    chat = Chat(runtime, ConversationStore.in_data_dir(tmp_path))
    conversation = chat.store.create()
    partials = list(chat.reply(conversation, "What is 12 times 7?"))
    assert partials[0].tool.status == "searching" and partials[0].finish_reason is None
    streamed = [p.tool.tried for p in partials[:-1] if p.tool.tried]
    assert streamed and streamed[0][0]["tool"] == "math_simplify"  # a tool call shown before the search ended
    final = partials[-1]
    assert final.content == "84" and final.finish_reason == "stop" and final.tool.status == "verified"
    assert final.tool.steps[0]["tool"] == "math_simplify" and final.tool.steps[0]["tool_output"] == "84"
    stored = chat.store.messages(conversation)
    assert [m.role for m in stored] == ["user", "assistant"] and stored[1] == final  # reopened: steps and all

    # Stop ends the search too: the turn is stored as stopped, with no unverified figure.
    replies = chat.reply(conversation, "Solve 3*x + 7 = 25 for x.")
    next(replies)
    assert chat.stop(conversation) is True
    last = list(replies)[-1]
    assert last.finish_reason == "cancelled" and last.tool.status in ("verified", "unverified")
    assert last.content == NO_VERIFIED_ANSWER or last.tool.status == "verified"
    assert chat.store.messages(conversation)[-1] == last
