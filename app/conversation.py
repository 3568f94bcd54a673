"""Chat conversations: kept in SQLite under the data directory, replied to through the engine's `submit`.

`ConversationStore` is the persistence (one file, `conversations.sqlite3`); `Chat` runs a reply turn:
it builds the prompt through the memory tiers (`app.memory.ConversationMemory`: the window, the snippets
recalled from the vector store), stores the user's message, streams the model's reply and stores it
(reasoning apart from the answer, with the recalled snippets it saw), and can stop a reply in flight from
another thread (the web UI's Stop button).

A message that is a maths or code question (`app.chat_route.route`) is answered through the tools instead: the
same search as `app.solve`, its tool calls streamed as it finds them, the turn stored with its steps
(`app.tool_turn.ToolTurn`), and only a verified answer stated.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

from app.chat_route import PreviousTurn, Route, route
from app.memory import ConversationMemory, SolvedProblems
from app.runtime import Runtime
from app.solve import Solution
from app.solve_stream import SolveStream
from app.tool_turn import ToolTurn, conclude
from model.tokenizer import split_reasoning

ROLES = ("user", "assistant")
TITLE_CHARS = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    reasoning TEXT NOT NULL DEFAULT '',
    finish_reason TEXT,
    created_at REAL NOT NULL,
    recalled TEXT NOT NULL DEFAULT '',
    tool TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    content: str  # for the assistant: the answer, without its reasoning
    reasoning: str = ""  # R1 <think> text, shown apart and never sent back to the model
    finish_reason: str | None = None  # the assistant's: "stop", "length", "cancelled" or "error"
    recalled: str = (
        ""  # the assistant's: what was recalled from memory into its prompt, "[position] matching sentences" lines
    )
    tool: ToolTurn | None = None  # the assistant's, when the tools answered: the search's steps and verdict


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    updated_at: float
    messages: int


class ConversationNotFound(KeyError):
    def __str__(self) -> str:
        return f"no conversation with id {self.args[0]}"


class ConversationStore:
    """Conversations in one SQLite file; safe to use from any thread (a connection per call)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            if "recalled" not in columns:  # a file written before memory recall existed
                db.execute("ALTER TABLE messages ADD COLUMN recalled TEXT NOT NULL DEFAULT ''")
            if "tool" not in columns:  # a file written before tool use in chat
                db.execute("ALTER TABLE messages ADD COLUMN tool TEXT NOT NULL DEFAULT ''")

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ConversationStore:
        return cls(data_dir / "conversations.sqlite3")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def create(self, title: str = "New chat") -> int:
        now = time.time()
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO conversations (title, created_at, updated_at) VALUES (?, ?, ?)", (title, now, now)
            )
            return int(cursor.lastrowid)

    def list(self) -> list[ConversationSummary]:
        """Every conversation, most recently updated first."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.updated_at, COUNT(m.id) FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC"
            ).fetchall()
        return [ConversationSummary(*row) for row in rows]

    def messages(self, conversation_id: int) -> list[Message]:
        with closing(self._connect()) as db:
            self._check_exists(db, conversation_id)
            rows = db.execute(
                "SELECT role, content, reasoning, finish_reason, recalled, tool FROM messages WHERE conversation_id = ? "
                "ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [Message(*row[:5], ToolTurn.from_json(row[5])) for row in rows]

    def add(self, conversation_id: int, message: Message) -> None:
        """Append a message; the first user message also becomes the title of an untitled conversation."""
        if message.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {message.role!r}")
        now = time.time()
        with closing(self._connect()) as db, db:
            self._check_exists(db, conversation_id)
            db.execute(
                "INSERT INTO messages (conversation_id, role, content, reasoning, finish_reason, created_at, recalled, "
                "tool) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    message.role,
                    message.content,
                    message.reasoning,
                    message.finish_reason,
                    now,
                    message.recalled,
                    message.tool.to_json() if message.tool else "",
                ),
            )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            if message.role == "user":
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title = 'New chat'",
                    (_title(message.content), conversation_id),
                )

    def session_id(self, conversation_id: int) -> str:
        """The conversation's name in the vector store: unique even if SQLite reuses a deleted conversation's id."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT created_at FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ConversationNotFound(conversation_id)
        return f"chat-{conversation_id}-{int(row[0] * 1e6)}"

    def delete(self, conversation_id: int) -> None:
        with closing(self._connect()) as db, db:
            self._check_exists(db, conversation_id)
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @staticmethod
    def _check_exists(db: sqlite3.Connection, conversation_id: int) -> None:
        if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
            raise ConversationNotFound(conversation_id)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class Chat:
    """Reply turns over stored conversations, through the runtime's engine (batched with every other session).

    The prompt comes from `memory` (tiers 2 and 3; without a vector store, the window alone), so a
    conversation goes on past the model's context; tier 1, the engine's prefix cache, serves the part of
    each prompt that the previous turn already computed. A maths or code question goes through the tools
    (`app.solve`, with `solved` as its tier 3 of verified solutions) instead of the bare model.
    """

    def __init__(
        self,
        runtime: Runtime,
        store: ConversationStore,
        memory: ConversationMemory | None = None,
        solved: SolvedProblems | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.memory = memory or ConversationMemory(None)
        self.solved = solved
        # conversation id -> what stops the reply being generated (None: still starting)
        self._active: dict[int, Callable[[], None] | None] = {}
        self._lock = threading.Lock()

    def reply(self, conversation_id: int, text: str) -> Iterator[Message]:
        """Store `text` as the user's turn and yield the assistant's reply as it grows (finish_reason None).

        Every yielded message carries the snippets recalled into the prompt (`recalled`); a tool-answered one
        carries its `tool` record instead, its tool calls growing as the search runs them. The reply is stored
        when generation ends, also when it was stopped (finish_reason "cancelled") or the iterator was closed
        early. Raises ValueError for an empty message, one that cannot fit the window even alone, or a
        conversation that is already replying (then nothing is stored).
        """
        text = text.strip()
        if not text:
            raise ValueError("empty message")
        with self._lock:
            if conversation_id in self._active:
                raise ValueError("a reply in this conversation is still being generated")
            self._active[conversation_id] = None  # held while the prompt is built: the window is per conversation
        try:
            past = self.store.messages(conversation_id)
            routed = route(text, _previous_tool_turn(past))
        except BaseException:
            with self._lock:
                self._active.pop(conversation_id, None)
            raise
        if routed is not None:
            yield from self._tool_reply(conversation_id, text, routed)
        else:
            yield from self._chat_reply(conversation_id, text, past)

    def _chat_reply(self, conversation_id: int, text: str, past: list[Message]) -> Iterator[Message]:
        settings, engine = self.runtime.current()
        try:
            history = [{"role": m.role, "content": m.content} for m in past]
            history.append({"role": "user", "content": text})
            turn = self.memory.prompt(self.store.session_id(conversation_id), history, engine, settings)
            request = engine.submit(engine.chat_prompt(turn.messages), task_type="chat", **settings.sampling())
        except BaseException:
            with self._lock:
                self._active.pop(conversation_id, None)
            raise
        with self._lock:
            self._active[conversation_id] = request.cancel
        recalled = turn.shown  # each recalled snippet's sentences that match the message, with where they stand
        self.store.add(conversation_id, Message("user", text))
        raw = ""
        try:
            for delta in request.stream():
                raw += delta
                reasoning, answer = split_reasoning(raw)
                yield Message("assistant", answer, reasoning, recalled=recalled)
        finally:
            request.cancel()  # no-op when finished; stops generation if our caller went away
            with self._lock:
                self._active.pop(conversation_id, None)
            completion = request.result()
            reasoning, answer = split_reasoning(completion.text)
            self.store.add(conversation_id, Message("assistant", answer, reasoning, completion.finish_reason, recalled))

    def _tool_reply(self, conversation_id: int, text: str, routed: Route) -> Iterator[Message]:
        """The search runs as a `SolveStream`; its tool calls are yielded as they arrive."""
        settings = self.runtime.settings
        search = SolveStream(
            routed.problem,
            task_type=routed.task_type,
            runtime=self.runtime,
            budget=settings.search_budget,
            seed=settings.seed,
            memory=self.solved,
        )
        with self._lock:
            self._active[conversation_id] = search.stop
        self.store.add(conversation_id, Message("user", text))
        turn = ToolTurn(routed.problem, routed.task_type, rewritten_from=routed.rewritten_from)
        final: Message | None = None
        try:
            yield Message("assistant", "", tool=turn)
            try:
                for event in search:
                    if isinstance(event, Solution):
                        done, said = conclude(turn, event)
                        final = Message(
                            "assistant", said, finish_reason="cancelled" if search.stopped else "stop", tool=done
                        )
                    elif isinstance(event, dict) and (grown := turn.with_step(event)) is not turn:
                        turn = grown
                        yield Message("assistant", "", tool=turn)
            except Exception as err:  # reported in the turn; the chat keeps serving
                final = Message(
                    "assistant",
                    f"The tools failed: {err}",
                    finish_reason="error",
                    tool=replace(turn, status="unverified"),
                )
            yield final
        finally:
            search.stop()  # our caller went away mid-search: end it
            with self._lock:
                self._active.pop(conversation_id, None)
            if final is None:  # closed before the search ended: stored as stopped, with no answer
                final = Message("assistant", "", finish_reason="cancelled", tool=replace(turn, status="unverified"))
            self.store.add(conversation_id, final)

    def delete(self, conversation_id: int) -> None:
        """Stop its reply, forget its turns in the vector store, and delete the conversation."""
        self.stop(conversation_id)
        self.memory.forget(self.store.session_id(conversation_id))
        self.store.delete(conversation_id)

    def stop(self, conversation_id: int) -> bool:
        """Stop the reply being generated in this conversation: a chat reply is stored as far as it got, a tool
        search ends with the best path it has."""
        with self._lock:
            cancel = self._active.get(conversation_id)
        if cancel is None:  # none, or still being built
            return False
        cancel()
        return True


def _previous_tool_turn(messages: list[Message]) -> PreviousTurn | None:
    """The conversation's last tool-answered turn, for follow-ups ("and its integral?")."""
    for message in reversed(messages):
        if message.tool is not None:
            return PreviousTurn(message.tool.problem, message.tool.answer)
    return None
