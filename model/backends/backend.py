"""`Backend`: what the app's features need of a model, served by our engine or by a remote server.

The reasoning search, the chat, the support bot and the web UI call only these methods, so the same code
runs on the local `Engine` (model/engine.py) and on any OpenAI-compatible server (model/backends/remote.py).
`app/engine.py` is the one place that decides which one is in use.

A prompt is whatever the backend's `submit` takes: a raw text prompt is `text_prompt(text)` (token ids for
the local engine, so that prompts sharing a prefix share cached K/V; the text itself for a server, which
tokenizes), a conversation is `chat_prompt(messages)`. Text prompts grow with `+`:
`prompt + backend.text_prompt(more, continuation=True)`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.serving.grammar import GrammarCompiler, tool_or_message_schema
from model.serving.request import Completion, RequestHandle
from model.serving.sampler import SamplingParams


@dataclass(frozen=True)
class ChatMessages:
    """A conversation as a prompt, for a backend that applies the chat template itself (a server)."""

    messages: tuple[Mapping[str, str], ...]


Prompt = str | list[int] | ChatMessages


class Backend(ABC):
    """A model behind `submit`; the rest are conveniences over it that a backend may serve better."""

    name: str  # what logs and errors call it: the model file, or the server's address and model
    # What memory budgets are counted with: `encode(text, add_bos=)` and `apply_chat_template(messages,
    # add_generation_prompt=)` (the model's own tokenizer, or an estimate for a server), and the context size.
    tokenizer: Any
    context_length: int
    # llguidance's view of the tokenizer, for token-level grammars (`SamplingParams.logits_processor`);
    # None: the backend takes none (a server), and callers fall back to stop strings or `chat_json`.
    grammar_compiler: GrammarCompiler | None = None
    # Per-request adapters the backend holds (`submit(..., adapter=name)`); a server holds none here.
    adapters: tuple[str, ...] = ()

    @abstractmethod
    def submit(
        self, prompt: Prompt, params: SamplingParams | None = None, *, task_type: str | None = None, **sampling: Any
    ) -> RequestHandle:
        """Start one completion (from any thread) and return its handle: `stream()`, `result()`, `cancel()`.

        `sampling` are SamplingParams fields (None = keep), applied over `params`. `task_type` ("math", "code",
        "chat") is a routing hint a backend may use (the local engine's MoE router bias) or ignore.
        Raises ValueError for a prompt the model cannot take (empty, too long, bad ids).
        """

    @abstractmethod
    def text_prompt(self, text: str, *, continuation: bool = False) -> str | list[int]:
        """`text` as a raw prompt; `continuation=True` for text appended to an existing prompt (no BOS)."""

    @abstractmethod
    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> Prompt:
        """A conversation (OpenAI-style role/content dicts) as a prompt for the assistant's next turn."""

    @abstractmethod
    def chat_json(
        self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], *, max_new_tokens: int
    ) -> Completion:
        """A greedy reply to `messages` constrained to JSON valid under `schema` (structured output).

        The text may be cut off by `max_new_tokens` (finish_reason "length"); otherwise it parses.
        """

    @abstractmethod
    def status(self) -> list[tuple[str, str]]:
        """(what, value) rows about this backend for status displays: cache use, or the server's features."""

    @abstractmethod
    def close(self) -> None:
        """End the backend; requests still running end "cancelled"."""

    # ----- conveniences over `submit` ------------------------------------------------------------

    def chat_action(
        self,
        messages: Sequence[Mapping[str, str]],
        tools: Mapping[str, Mapping[str, Any]],
        *,
        message_max_length: int,
        max_new_tokens: int,
        include_message: bool = True,
    ) -> Completion:
        """The agent's next action: `{"tool": NAME, "arguments": {...}}` with arguments valid under `tools[NAME]`,
        or `{"message": "..."}` (at most `message_max_length` characters); no tools = a message.
        `include_message=False` (with tools) leaves only the calls: a tool must be called.

        The completion's text is that JSON (cut off only by `max_new_tokens`). The messages must already
        tell the model its tools; a server may be shown them again through its own `tools`.
        """
        schema = tool_or_message_schema(
            tools, message_max_length=message_max_length, include_message=include_message or not tools
        )
        return self.chat_json(messages, schema, max_new_tokens=max_new_tokens)

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        task_type: str | None = None,
        adapter: str | None = None,
    ) -> list[Completion]:
        """Complete several prompts at once (one SamplingParams for all, or one each); results in prompt order.
        `adapter`: one of `adapters` for every prompt (None: the base model)."""
        options = {"task_type": task_type, **({"adapter": adapter} if adapter is not None else {})}
        requests = [self.submit(prompt, p, **options) for prompt, p in zip(prompts, per_prompt(prompts, params))]
        try:
            return [request.result() for request in requests]
        finally:
            for request in requests:  # interrupted while waiting: stop the rest
                request.cancel()

    def generate(self, prompt: Prompt, **sampling: Any) -> str:
        """The continuation of `prompt` as text. Keyword arguments: `SamplingParams` fields."""
        request = self.submit(prompt, **sampling)
        try:
            completion = request.result()
        finally:
            request.cancel()
        return completion.text

    def stream(self, prompt: Prompt, **sampling: Any) -> Iterator[str]:
        """Yield the continuation as text deltas as tokens are produced; closing the iterator cancels it."""
        return self.submit(prompt, **sampling).stream()

    def chat(
        self, messages: Sequence[Mapping[str, str]], *, stream: bool = False, **sampling: Any
    ) -> str | Iterator[str]:
        """Reply to a conversation rendered with the model's own chat template."""
        prompt = self.chat_prompt(messages)
        return self.stream(prompt, **sampling) if stream else self.generate(prompt, **sampling)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def with_sampling(params: SamplingParams | None, sampling: Mapping[str, Any]) -> SamplingParams:
    """`params` with the keyword arguments of the text-level calls applied; None means "keep"."""
    values = {key: value for key, value in sampling.items() if value is not None}
    return SamplingParams(**values) if params is None else dataclasses.replace(params, **values)


def per_prompt(prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None) -> list:
    """One SamplingParams (or None) per prompt, from one for all or one each."""
    each = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
    if len(each) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(each)} SamplingParams")
    return each
