"""The inference engine: thread-safe requests served by one scheduler loop over a paged, prefix-cached KV cache.

`Engine.submit` is the one way to generate; `generate`, `generate_batch`, `stream` and `chat` are thin
wrappers over it. Requests from any number of threads are batched together step by step
(model/scheduler.py), and prompts that share a prefix with earlier ones reuse its cached K/V
(model/radix_cache.py). `logits` scores a sequence outside the request path (perplexity, parity tests).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from model.compiled_step import CompiledDecode
from model.request import Completion, Request
from model.sampler import SamplingParams
from model.scheduler import CacheStats, Scheduler, SchedulerConfig, forward_step
from model.transformer import Transformer

log = logging.getLogger(__name__)

DEFAULT_KV_CACHE_MB = 1024


class Engine:
    def __init__(
        self,
        model: Transformer,
        tokenizer,
        *,
        threads: int | None = None,
        context_length: int | None = None,
        kv_cache_mb: float | None = None,
        scheduler: SchedulerConfig = SchedulerConfig(),
        native_dir: Path | None = None,
    ) -> None:
        """context_length: most tokens per sequence (prompt + generated); default and ceiling: the model's.
        kv_cache_mb: capacity of the KV cache (default 1024 MiB); a context longer than it holds is cut to fit.
        native_dir: where the native decode step is built and cached (model/compiled_step.py); None = eager only.
        Building starts in the background; requests decode eagerly until it is ready.
        """
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.threads = threads
        self.kv_cache_mb = kv_cache_mb or DEFAULT_KV_CACHE_MB
        context = min(context_length or self.config.max_seq_len, self.config.max_seq_len)
        cache = model.new_cache(max_seq_len=context, capacity_bytes=int(self.kv_cache_mb * (1 << 20)))
        capacity_tokens = cache.max_blocks * cache.block_size
        if capacity_tokens < context:
            log.warning("KV cache of %d MiB holds %d tokens; context cut from %d", self.kv_cache_mb, capacity_tokens, context)
            cache.max_seq_len = context = capacity_tokens
        self.context_length = context
        self.cache = cache
        self.compiled = None if native_dir is None else CompiledDecode(model, cache, Path(native_dir))
        self._scheduler = Scheduler(model, tokenizer, cache, scheduler, compiled=self.compiled)

    # ----- requests ------------------------------------------------------------------------------

    def submit(self, prompt: str | Sequence[int], params: SamplingParams | None = None, **sampling) -> Request:
        """Queue a request (from any thread) and return its handle: `stream()`, `result()`, `cancel()`.

        `sampling` are SamplingParams fields (None = the default), applied over `params`.
        Raises ValueError for an empty or overlong prompt or ids outside the vocabulary.
        """
        params = _sampling_params(params, sampling)
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self._check_prompt(ids)
        stop_ids = self.tokenizer.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids
        request = Request(ids, params, self.tokenizer, frozenset(stop_ids), self._scheduler.wake)
        if params.max_new_tokens == 0:
            request.complete(Completion(text="", token_ids=[], finish_reason="length", prompt_tokens=len(ids)))
        else:
            self._scheduler.submit(request)
        return request

    def generate_batch(
        self, prompts: Sequence[str | Sequence[int]], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Completion]:
        """Complete several prompts at once (one SamplingParams for all, or one each); results in prompt order."""
        each = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        if len(each) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(each)} SamplingParams")
        requests = [self.submit(prompt, p) for prompt, p in zip(prompts, each)]
        try:
            return [request.result() for request in requests]
        finally:
            for request in requests:  # interrupted while waiting: stop the rest
                request.cancel()

    def generate(self, prompt: str | Sequence[int], **sampling) -> str:
        """The continuation of `prompt` (text, or token ids) as text. Keyword arguments: `SamplingParams` fields."""
        request = self.submit(prompt, **sampling)
        try:
            completion = request.result()
        finally:
            request.cancel()
        return completion.text

    def stream(self, prompt: str | Sequence[int], **sampling) -> Iterator[str]:
        """Yield the continuation as text deltas as tokens are produced; closing the iterator cancels it."""
        return self.submit(prompt, **sampling).stream()

    def chat(self, messages: list[dict[str, str]], *, stream: bool = False, **sampling) -> str | Iterator[str]:
        """Reply to a conversation rendered with the model's own chat template."""
        ids = self.chat_prompt(messages)
        return self.stream(ids, **sampling) if stream else self.generate(ids, **sampling)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of `messages` rendered with the chat template, ready for the assistant's turn."""
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True), add_bos=False)

    def cache_stats(self) -> CacheStats:
        """Prefix-cache hit and miss tokens, evictions, preemptions, bytes used of the capacity."""
        return self._scheduler.cache_stats()

    def clear_prefix_cache(self) -> int:
        """Evict every cached prefix no running request holds (e.g. for cold-start measurements); returns blocks freed."""
        return self._scheduler.clear_prefix_cache()

    def close(self) -> None:
        """End the scheduler loop (unfinished requests end "cancelled") and free the cache."""
        self._scheduler.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.close()

    # ----- scoring -------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """fp32 next-token logits at every position of one sequence: [seq, vocab]. Not prefix-cached."""
        ids = [int(t) for t in token_ids]
        self._check_prompt(ids)
        with self._scheduler.lock:
            seq = self.cache.new_sequence()
            short = self.cache.blocks_needed([seq], [len(ids)]) - self.cache.free_blocks
            if short > 0:  # make room from the prefix cache (running requests keep theirs)
                self.cache.release(self._scheduler.radix.evict(short))
            try:
                return forward_step(self.model, self.cache, [seq], [ids], all_logits=True)
            finally:
                self.cache.free(seq)

    def _check_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise ValueError("empty prompt: at least one token is needed")
        if len(ids) >= self.context_length:
            raise ValueError(
                f"prompt is {len(ids)} tokens; the context length is {self.context_length} "
                "(leave room for at least one generated token)"
            )
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {self.config.vocab_size})")


def _sampling_params(params: SamplingParams | None, sampling: dict) -> SamplingParams:
    """`params` with the keyword arguments of the text-level calls applied; None means "keep"."""
    values = {key: value for key, value in sampling.items() if value is not None}
    return SamplingParams(**values) if params is None else dataclasses.replace(params, **values)
