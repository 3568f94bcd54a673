"""Tier 2: a conversation kept within a token budget, oldest turns out first, evicted turns handed to tier 3.

Invariants:
- the system prompt is pinned: it is always first and never evicted;
- a tool result (role "tool", or whatever `attached` says) belongs to the message before it (the call),
  and the two leave together;
- the newest message group is never evicted (a message that alone exceeds the budget is refused);
- between evictions the prompt only grows at its end, so the engine's prefix cache serves every
  earlier token. Eviction changes the prompt right after the system prompt, which costs a fresh
  prefill of the whole window, so it frees a chunk (down to `evict_to` of the budget) at once instead
  of one turn per turn.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = dict[str, Any]
TokenCounter = Callable[[Sequence[Mapping[str, Any]]], int]
EvictCallback = Callable[[list[Message], int], None]  # (evicted messages, number of the first of them)
ROLES = ("system", "user", "assistant", "tool")


def is_tool_result(message: Mapping[str, Any]) -> bool:
    """The default `attached` rule: an OpenAI-style tool message belongs to the call before it."""
    return message.get("role") == "tool"


def chat_token_counter(tokenizer: Any) -> TokenCounter:
    """Tokens of `messages` rendered with the model's chat template, generation prompt included,
    encoded exactly as `Engine.chat` encodes them."""

    def count(messages: Sequence[Mapping[str, Any]]) -> int:
        prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        return len(tokenizer.encode(prompt, add_bos=False))

    return count


def default_budget(context_length: int, answer_tokens: int, reserved_tokens: int = 0) -> int:
    """The window's default budget: the model's context minus the answer (and anything else reserved)."""
    budget = context_length - answer_tokens - reserved_tokens
    if budget <= 0:
        raise ValueError(
            f"no room for a conversation: context {context_length} - answer {answer_tokens} - reserved {reserved_tokens} <= 0"
        )
    return budget


class SlidingWindow:
    """The messages a prompt is built from, within `budget_tokens` as counted by `count_tokens`."""

    def __init__(
        self,
        count_tokens: TokenCounter,
        budget_tokens: int,
        system_prompt: str | None = None,
        on_evict: EvictCallback | None = None,
        evict_to: float = 0.75,
        attached: Callable[[Mapping[str, Any]], bool] = is_tool_result,
    ) -> None:
        """attached(message) -> True: the message belongs to the one before it (a tool result to its call)."""
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        if not 0 < evict_to <= 1:
            raise ValueError(f"evict_to must be in (0, 1], got {evict_to}")
        self.count_tokens = count_tokens
        self.budget_tokens = budget_tokens
        self.evict_to = evict_to
        self.on_evict = on_evict
        self.attached = attached
        self.pinned: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self._groups: list[list[Message]] = []  # each group leaves the window whole
        self.evicted_messages = 0  # messages handed to on_evict so far; also the next evicted turn's number
        self.evictions = 0  # how many times the window was cut

    @property
    def messages(self) -> list[Message]:
        """The pinned system prompt, then the kept messages, oldest first."""
        return [dict(message) for message in self.pinned + [m for group in self._groups for m in group]]

    def tokens(self) -> int:
        return self.count_tokens(self.messages)

    @property
    def added(self) -> int:
        """Messages added so far (kept or evicted), the system prompt not counted."""
        return self.evicted_messages + sum(len(group) for group in self._groups)

    def add(self, message: Mapping[str, Any]) -> list[Message]:
        """Append one message; if the window then exceeds its budget, evict the oldest groups.

        Returns the evicted messages (already passed to on_evict). Raises ValueError for a malformed
        message or one that cannot fit even alone; the window is then unchanged.
        If on_evict raises, the window keeps everything (over budget) and the error propagates.
        """
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message role must be one of {ROLES}, got {role!r}")
        message = copy.deepcopy(dict(message))
        joins = self.attached(message)
        if joins:
            if not self._groups:
                raise ValueError("a tool result must follow the message that called the tool")
            self._groups[-1].append(message)
        else:
            self._groups.append([message])
        total = self.tokens()
        if total <= self.budget_tokens:
            return []
        cut = self._cut_point()
        if cut is None:
            alone = self._size_after_cut(len(self._groups) - 1)
            self._undo_add(joins)
            raise ValueError(
                f"the newest message does not fit the window: {alone} tokens with the system prompt alone, "
                f"budget {self.budget_tokens}"
            )
        evicted = [m for group in self._groups[:cut] for m in group]
        if self.on_evict:
            self.on_evict(copy.deepcopy(evicted), self.evicted_messages)
        del self._groups[:cut]
        self.evicted_messages += len(evicted)
        self.evictions += 1
        return evicted

    def _undo_add(self, joined: bool) -> None:
        if joined:
            self._groups[-1].pop()
        else:
            self._groups.pop()

    def _size_after_cut(self, cut: int) -> int:
        return self.count_tokens(self.pinned + [m for group in self._groups[cut:] for m in group])

    def _cut_point(self) -> int | None:
        """How many of the oldest groups to evict: the fewest that bring the window to evict_to * budget,
        or failing that within the budget; None if even keeping only the newest group is over budget."""
        newest = len(self._groups) - 1
        if newest < 1 or self._size_after_cut(newest) > self.budget_tokens:
            return None
        target = int(self.budget_tokens * self.evict_to)
        if self._size_after_cut(newest) > target:
            # Not even the newest group alone meets the target: keep the most that fit the budget.
            target = self.budget_tokens
        low, high = 1, newest  # the size shrinks as the cut grows; find the smallest cut within target
        while low < high:
            middle = (low + high) // 2
            if self._size_after_cut(middle) <= target:
                high = middle
            else:
                low = middle + 1
        return low

    def prompt(self, recalled: str = "") -> list[Message]:
        """The messages to send, with `recalled` (tier-3 snippets with their sources) put into the last
        user message rather than the system prompt, so the cached prefix before that message stays valid."""
        messages = self.messages
        if not recalled:
            return messages
        for position in range(len(messages) - 1, -1, -1):
            if messages[position]["role"] == "user":
                question = messages[position]["content"]
                messages[position]["content"] = f"Recalled from earlier (source in brackets):\n{recalled}\n\n{question}"
                return messages
        raise ValueError("recalled snippets need a user message to attach to")
