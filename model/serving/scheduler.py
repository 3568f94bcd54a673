"""The request loop: one thread owns the model and the KV cache and advances every running request together.

Each step runs one ragged forward over the running requests (continuous batching, as in vLLM's and
SGLang's schedulers): a request that is decoding feeds its last sampled token, a request that is still
prefilling feeds its next prompt chunk (at most `prefill_chunk` tokens, so long prompts do not stall the
streams), and new requests join at step boundaries while the step's token budget and the cache allow.

Prefill and decode are one thing here: a request holds `ids` (prompt + generated) and `computed`, how
many of them are cached; a step feeds some of the rest, and once none is left the request samples a token.

Prefix reuse: a request first adopts the longest prefix of its ids that the radix tree caches
(model/serving/radix_cache.py), and offers its own full blocks to the tree as it goes and when it ends. Requests
that arrive together and share a prefix not yet cached are staggered so the prefix is computed once.
When running requests need more blocks than are free, unlocked tree blocks are evicted (LRU); if that is
not enough, the newest running request is preempted: its blocks go to the tree and it re-queues, resuming
later from whatever of them is still cached.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from model.layers.adapters import AdapterRows
from model.layers.kv_cache import KVCache
from model.layers.moe import TASK_TYPES, ExpertLoad
from model.layers.sparse_attention import AttentionConfig, plan_step
from model.layers.transformer import Transformer
from model.serving.drafts import DraftConfig, LookupState, prompt_lookup, verify_step
from model.serving.radix_cache import RadixCache
from model.serving.request import Completion, Request, TokenLogprob, token_ids_of_text

if TYPE_CHECKING:
    from model.serving.compiled_step import CompiledDecode
    from model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DENSE = AttentionConfig()


@dataclass(frozen=True)
class SchedulerConfig:
    prefill_chunk: int = 512  # most prompt tokens one request feeds in one step
    max_step_tokens: int = 1024  # token budget of one step (a decoding request counts 1)
    max_running: int = 64  # most requests in the batch at once
    prefix_cache: bool = True  # reuse cached prefixes across requests (off: every prompt is computed in full)
    drafts: DraftConfig = DraftConfig()  # greedy requests' draft tokens: prompt lookup, jump-forward (drafts.py)


@dataclass
class CacheStats:
    hit_tokens: int = 0  # prompt tokens served from the prefix cache
    miss_tokens: int = 0  # prompt tokens computed
    evicted_blocks: int = 0
    preemptions: int = 0
    bytes_used: int = 0
    bytes_capacity: int = 0
    cached_blocks: int = 0  # blocks the radix tree indexes


def forward_step(
    model: Transformer,
    cache: KVCache,
    seqs: Sequence[int],
    chunks: Sequence[Sequence[int]],
    all_logits: bool = False,
    task_types: Sequence[str | None] | None = None,
    attention: AttentionConfig = DENSE,
    compiled: CompiledDecode | None = None,
    adapters: Sequence[str | None] | None = None,
    hidden: bool = False,
) -> torch.Tensor:
    """Feed chunks[i] to sequence seqs[i] in one ragged forward -> fp32 logits [B, V] (last token) or [N, V].

    task_types: per sequence, the task whose router bias its tokens use (None: no bias); None for all.
    adapters: per sequence, the per-request adapter its tokens use (None: the base model); None for all. A step
    with adapter rows runs eagerly. hidden: final-normed hidden states instead of logits (eager).
    attention: the attention pattern (dense, or block-sparse: model/layers/sparse_attention.py).
    A dense decode step (one token per sequence, no router bias) goes through `compiled` when it is ready,
    else the eager model.
    The cache lengths advance only if the forward succeeds; on any exception the step is rolled back.
    """
    layout = cache.append(seqs, [len(c) for c in chunks])
    tokens = torch.tensor([t for chunk in chunks for t in chunk], dtype=torch.long)
    task_rows = None
    if task_types is not None and any(task_types):
        rows = [TASK_TYPES.index(t) if t else len(TASK_TYPES) for t in task_types]
        task_rows = torch.tensor([row for row, chunk in zip(rows, chunks) for _ in chunk], dtype=torch.long)
    adapter_rows = None
    if adapters is not None and any(adapters):
        routing = model.adapter_routing
        adapter_rows = AdapterRows.of(
            [None if a is None else routing.slot(a) for a in adapters], [len(c) for c in chunks]
        )
    try:
        plan = plan_step(attention, layout, cache.block_size, cache.key_summaries is not None)
        if plan is not None:
            layout = dataclasses.replace(layout, sparse=plan)
        with torch.inference_mode():
            if (
                compiled is not None
                and task_rows is None
                and adapter_rows is None
                and not hidden
                and compiled.usable(layout, all_logits)
            ):
                logits = compiled(tokens, cache, layout)
            else:
                logits = model(
                    tokens,
                    cache,
                    layout,
                    all_logits=all_logits,
                    task_rows=task_rows,
                    adapter_rows=adapter_rows,
                    hidden=hidden,
                )
    except BaseException:
        cache.rollback(layout)
        raise
    cache.commit(layout)
    return logits


_live: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _close_live_schedulers() -> None:
    """Stop every loop before the interpreter tears down: a loop thread still alive then can abort the process."""
    for scheduler in list(_live):
        scheduler.close()


class Scheduler:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        cache: KVCache,
        config: SchedulerConfig = SchedulerConfig(),
        attention: AttentionConfig = DENSE,
        compiled: CompiledDecode | None = None,
    ) -> None:
        self.model = model
        self.attention = attention
        self.compiled = compiled  # the native decode step, used once it is ready (model/serving/compiled_step.py)
        self.tokenizer = tokenizer
        self.cache = cache
        self.config = config
        self.radix = RadixCache(cache.block_size)
        self.task_bias_on = model.has_task_router_bias
        self.stats = CacheStats(bytes_capacity=cache.max_blocks * cache.bytes_per_block)
        self.lock = threading.Lock()  # held while the model and the cache are in use
        self._wake = threading.Condition()
        self._inbox: list[Request] = []
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        _live.add(self)

    # ----- caller side (any thread) --------------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._inbox.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="r1-scheduler", daemon=True)
                self._thread.start()
            self._wake.notify()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def close(self) -> None:
        """Stop the loop; requests still queued or running end as "cancelled"."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is None:
            with self.lock:
                self._cancel_all()
        elif thread is not threading.current_thread():  # (from the loop itself, the loop cleans up on exit)
            thread.join()

    def _cancel_all(self) -> None:
        with self._wake:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
        for request in [*self._waiting, *self._running]:
            self._finish(request, "cancelled")

    def cache_stats(self) -> CacheStats:
        with self.lock:
            self.stats.bytes_used = self.cache.blocks_in_use * self.cache.bytes_per_block
            self.stats.cached_blocks = self.radix.cached_blocks
            return CacheStats(**vars(self.stats))

    def clear_prefix_cache(self) -> int:
        with self.lock:
            return self._clear_prefix_cache()

    def _clear_prefix_cache(self) -> int:
        freed = self.radix.evict(self.radix.evictable_blocks)
        self.cache.release(freed)
        self.stats.evicted_blocks += len(freed)
        return len(freed)

    # Routing changes land between steps. Prefixes cached under the old routing hold other K/V: dropped.

    def set_task_router_bias(self, biases: Mapping[str, torch.Tensor] | None) -> None:
        with self.lock:
            self.model.set_task_router_bias(biases)
            self.task_bias_on = biases is not None
            self._clear_prefix_cache()

    def set_expert_capacity(self, capacity: int | None) -> None:
        with self.lock:
            self.model.set_expert_capacity(capacity)
            self._clear_prefix_cache()

    def router_stats(self) -> list[ExpertLoad]:
        with self.lock:
            return self.model.router_stats()

    # ----- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._serve_once():
                pass
        finally:
            with self.lock:
                self._cancel_all()

    def _serve_once(self) -> bool:
        """Wait for work, run one step; False once the scheduler is closed."""
        with self._wake:
            while not self._closed and not (self._inbox or self._waiting or self._running):
                self._wake.wait()
            if self._closed:
                return False
            self._waiting.extend(self._inbox)
            self._inbox.clear()
        with self.lock:
            try:
                progressed = self.step()
            except Exception as err:  # a bug in the loop itself: fail what is in flight, keep serving
                log.exception("scheduler step failed")
                for request in [*self._running, *self._waiting]:
                    self._finish(request, "error", f"internal error: {err}")
                progressed = True
        if not progressed:  # waiting for memory that only a finishing request can give back
            with self._wake:
                self._wake.wait(0.05)
        return True

    def step(self) -> bool:
        """One scheduling round: drop cancelled requests, pick the batch, run it, sample, finish rows.

        Returns False when there was nothing it could run.
        """
        for request in [r for r in [*self._running, *self._waiting] if r.cancel_requested]:
            self._finish(request, "cancelled")
        batch = self._schedule()
        if not batch:
            return False
        seqs = [request.seq for request, _ in batch]
        chunks = [request.ids[request.computed : request.computed + n] for request, n in batch]
        drafts = self._drafts(batch)
        task_types = [request.task_type for request, _ in batch] if self.task_bias_on else None
        adapters = [request.adapter for request, _ in batch]
        try:
            if drafts:  # a decode step whose rows verify the drafts too: logits at every fed token
                logits = verify_step(
                    self.model, self.cache, seqs, [c + d for c, d in zip(chunks, drafts)], self.compiled
                )
            else:
                logits = forward_step(
                    self.model,
                    self.cache,
                    seqs,
                    chunks,
                    task_types=task_types,
                    attention=self.attention,
                    compiled=self.compiled,
                    adapters=adapters,
                )
        except Exception as err:  # e.g. a memory error: fail this step's requests only
            log.warning("forward step over %d requests failed: %s", len(batch), err)
            for request, _ in batch:
                self._finish(request, "error", f"{type(err).__name__}: {err}")
            return True
        greedy = logits.argmax(dim=-1).tolist() if any(r.sampler.plain_greedy for r, _ in batch) else None
        row = 0
        for i, (request, n) in enumerate(batch):
            draft = drafts[i] if drafts else []
            request.computed += n
            request.forward_steps += 1
            if request.computed < len(request.ids):  # still prefilling
                self._index(request)  # share its complete blocks with requests that arrive meanwhile
                row += 1
                continue
            self._sample_rows(request, logits, row, greedy, draft)
            row += 1 + len(draft)
            if request.seq is not None:
                self._index(request)
        return True

    # ----- drafts: prompt lookup and jump-forward (model/serving/drafts.py) ---------------------------

    def _drafts(self, batch: list[tuple[Request, int]]) -> list[list[int]] | None:
        """Per batch entry, the tokens it drafts after its next one; None when nobody drafts this step.

        Only pure decode steps of dense attention, greedy requests, no adapter rows, on the native step (whose rows
        are computed exactly as single-token decodes are: drafts.py), and only what fits the free blocks without
        evicting.
        """
        config = self.config.drafts
        if (
            not (config.prompt_lookup or config.jump_forward)
            or self.task_bias_on
            or self.attention != DENSE
            or self.cache.key_summaries is not None
            or self.compiled is None
            or not self.compiled.ready
            or any(r.adapter is not None for r, _ in batch)
            or any(n != 1 or r.computed + 1 != len(r.ids) for r, n in batch)
        ):
            return None
        lookup = config.prompt_lookup and len(self._running) <= config.lookup_max_batch
        drafts = [self._draft(request, lookup) for request, _ in batch]
        if not any(drafts):
            return None
        seqs = [request.seq for request, _ in batch]
        if self.cache.blocks_needed(seqs, [1 + len(d) for d in drafts]) > self.cache.free_blocks:
            return None
        return drafts

    def _draft(self, request: Request, lookup: bool) -> list[int]:
        """The tokens `request` drafts after its last sampled one: those its grammar forces, else a prompt lookup."""
        params, config = request.params, self.config.drafts
        room = min(params.max_new_tokens - len(request.generated), self.cache.max_seq_len - len(request.ids)) - 1
        request.lookup_draft = False
        if params.temperature != 0 or room <= 0:
            return []
        forced = getattr(params.logits_processor, "forced_tokens", None)
        try:
            draft = forced(request.generated, min(room, config.forced_tokens)) if config.jump_forward and forced else []
        except Exception:  # tokens that break the grammar: the row's own sampling reports it and fails only this row
            draft = []
        if not draft and lookup:
            request.lookup = request.lookup or LookupState(config.lookup_tokens)
            if request.lookup.ready():
                draft = prompt_lookup(
                    request.ids, config.lookup_ngram, config.lookup_min_ngram, min(room, request.lookup.window)
                )
                request.lookup_draft = bool(draft)
        return draft

    def _sample_rows(
        self, request: Request, logits: torch.Tensor, row: int, greedy: list[int] | None, draft: list[int]
    ) -> None:
        """Sample `request`'s next token from logits[row], then each next row while its draft agrees; the K/V of
        the draft tokens it did not keep are truncated. Stops, stop strings and max_new_tokens act per token."""
        accepted = 0
        for j in range(len(draft) + 1):
            use_greedy = greedy is not None and request.sampler.plain_greedy
            token = self._sample(request, logits[row + j], greedy[row + j] if use_greedy else None)
            if request.done or j == len(draft) or token != draft[j]:
                break
            request.computed += 1  # a draft token the model chose itself: its K/V are already cached
            accepted += 1
        request.drafted += len(draft)
        request.draft_accepted += accepted
        if draft and request.seq is not None:
            self.cache.truncate(request.seq, request.computed)
        if draft and request.lookup_draft:
            request.lookup.update(len(draft), accepted, self.config.drafts.lookup_tokens)

    def _schedule(self) -> list[tuple[Request, int]]:
        budget = self.config.max_step_tokens
        batch: list[tuple[Request, int]] = []
        for request in list(self._running):
            n = min(len(request.ids) - request.computed, self.config.prefill_chunk, budget)
            if n > 0:
                batch.append((request, n))
                budget -= n
        while batch and not self._make_room(batch):
            victim = self._running[-1]
            batch = [(r, n) for r, n in batch if r is not victim]
            self._preempt(victim)
        admitting: list[Request] = []
        for request in list(self._waiting):
            if budget <= 0 or len(self._running) >= self.config.max_running:
                break
            if self._shares_uncached_prefix(request, admitting):
                continue  # let the request ahead compute the shared part first
            n = self._admit(request, budget, batch)
            if n is None:
                break  # not enough memory now; wait for running requests to finish
            admitting.append(request)
            budget -= n
        return batch

    def _make_room(self, batch: list[tuple[Request, int]]) -> bool:
        """Ensure the blocks `batch` will allocate are free, evicting unlocked prefixes. False if impossible."""
        needed = self.cache.blocks_needed([r.seq for r, _ in batch], [n for _, n in batch])
        short = needed - self.cache.free_blocks
        if short <= 0:
            return True
        if short > self.radix.evictable_blocks:
            return False
        freed = self.radix.evict(short)
        self.cache.release(freed)
        self.stats.evicted_blocks += len(freed)
        return self.cache.free_blocks >= needed

    def _admit(self, request: Request, budget: int, batch: list[tuple[Request, int]]) -> int | None:
        """Start `request` on its longest cached prefix and add its first chunk to `batch`; None if it can't fit."""
        # At least one token is fed, to get the next-token logits.
        match = self.radix.match(self._key(request)[:-1] if self.config.prefix_cache else [])
        matched = match.n_blocks * self.cache.block_size
        n = min(len(request.ids) - matched, self.config.prefill_chunk, budget)
        self.radix.lock(match.node)
        request.seq = self.cache.new_sequence(match.blocks)
        if not self._make_room([*batch, (request, n)]):
            self.cache.free(request.seq)
            self.radix.unlock(match.node)
            request.seq = None
            return None
        self._waiting.remove(request)
        self._running.append(request)
        request.node, request.computed, request.indexed_blocks = match.node, matched, match.n_blocks
        if request.cached_tokens is None:  # first admission (not a resume after preemption)
            request.cached_tokens = matched
            self.stats.hit_tokens += matched
            self.stats.miss_tokens += len(request.prompt_ids) - matched
        batch.append((request, n))
        return n

    def _shares_uncached_prefix(self, request: Request, admitting: list[Request]) -> bool:
        """True if a request admitted this step (or still prefilling) will cache a block-long prefix of this one."""
        if not self.config.prefix_cache:
            return False
        bs = self.cache.block_size
        for other in [*admitting, *(r for r in self._running if r.computed < len(r.prompt_ids))]:
            common = 0
            mine, theirs = self._key(request), self._key(other)
            limit = min(len(mine), len(theirs)) - 1
            while common < limit and mine[common] == theirs[common]:
                common += 1
            if common >= bs and common // bs > other.computed // bs:
                return True
        return False

    def _index(self, request: Request) -> None:
        """Offer the request's full cached blocks to the radix tree and move its lock to the deepest node."""
        full = request.computed // self.cache.block_size
        if full <= request.indexed_blocks or not self.config.prefix_cache:
            return
        tokens = self._key(request)[: full * self.cache.block_size]
        node, new_blocks = self.radix.insert(tokens, self.cache.blocks(request.seq)[:full])
        self.cache.retain(new_blocks)
        self.radix.lock(node)
        self.radix.unlock(request.node)
        request.node, request.indexed_blocks = node, full

    def _key(self, request: Request) -> list[int]:
        """The request's ids as the radix tree knows them. With a task router bias on, the same tokens hold
        different K/V under different tasks, and under different adapters (or none) always: each (task, adapter)
        pair's ids live in their own range, so they never match."""
        return self._ids_key(request.ids, request.task_type, request.adapter)

    def _ids_key(self, ids: list[int], task_type: str | None, adapter: str | None) -> list[int]:
        task = TASK_TYPES.index(task_type) + 1 if self.task_bias_on and task_type is not None else 0
        slot = 0 if adapter is None else self.model.adapter_routing.slot(adapter) + 1
        offset = (task + slot * (len(TASK_TYPES) + 1)) * self.model.config.vocab_size
        return ids if offset == 0 else [t + offset for t in ids]

    # ----- scoring without generating --------------------------------------------------------------

    def hidden_states(
        self, prompts: Sequence[Sequence[int]], adapter: str | None = None, task_type: str | None = None
    ) -> torch.Tensor:
        """The final-normed hidden state of each prompt's last token, [B, D] (what a value head reads), in one
        forward between scheduler steps. Each prompt starts from its longest prefix the radix tree caches under
        the same adapter (and task); nothing new is cached. Raises MemoryError when the pool cannot hold them."""
        with self.lock:
            held: list[tuple[int, object]] = []
            chunks = []
            try:
                for prompt in prompts:
                    ids = [int(t) for t in prompt]
                    key = self._ids_key(ids, task_type, adapter)
                    match = self.radix.match(key[:-1] if self.config.prefix_cache else [])
                    self.radix.lock(match.node)
                    held.append((self.cache.new_sequence(match.blocks), match.node))
                    chunks.append(ids[match.n_blocks * self.cache.block_size :])
                seqs = [seq for seq, _ in held]
                short = self.cache.blocks_needed(seqs, [len(c) for c in chunks]) - self.cache.free_blocks
                if short > self.radix.evictable_blocks:
                    raise MemoryError(f"the KV cache cannot hold {len(prompts)} prompts at once")
                if short > 0:
                    freed = self.radix.evict(short)
                    self.cache.release(freed)
                    self.stats.evicted_blocks += len(freed)
                return forward_step(
                    self.model,
                    self.cache,
                    seqs,
                    chunks,
                    attention=self.attention,
                    adapters=[adapter] * len(seqs),
                    task_types=[task_type] * len(seqs) if self.task_bias_on else None,
                    hidden=True,
                )
            finally:
                for seq, node in held:
                    self.cache.free(seq)
                    self.radix.unlock(node)

    def _preempt(self, request: Request) -> None:
        log.info("preempting request %d to free KV blocks", request.id)
        self._index(request)
        self._release(request)
        request.computed = 0
        self._running.remove(request)
        self._waiting.appendleft(request)
        self.stats.preemptions += 1

    def _release(self, request: Request) -> None:
        if request.seq is not None:
            self.radix.unlock(request.node)
            self.cache.free(request.seq)
            request.seq, request.node = None, None

    def _sample(self, request: Request, logits: torch.Tensor, greedy_token: int | None) -> int | None:
        """Choose, record and emit `request`'s next token; None when the request ended without one."""
        try:
            token = (
                greedy_token if greedy_token is not None else request.sampler(logits, request.ids, request.generated)
            )
        except Exception as err:  # e.g. a logits processor that raised or allowed nothing
            self._finish(request, "error", f"{type(err).__name__}: {err}")
            return None
        if request.logprobs is not None:
            logprobs = logits.log_softmax(-1)
            top = torch.topk(logprobs, request.params.logprobs)
            request.logprobs.append(
                TokenLogprob(token, float(logprobs[token]), tuple(zip(top.indices.tolist(), top.values.tolist())))
            )
        if token in request.stop_ids:
            self._finish(request, "stop")
            return None
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        request.generated.append(token)
        request.ids.append(token)
        request.emit(request.tracker.push(token))
        if request.tracker.stopped:
            self._finish(request, "stop")
        elif len(request.generated) >= request.params.max_new_tokens or len(request.ids) > self.cache.max_seq_len:
            self._finish(request, "length")
        return token

    def _finish(self, request: Request, reason: str, error: str | None = None) -> None:
        if request.done:
            return
        if request.seq is not None and reason != "error":  # an errored step's rows may hold bad K/V
            self._index(request)
        self._release(request)
        for queue_ in (self._running, self._waiting):
            if request in queue_:
                queue_.remove(request)
        request.emit(request.tracker.finish())
        text = request.tracker.text
        now = time.perf_counter()
        request.complete(
            Completion(
                text=text,
                token_ids=token_ids_of_text(self.tokenizer, request.generated, text),
                finish_reason=reason,
                prompt_tokens=len(request.prompt_ids),
                cached_tokens=request.cached_tokens or 0,
                generated_tokens=len(request.generated),
                ttft_s=None if request.first_token_at is None else request.first_token_at - request.submitted_at,
                seconds=now - request.submitted_at,
                error=error,
                logprobs=request.logprobs,
            )
        )
