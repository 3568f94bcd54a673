"""The three memory tiers as the product uses them: chat, the support bot and `solve`.

Tier 1, the engine's radix prefix cache, needs no call of its own: it serves any prompt prefix an earlier
request computed. What this module does for it is keep each prompt's start stable. The window (tier 2)
only grows at its end between cuts, and recalled snippets (tier 3) go at the end of the prompt (into the
newest user message for chat, into the trailing status message for the bot). So consecutive turns share
everything before the newest exchange.

- `ConversationMemory` (web and terminal chat): a window per conversation, rebuilt from the stored
  messages after a restart. Turns it evicts are indexed under (user, conversation); each turn recalls
  that conversation's evicted turns and the user's documents.
- `SupportMemory` (the bot): a window per bot session. Evicted turns are stored, and recalled, only
  under the authenticated customer's id, so one customer's data never reaches another's conversation.
- `SolvedProblems` (`solve`): problems solved before, found by similarity, reused only once verified.

A failing store (corrupt, unwritable, unreachable) never fails a turn. The error is logged and kept in
`last_error` (the web UI's Settings shows it), and the turn goes ahead on tiers 1 and 2. Nothing is lost:
a chat is in SQLite and is indexed again when its window is next rebuilt.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from app.config import Settings
from memory.matching import Match, best_sentences, format_matches
from memory.vector_store import Hit, MemoryStoreError, VectorStore, format_snippets
from memory.window import SlidingWindow, chat_token_counter, default_budget, is_tool_result
from reasoning.tasks import check_equation_answer

__all__ = [
    "LOCAL_USER",
    "ConversationMemory",
    "Match",
    "MemoryStats",
    "MemoryStoreError",
    "SolvedProblems",
    "SupportMemory",
    "TurnPrompt",
    "best_sentences",
    "memory_stats",
    "open_vector_store",
]

log = logging.getLogger(__name__)

LOCAL_USER = "local"  # the user of a single-user install (the CLI, the local web chat, `solve`)
RECALL_MAX_DISTANCE = (
    0.7  # cosine; in bench/memory.py facts sit 0.19-0.63 from their questions, most other turns beyond 0.7
)
SNIPPET_CHARS = 600  # a recalled snippet is cut to this (a document chunk is at most 800 characters)
TOKENS_PER_SNIPPET = 200  # prompt room reserved per recalled snippet: 600 characters of English plus its source
RECALL_HEADER_TOKENS = 32


def open_vector_store(settings: Settings) -> VectorStore:
    """The Chroma server at settings.chroma_url if set, else the on-disk store at settings.chroma_store_path().
    Raises MemoryStoreError (naming the path or url) when it cannot be opened."""
    if settings.chroma_url:
        return VectorStore(url=settings.chroma_url)
    return VectorStore(settings.chroma_store_path())


def try_open_vector_store(settings: Settings) -> tuple[VectorStore | None, str | None]:
    """(the store, None), or (None, why) when it cannot be opened: the front ends then run on tiers 1 and 2."""
    try:
        return open_vector_store(settings), None
    except (MemoryStoreError, ValueError) as err:
        log.warning("memory store unavailable, conversations will not be recalled beyond the window: %s", err)
        return None, str(err)


class Model(Protocol):
    """What the memory needs of an engine: its tokenizer (to count prompt tokens) and its context."""

    tokenizer: Any
    context_length: int


@dataclass(frozen=True)
class TurnPrompt:
    messages: list[dict[str, Any]]  # what the model sees: system prompt, window, snippets in the newest user message
    recalled: list[Hit] = field(default_factory=list)  # the snippets that entered it, each with its source
    shown: str = ""  # what the user is shown of them: "[position] matching sentences" lines (memory.matching)


def recall_reserve(k: int) -> int:
    """Prompt tokens kept free for k recalled snippets."""
    return k * TOKENS_PER_SNIPPET + RECALL_HEADER_TOKENS if k > 0 else 0


def window_budget(
    context_length: int, answer_tokens: int, recall_k: int, setting: int | None = None, reserved_tokens: int = 0
) -> int:
    """The window's budget: `setting` (memory_window_tokens) if given, capped so that the window, the recalled
    snippets, anything else reserved and the answer always fit the context."""
    largest = default_budget(context_length, answer_tokens, recall_reserve(recall_k) + reserved_tokens)
    return min(setting, largest) if setting else largest


def fit_snippets(hits: Sequence[Hit], tokenizer: Any, max_tokens: int) -> tuple[list[Hit], str]:
    """The best hits (each cut to SNIPPET_CHARS) whose formatted text fits `max_tokens`, and that text."""
    kept = [replace(hit, text=_shorten(hit.text)) for hit in hits]
    while kept:
        text = format_snippets(kept)
        if len(tokenizer.encode(text, add_bos=False)) <= max_tokens:
            return kept, text
        kept.pop()  # the least similar goes first
    return [], ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


class _StoreUser:
    """Shared by the memories below: a store that may be missing or fail, and the last error it gave."""

    def __init__(self, store: VectorStore | None, error: str | None = None) -> None:
        self.store = store
        self.last_error = error

    def _failed(self, err: Exception) -> None:
        log.warning("memory store: %s", err)
        self.last_error = str(err)

    def _guarded(self, action: Callable[[], Any], default: Any = None) -> Any:
        """Run a store call; a store failure is logged and kept, never raised (the turn goes on without tier 3)."""
        if self.store is None:
            return default
        try:
            return action()
        except MemoryStoreError as err:
            self._failed(err)
            return default


# ----- chat ------------------------------------------------------------------------------------------


@dataclass
class _Conversation:
    window: SlidingWindow
    built_for: tuple  # (tokenizer, budget, system prompt): a change rebuilds the window
    seen: list[int] = field(default_factory=list)  # a hash of each message added, oldest first
    lock: threading.Lock = field(default_factory=threading.Lock)


class ConversationMemory(_StoreUser):
    """Tiers 2 and 3 for the chat conversations of one user. Thread-safe; one instance per front end.

    Windows are kept for the `max_conversations` most recently used conversations; any other is rebuilt
    from its messages on its next turn (replaying evictions, which writes to the store only what is missing).
    """

    def __init__(
        self,
        store: VectorStore | None,
        user: str = LOCAL_USER,
        *,
        max_conversations: int = 64,
        store_error: str | None = None,
    ) -> None:
        super().__init__(store, store_error)
        self.user = user
        self.max_conversations = max_conversations
        self.evicted_messages = 0  # handed to tier 3 by this process, all conversations together
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def prompt(
        self, session: str, history: Sequence[Mapping[str, Any]], model: Model, settings: Settings
    ) -> TurnPrompt:
        """The prompt for the newest message of `history`: every message of the conversation `session` so far,
        oldest first, without the system prompt. Raises ValueError if the newest message alone cannot fit."""
        if not history or history[-1].get("role") != "user":
            raise ValueError("the newest message of a chat turn must be the user's")
        k = settings.memory_recall_k if self.store is not None else 0
        budget = window_budget(model.context_length, settings.max_new_tokens, k, settings.memory_window_tokens)
        conversation = self._conversation(session, model.tokenizer, budget, settings.system_prompt)
        digests = [hash((str(m["role"]), str(m["content"]))) for m in history]
        with conversation.lock:
            seen = conversation.seen
            if digests[: len(seen)] != seen:  # not an extension of what the window saw (a turn was not stored)
                conversation.window = self._new_window(session, model.tokenizer, budget, settings.system_prompt)
                seen.clear()
            window = conversation.window
            for message, digest in zip(history[len(seen) :], digests[len(seen) :]):
                window.add({"role": message["role"], "content": message["content"]})
                seen.append(digest)
            query = str(history[-1]["content"])
            hits = self._recall(session, window, query, k)
            recalled, text = fit_snippets(hits, model.tokenizer, recall_reserve(k))
            # Matched on the hits as stored (fit_snippets keeps their order), so lines can still be counted.
            shown = (
                format_matches(best_sentences(self.store.embedding, query, hits[: len(recalled)])) if recalled else ""
            )
            return TurnPrompt(window.prompt(text), recalled, shown)

    def window_of(self, session: str) -> SlidingWindow | None:
        """The window held for `session`, if any (for statistics and tests)."""
        with self._lock:
            conversation = self._conversations.get(session)
        return conversation.window if conversation else None

    def forget(self, session: str) -> None:
        """Drop the conversation's window and its turns in the store (the conversation was deleted)."""
        with self._lock:
            self._conversations.pop(session, None)
        self._guarded(lambda: self.store.forget_session(self.user, session))

    def _conversation(self, session: str, tokenizer: Any, budget: int, system_prompt: str) -> _Conversation:
        built_for = (id(tokenizer), budget, system_prompt)
        with self._lock:
            conversation = self._conversations.get(session)
            if conversation is None or conversation.built_for != built_for:
                window = self._new_window(session, tokenizer, budget, system_prompt)
                conversation = self._conversations[session] = _Conversation(window, built_for)
            self._conversations.move_to_end(session)
            while len(self._conversations) > self.max_conversations:
                self._conversations.popitem(last=False)
            return conversation

    def _new_window(self, session: str, tokenizer: Any, budget: int, system_prompt: str) -> SlidingWindow:
        def to_store(messages: list[dict[str, Any]], first: int) -> None:
            self.evicted_messages += len(messages)
            self._guarded(lambda: self.store.add_turns(self.user, session, messages, first))

        return SlidingWindow(chat_token_counter(tokenizer), budget, system_prompt, on_evict=to_store)

    def _recall(self, session: str, window: SlidingWindow, query: str, k: int) -> list[Hit]:
        if k <= 0 or self.store is None:
            return []

        def search() -> list[Hit]:
            hits = []
            if window.evicted_messages:
                hits += self.store.search_turns(self.user, query, k, session=session)
            if self.store.has_documents(self.user):
                hits += self.store.search_documents(self.user, query, k)
            return hits

        hits = self._guarded(search, default=[])
        return sorted((h for h in hits if h.distance <= RECALL_MAX_DISTANCE), key=lambda h: h.distance)[:k]


# ----- the support bot -------------------------------------------------------------------------------

STATUS_TOKENS = 64  # the bot's trailing status message ("The customer is authenticated as ...") with its framing
SUPPORT_RECALL_K = 2


@dataclass
class _SupportSession:
    window: SlidingWindow
    customer: str | None = None  # the authenticated customer's user id, once known
    recalled: tuple[str, str] = ("", "")  # (query, recalled text) of the last lookup, reused within a turn


class SupportMemory(_StoreUser):
    """Tiers 2 and 3 for the support bot's sessions.

    Tier 3 is per authenticated customer only: evicted turns are stored under the customer's user id (turns
    evicted before authentication stay in the bot's transcript, not in the store), and recall searches that
    customer's turns alone, in any of their sessions.
    """

    def __init__(
        self,
        store: VectorStore | None,
        tokenizer: Any,
        system_prompt: str,
        *,
        context_length: int,
        answer_tokens: int,
        attached: Callable[[Mapping[str, Any]], bool] = is_tool_result,
        recall_k: int = SUPPORT_RECALL_K,
        budget_tokens: int | None = None,
    ) -> None:
        super().__init__(store)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.attached = attached
        self.recall_k = recall_k if store is not None else 0
        self.budget_tokens = window_budget(context_length, answer_tokens, self.recall_k, budget_tokens, STATUS_TOKENS)
        self._sessions: dict[str, _SupportSession] = {}
        self._lock = threading.Lock()

    def view(
        self, session: str, history: Sequence[Mapping[str, Any]], customer: str | None, query: str
    ) -> tuple[list[dict[str, Any]], str]:
        """(the window's messages after the system prompt, recalled text for the status message, "" if none).

        `history` is every model-facing message of the session so far; `customer` the authenticated user id
        (None before authentication); `query` what to recall by (the customer's newest message).
        """
        with self._lock:
            state = self._sessions.get(session)
            if state is None or state.window.added > len(history):
                state = self._sessions[session] = _SupportSession(self._new_window(session))
        state.customer = customer
        for message in history[state.window.added :]:
            state.window.add(message)
        messages = state.window.messages[1:]
        if customer is None or self.recall_k <= 0:
            return messages, ""
        if state.recalled[0] != f"{customer}\0{query}":
            hits = self._guarded(lambda: self.store.search_turns(customer, query, self.recall_k), default=[])
            hits = [h for h in hits if h.distance <= RECALL_MAX_DISTANCE]
            _, text = fit_snippets(hits, self.tokenizer, recall_reserve(self.recall_k) - RECALL_HEADER_TOKENS)
            state.recalled = (
                f"{customer}\0{query}",
                f"Earlier with this customer (source in brackets):\n{text}" if text else "",
            )
        return messages, state.recalled[1]

    def end(self, session: str) -> None:
        """Drop a session's window (the bot expired the idle session); turns already evicted to the store stay."""
        with self._lock:
            self._sessions.pop(session, None)

    def _new_window(self, session: str) -> SlidingWindow:
        def to_store(messages: list[dict[str, Any]], first: int) -> None:
            customer = self._sessions[session].customer if session in self._sessions else None
            if customer is not None:
                self._guarded(lambda: self.store.add_turns(customer, session, messages, first))

        return SlidingWindow(
            chat_token_counter(self.tokenizer),
            self.budget_tokens,
            self.system_prompt,
            on_evict=to_store,
            attached=self.attached,
        )


# ----- solve -----------------------------------------------------------------------------------------

# Words that change what a problem asks while barely moving its embedding ("derivative" vs "integral",
# "times" vs "plus"): two problems that differ in any of them are never the same problem.
OPERATION_WORDS = frozenset(
    """
    derivative differentiate integral integrate limit factor factorise factorize simplify solve expand
    sum add added plus total difference subtract minus less fewer more product multiply times quotient divide
    divided per each average mean median half double twice triple third quarter percent percentage square
    squared cube cubed root power remainder left remain remaining increase decrease largest smallest maximum
    minimum most least greatest not no never without before after ago older younger faster slower
""".split()
)
_WORD = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SYMBOL = re.compile(r"[-+*/^=<>%]")
_VARIABLE = re.compile(r"(?<![A-Za-z'’])[b-zB-HJ-Z](?![A-Za-z'’])")  # lone letters; not "a", "I", "what's"
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*(?=\s*\()|\b\w*_\w*\b")  # function names and snake_case names


def same_problem(stored: str, new: str) -> bool:
    """Whether two problems that embed close together ask the same thing: the same numbers, maths symbols,
    variables, function names, and no operation word in one that the other lacks. Paraphrase is fine."""

    def features(text: str) -> tuple:
        return (
            Counter(n.replace(",", "") for n in _NUMBER.findall(text)),
            Counter(_SYMBOL.findall(text)),
            set(_VARIABLE.findall(text)),
            set(_IDENTIFIER.findall(text)),
        )

    if features(stored) != features(new):
        return False
    changed = set(_WORD.findall(stored.lower())) ^ set(_WORD.findall(new.lower()))
    return not changed & OPERATION_WORDS


@dataclass(frozen=True)
class RecalledSolution:
    problem: str  # the stored problem it was solved for
    answer: str
    steps: list[dict[str, Any]]
    reward: dict[str, float]
    distance: float


class SolvedProblems(_StoreUser):
    """Tier 3 for `solve`: solved problems of one user, found again by similarity and reused only once verified.

    Verified means: within `max_distance` (cosine) of the new problem, `same_problem` holds, and for an
    equation the stored answer still satisfies the new problem's equation. Stored are answers the search did
    not refute: a correctness layer of at least `min_correctness` (checked, or agreed on by the search's paths).
    """

    def __init__(
        self,
        store: VectorStore | None,
        user: str = LOCAL_USER,
        *,
        max_distance: float = 0.15,
        min_correctness: float = 0.5,
    ) -> None:
        super().__init__(store)
        self.user = user
        self.max_distance = max_distance
        self.min_correctness = min_correctness

    def recall(self, problem: str, task_type: str, strategy: str, *, model: str = "") -> RecalledSolution | None:
        """A verified solution of a near-duplicate solved before with the same task type, strategy and `model`
        (what solved it: `app.solve.model_key`), or None."""
        candidates = self._guarded(
            lambda: self.store.similar_problems(
                self.user, problem, k=3, max_distance=self.max_distance, kind=_kind(task_type, strategy, model)
            ),
            default=[],
        )
        for candidate in candidates:
            if not same_problem(candidate.problem, problem):
                continue
            if task_type == "math" and check_equation_answer(problem, candidate.answer) is False:
                continue
            record = json.loads(candidate.solution)
            return RecalledSolution(
                candidate.problem, candidate.answer, record["steps"], record["reward"], candidate.distance
            )
        return None

    def remember(
        self,
        problem: str,
        task_type: str,
        strategy: str,
        answer: str | None,
        steps: list[dict[str, Any]],
        reward: Mapping[str, float],
        *,
        model: str = "",
    ) -> bool:
        """Store a solution the search did not refute (found by `model`); returns whether it was stored."""
        if answer is None or reward.get("correctness", 0.0) < self.min_correctness:
            return False
        record = json.dumps({"steps": steps, "reward": dict(reward)})

        def store() -> bool:
            self.store.add_solved_problem(self.user, problem, record, answer, kind=_kind(task_type, strategy, model))
            return True

        return self._guarded(store, default=False)


def _kind(task_type: str, strategy: str, model: str) -> str:
    """The store's kind of a solved problem: a lookup finds only its own task type, strategy and model."""
    return f"{task_type}/{strategy}/{model}" if model else f"{task_type}/{strategy}"


# ----- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryStats:
    location: str  # the store's path or server url
    user: str
    records: dict[str, int]  # this user's records, per collection
    all_records: dict[str, int]  # everyone's
    documents: int  # this user's distinct documents
    disk_bytes: int | None  # None for a server


def memory_stats(store: VectorStore, user: str = LOCAL_USER) -> MemoryStats:
    """What tier 3 holds. Raises MemoryStoreError when the store cannot be read."""
    return MemoryStats(
        store.location, user, store.stats(user), store.stats(), len(store.list_documents(user)), store.disk_bytes()
    )
