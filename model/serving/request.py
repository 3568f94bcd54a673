"""A generation request: the handle callers hold (`stream`, `result`, `cancel`) and the state the scheduler advances.

Callers get a `Request` from `Engine.submit`; only the scheduler thread touches the fields below the
"scheduler state" line. Text is tracked per request: deltas are handed out as soon as they cannot turn
out to be the start of a stop string, and the final text is cut before the first stop string.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from model.serving.drafts import LookupState
from model.serving.sampler import Sampler, SamplingParams

FINISH_REASONS = ("stop", "length", "cancelled", "error")


class GenerationError(RuntimeError):
    """A request ended with finish_reason "error"; the message says why."""


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float  # of the chosen token under the model's distribution (before any processor or temperature)
    top: tuple[tuple[int, float], ...]  # the most likely tokens, best first


@dataclass
class Completion:
    """One finished request."""

    text: str
    token_ids: list[int]  # exactly the tokens whose decoding is `text`
    finish_reason: str  # one of FINISH_REASONS, taken from what happened
    prompt_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    generated_tokens: int = 0  # tokens the model produced (a stop id is not counted)
    ttft_s: float | None = None  # submit -> first generated token
    seconds: float = 0.0  # submit -> finished
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # one per generated token, when params.logprobs > 0


class TextTracker:
    """Text of a growing continuation: deltas safe to show, cut before the first stop string."""

    def __init__(self, tokenizer, stop: tuple[str, ...]) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stop = stop
        self.text = ""  # decoded so far (cut at a stop string once one appears)
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.text += self.decoder.put(token_id)
        hits = [i for i in (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self.finish()
        safe = len(self.text)
        for s in self.stop:  # a stop string may be starting at the end: hold that part back
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        return self._flush(safe)

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.flush()
        return self._flush(len(self.text))

    def _flush(self, upto: int) -> str:
        delta = self.text[self.emitted : upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return delta


def token_ids_of_text(tokenizer, generated: list[int], text: str) -> list[int]:
    """The generated ids whose decoding is exactly `text` (a prefix of theirs, cut by a stop string).

    When the stop string begins inside a token, the part of that token before it is re-encoded.
    """
    if tokenizer.decode(generated) == text:
        return list(generated)
    k = len(generated)
    while k and not text.startswith(tokenizer.decode(generated[:k])):
        k -= 1
    rest = text[len(tokenizer.decode(generated[:k])) :]
    return generated[:k] + (tokenizer.encode(rest, add_bos=False) if rest else [])


_ids = itertools.count()
_END = object()


class RequestHandle:
    """What a caller holds of a request, whichever backend serves it: `stream`, `result`, `cancel`.

    The producer (the scheduler thread, or a remote backend's reader thread) calls `emit` with each
    text delta and `complete` once; subclasses say how `cancel` reaches it.
    """

    def __init__(self) -> None:
        self.id = next(_ids)
        self.submitted_at = time.perf_counter()
        self._deltas: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Event()
        self._completion: Completion | None = None
        self._streaming = False
        self.cancel_requested = False

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        raise NotImplementedError

    def result(self, timeout: float | None = None) -> Completion:
        """Block until the request finishes. Raises TimeoutError after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        return self._completion

    def stream(self) -> Iterator[str]:
        """Text deltas as they are produced. Closing the iterator early (or dropping it) cancels the request.

        Raises GenerationError at the end if the request failed.
        """
        if self._streaming:
            raise RuntimeError("a request can be streamed only once")
        self._streaming = True
        try:
            while (delta := self._deltas.get()) is not _END:
                yield delta
        finally:
            if not self.done:
                self.cancel()
        completion = self._completion
        if completion.finish_reason == "error":
            raise GenerationError(completion.error)

    # ----- producer side -------------------------------------------------------------------------

    def emit(self, delta: str) -> None:
        if delta:
            self._deltas.put(delta)

    def complete(self, completion: Completion) -> None:
        self._completion = completion
        self._done.set()
        self._deltas.put(_END)


class Request(RequestHandle):
    """A request of the local engine: the handle plus the state the scheduler advances."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer,
        stop_ids: frozenset[int],
        wake: Callable[[], None],
        task_type: str | None = None,
        adapter: str | None = None,
    ) -> None:
        super().__init__()
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.task_type = task_type  # "math", "code", "chat" or None: selects the routers' task bias, if any
        self.adapter = (
            adapter  # the per-request LoRA adapter its tokens run with (model/layers/adapters.py); None = base
        )
        self._wake = wake

        # ----- scheduler state (the scheduler thread only) -----
        self.stop_ids = stop_ids
        self.ids = list(prompt_ids)  # every token the sequence holds or is about to be fed (incl. the last sampled)
        self.generated: list[int] = []
        self.computed = 0  # tokens of `ids` whose K/V are cached
        self.cached_tokens: int | None = None  # prompt tokens matched in the prefix cache at first admission
        self.seq: int | None = None  # KV-cache sequence while running
        self.node = None  # the radix node this request holds locked while running
        self.indexed_blocks = 0  # blocks of this sequence already offered to the radix tree
        self.forward_steps = 0  # forward steps this request took part in
        self.drafted = 0  # draft tokens fed for verification (model/serving/drafts.py)
        self.draft_accepted = 0  # of those, the ones greedy decoding chose itself (kept without a step of their own)
        self.lookup: LookupState | None = None  # prompt-lookup pacing, from the first lookup on
        self.lookup_draft = False  # whether the draft in flight came from prompt lookup
        self.first_token_at: float | None = None
        self.sampler = Sampler(params)
        self.tracker = TextTracker(tokenizer, params.stop)
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs else None

    def cancel(self) -> None:
        """End the request within one scheduler step (finish_reason "cancelled"); no-op once finished."""
        if not self.done:
            self.cancel_requested = True
            self._wake()
