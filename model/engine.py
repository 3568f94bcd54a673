"""The inference engine: thread-safe requests served by one scheduler loop over a paged, prefix-cached KV cache.

`Engine.submit` is the one way to generate; `generate`, `generate_batch`, `stream` and `chat` are thin
wrappers over it (model/backends/backend.py, the interface a remote server implements too). Requests from any
number of threads are batched together step by step (model/serving/scheduler.py), and prompts that share a prefix
with earlier ones reuse its cached K/V (model/serving/radix_cache.py). `logits` scores a sequence outside the request path (perplexity, parity tests).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from model.backends.backend import Backend, with_sampling
from model.layers.moe import TASK_TYPES, ExpertLoad
from model.layers.sparse_attention import AttentionConfig
from model.layers.transformer import Transformer
from model.serving.compiled_step import CompiledDecode
from model.serving.grammar import GrammarCompiler
from model.serving.request import Completion, Request
from model.serving.sampler import SamplingParams
from model.serving.scheduler import DENSE, CacheStats, Scheduler, SchedulerConfig, forward_step

log = logging.getLogger(__name__)

DEFAULT_KV_CACHE_MB = 1024
GRAMMAR_CACHE_SIZE = 64  # compiled JSON-schema grammars kept per engine


class Engine(Backend):
    def __init__(
        self,
        model: Transformer,
        tokenizer,
        *,
        threads: int | None = None,
        context_length: int | None = None,
        kv_cache_mb: float | None = None,
        scheduler: SchedulerConfig = SchedulerConfig(),  # noqa: B008 (frozen: one shared default is safe)
        name: str | None = None,
        attention: AttentionConfig = DENSE,
        native_dir: Path | None = None,
    ) -> None:
        """name: what logs and status displays call the model (default: its architecture).
        context_length: most tokens per sequence (prompt + generated); default and ceiling: the model's.
        kv_cache_mb: capacity of the KV cache (default 1024 MiB); a context longer than it holds is cut to fit.
        attention: dense or block-sparse attention (model/layers/sparse_attention.py), for every request and `logits`.
        native_dir: where the native decode step is built and cached (model/serving/compiled_step.py); None = eager only.
        Building starts in the background; requests decode eagerly until it is ready.
        """
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.threads = threads
        self.kv_cache_mb = kv_cache_mb or DEFAULT_KV_CACHE_MB
        context = min(context_length or self.config.max_seq_len, self.config.max_seq_len)
        self.attention = attention
        cache = model.new_cache(
            max_seq_len=context,
            capacity_bytes=int(self.kv_cache_mb * (1 << 20)),
            key_summaries=attention.uses_key_summaries,
        )
        capacity_tokens = cache.max_blocks * cache.block_size
        if capacity_tokens < context:
            log.warning(
                "KV cache of %d MiB holds %d tokens; context cut from %d", self.kv_cache_mb, capacity_tokens, context
            )
            cache.max_seq_len = context = capacity_tokens
        self.context_length = context
        self.cache = cache
        self.name = name or self.config.arch
        self.compiled = None if native_dir is None else CompiledDecode(model, cache, Path(native_dir))
        self._scheduler = Scheduler(model, tokenizer, cache, scheduler, attention, compiled=self.compiled)
        # Where the adapters came from: per-request ones by name, None = the one every request runs with (set by
        # `model.load`); what finds files saved beside an adapter, such as a value head.
        self.adapter_paths: dict[str | None, Path] = {}
        self._grammars: OrderedDict[str, str] = OrderedDict()  # compiled grammars by their schema's JSON
        self._grammars_lock = threading.Lock()

    # ----- requests ------------------------------------------------------------------------------

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the per-request adapters loaded (`model.load(request_adapters=...)`), for `submit(adapter=)`."""
        return tuple(self.model.adapter_routing.names)

    def submit(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        task_type: str | None = None,
        adapter: str | None = None,
        **sampling,
    ) -> Request:
        """Queue a request (from any thread) and return its handle: `stream()`, `result()`, `cancel()`.

        `sampling` are SamplingParams fields (None = the default), applied over `params`.
        task_type: "math", "code" or "chat": the routers of an MoE model add that task's bias to this request's
        tokens, if one is set (`set_task_router_bias`); otherwise it changes nothing.
        adapter: a per-request adapter (one of `adapters`) this request runs with, in the same batches as requests
        without it (model/layers/adapters.py); None = the base model (plus any adapter loaded for all requests).
        Raises ValueError for an empty or overlong prompt, ids outside the vocabulary, an unknown task type or adapter.
        """
        if task_type is not None and task_type not in TASK_TYPES:
            raise ValueError(f"unknown task_type {task_type!r}; choose one of {', '.join(TASK_TYPES)} (or None)")
        if adapter is not None:
            self.model.adapter_routing.slot(adapter)  # raises ValueError naming the loaded ones
        params = with_sampling(params, sampling)
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self._check_prompt(ids)
        stop_ids = self.tokenizer.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids
        request = Request(ids, params, self.tokenizer, frozenset(stop_ids), self._scheduler.wake, task_type, adapter)
        if params.max_new_tokens == 0:
            request.complete(Completion(text="", token_ids=[], finish_reason="length", prompt_tokens=len(ids)))
        else:
            self._scheduler.submit(request)
        return request

    def text_prompt(self, text: str, *, continuation: bool = False) -> list[int]:
        """Token ids of `text`; a continuation (text appended to a prompt) gets no BOS."""
        return self.tokenizer.encode(text, add_bos=False) if continuation else self.tokenizer.encode(text)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of `messages` rendered with the chat template, ready for the assistant's turn."""
        return self.tokenizer.encode(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True), add_bos=False
        )

    @functools.cached_property
    def grammar_compiler(self) -> GrammarCompiler:
        """llguidance's view of this engine's tokenizer (built on first use: it takes a while)."""
        return GrammarCompiler(self.tokenizer, self.config.vocab_size)

    def json_grammar(self, schema: Mapping[str, Any]) -> str:
        """The compiled grammar of JSON valid under `schema`, cached by the schema. Raises GrammarError."""
        key = json.dumps(schema, sort_keys=True)
        with self._grammars_lock:
            if key in self._grammars:
                self._grammars.move_to_end(key)
                return self._grammars[key]
        grammar = self.grammar_compiler.json_schema(schema)
        with self._grammars_lock:
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        return grammar

    def chat_json(
        self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], *, max_new_tokens: int
    ) -> Completion:
        """A greedy reply to `messages` under the grammar of `schema` (see Backend.chat_json)."""
        processor = self.grammar_compiler.processor(self.json_grammar(schema))
        return self.submit(
            self.chat_prompt(messages), max_new_tokens=max_new_tokens, temperature=0.0, logits_processor=processor
        ).result()

    def status(self) -> list[tuple[str, str]]:
        stats = self.cache_stats()
        looked_up = stats.hit_tokens + stats.miss_tokens
        hit_rate = f"{stats.hit_tokens / looked_up:.0%}" if looked_up else "—"
        mib = 1 << 20
        return [
            ("model", self.name),
            ("KV cache used / capacity", f"{stats.bytes_used / mib:.1f} / {stats.bytes_capacity / mib:.0f} MiB"),
            ("prefix-cache hit tokens", f"{stats.hit_tokens} ({hit_rate} of prompt tokens)"),
            ("computed prompt tokens", str(stats.miss_tokens)),
            ("cached blocks", str(stats.cached_blocks)),
            ("evicted blocks", str(stats.evicted_blocks)),
            ("preemptions", str(stats.preemptions)),
        ]

    # ----- routing (MoE models) --------------------------------------------------------------------

    def set_task_router_bias(self, biases: Mapping[str, torch.Tensor] | None) -> None:
        """Per task type ("math", "code", "chat"), a bias [MoE layers, experts] added to the router logits of
        requests submitted with that task_type; None switches it off. Drops the prefix cache.
        Raises ValueError for a model without experts, an unknown task type or a bias of the wrong shape."""
        self._scheduler.set_task_router_bias(biases)

    def set_expert_capacity(self, capacity: int | None) -> None:
        """At most `capacity` (token, expert) assignments per expert per step (DEFAULT_EXPERT_CAPACITY = 128 is
        typical); an assignment past it goes to the token's next-best expert. None = off. Drops the prefix cache."""
        self._scheduler.set_expert_capacity(capacity)

    def router_stats(self) -> list[ExpertLoad]:
        """Per MoE layer: assignments each expert ran, re-routed and dropped counts, since load or the last reset."""
        return self._scheduler.router_stats()

    def cache_stats(self) -> CacheStats:
        """Prefix-cache hit and miss tokens, evictions, preemptions, bytes used of the capacity."""
        return self._scheduler.cache_stats()

    def clear_prefix_cache(self) -> int:
        """Evict every cached prefix no running request holds (e.g. for cold-start measurements); returns blocks freed."""
        return self._scheduler.clear_prefix_cache()

    def close(self) -> None:
        """End the scheduler loop (unfinished requests end "cancelled") and free the cache."""
        self._scheduler.close()

    def __del__(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.close()

    # ----- scoring -------------------------------------------------------------------------------

    def hidden_states(self, prompts: Sequence[Sequence[int]], *, adapter: str | None = None) -> torch.Tensor:
        """The final-normed hidden state of each prompt's last token, fp32 [len(prompts), dim], without generating:
        what a value head (reasoning/value_model.py) reads. Prefixes cached under the same adapter are reused.
        Raises ValueError for a bad prompt or an unknown adapter."""
        prompts = [[int(t) for t in p] for p in prompts]
        for ids in prompts:
            self._check_prompt(ids)
        if adapter is not None:
            self.model.adapter_routing.slot(adapter)
        return self._scheduler.hidden_states(prompts, adapter) if prompts else torch.empty(0, self.config.dim)

    def logits(
        self, token_ids: Sequence[int], chunk: int | None = None, *, adapter: str | None = None, hidden: bool = False
    ) -> torch.Tensor:
        """fp32 next-token logits at every position of one sequence: [seq, vocab]. Not prefix-cached.

        chunk: feed the sequence in steps of this many tokens, as a chunked prefill does (None = one step).
        adapter: a per-request adapter to run it with (None: the base model).
        hidden: the final-normed hidden states [seq, dim] instead (each prefix's, as `hidden_states` gives them).
        """
        ids = [int(t) for t in token_ids]
        self._check_prompt(ids)
        with self._scheduler.lock:
            seq = self.cache.new_sequence()
            short = self.cache.blocks_needed([seq], [len(ids)]) - self.cache.free_blocks
            if short > 0:  # make room from the prefix cache (running requests keep theirs)
                self.cache.release(self._scheduler.radix.evict(short))
            try:
                step = chunk or len(ids)
                return torch.cat(
                    [
                        forward_step(
                            self.model,
                            self.cache,
                            [seq],
                            [ids[i : i + step]],
                            all_logits=True,
                            attention=self.attention,
                            adapters=[adapter],
                            hidden=hidden,
                        )
                        for i in range(0, len(ids), step)
                    ]
                )
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
