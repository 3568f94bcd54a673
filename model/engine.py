"""The inference engine: prefill, fork and batched ragged decode over one paged KV cache.

`Engine` owns a `Transformer`, a `Tokenizer` and a `KVCache`. Text-level calls (`generate`, `stream`,
`chat`) are built on token-level ones (`prefill`, `fork`, `decode`) that the reasoning search uses
directly: prefill a shared prefix once, fork it K ways, decode the K continuations in one batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass

import torch

from model.kv_cache import KVCache
from model.sampler import Sampler, SamplingParams
from model.transformer import Transformer


@dataclass
class Completion:
    """One finished continuation."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-sequence id or stop string) or "length"
    prompt_tokens: int


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


class _TextTracker:
    """Text of a growing continuation: deltas safe to show, cut before the first stop string."""

    def __init__(self, tokenizer, stop: tuple[str, ...]) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stop = stop
        self.ids: list[int] = []
        self.text = ""  # decoded so far (cut at a stop string once one appears)
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
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


class Engine:
    def __init__(
        self, model: Transformer, tokenizer, *, threads: int | None = None, context_length: int | None = None
    ) -> None:
        """context_length: most tokens per sequence (prompt + generated); default and ceiling: the model's."""
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.threads = threads
        self.context_length = min(context_length or self.config.max_seq_len, self.config.max_seq_len)
        self.cache = KVCache(self.config, max_seq_len=self.context_length)
        self.last_stats = GenerationStats()

    # ----- token level ---------------------------------------------------------------------------

    def _forward(self, seqs: list[int], chunks: list[list[int]], all_logits: bool = False) -> torch.Tensor:
        layout = self.cache.append(seqs, [len(c) for c in chunks])
        tokens = torch.tensor([t for chunk in chunks for t in chunk], dtype=torch.long)
        with torch.inference_mode():
            return self.model(tokens, self.cache, layout, all_logits=all_logits)

    def prefill(self, token_ids: Sequence[int] | Sequence[Sequence[int]]) -> tuple[list[int], torch.Tensor]:
        """Cache one or more prompts in one ragged forward; returns (sequence ids, next-token logits [B, V])."""
        prompts = [list(token_ids)] if token_ids and isinstance(token_ids[0], int) else [list(p) for p in token_ids]
        for prompt in prompts:
            self._check_prompt(prompt)
        seqs = [self.cache.new_sequence() for _ in prompts]
        try:
            return seqs, self._forward(seqs, prompts)
        except BaseException:
            for seq in seqs:
                self.cache.free(seq)
            raise

    def extend(self, seqs: list[int], chunks: list[list[int]]) -> torch.Tensor:
        """Append tokens to cached sequences (ragged) -> next-token logits [B, V]."""
        return self._forward(seqs, chunks)

    def fork(self, seq: int, n: int) -> list[int]:
        """n copies of a cached sequence sharing its K/V blocks; the prefix is not recomputed."""
        return self.cache.fork(seq, n)

    def release(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self.cache.free(seq)

    def logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """fp32 next-token logits at every position of one sequence: [seq, vocab]."""
        ids = [int(t) for t in token_ids]
        self._check_prompt(ids)
        seq = self.cache.new_sequence()
        try:
            return self._forward([seq], [ids], all_logits=True)
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

    def decode(
        self, seqs: list[int], logits: torch.Tensor, histories: list[list[int]], params: SamplingParams
    ) -> Iterator[list[tuple[int, int]]]:
        """Sample and feed tokens for live sequences until each stops; yields [(row, token)] per step.

        `logits` are the next-token logits for each row (from `prefill`/`extend`); `histories` the
        tokens the repetition penalty looks at (grown in place). Rows stop on a stop id (not fed or
        yielded), at max_new_tokens, or when the context is full; the caller may close the iterator.
        """
        sampler = Sampler(params)
        stop_ids = set(self.tokenizer.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        live = list(range(len(seqs)))
        produced = [0] * len(seqs)
        while live and params.max_new_tokens:
            tokens = sampler(logits, [histories[r] for r in live]).tolist()
            step, feed_rows = [], []
            for row, token in zip(live, tokens):
                if token in stop_ids:
                    continue
                histories[row].append(token)
                produced[row] += 1
                step.append((row, token))
                # Feed the token back only if more may follow: below max_new_tokens and with context room.
                if produced[row] < params.max_new_tokens and self.cache.length(seqs[row]) < self.context_length:
                    feed_rows.append(row)
            if step:
                yield step
            live = feed_rows
            if live:
                index = {row: i for i, (row, _) in enumerate(step)}
                logits = self._forward([seqs[r] for r in live], [[step[index[r]][1]] for r in live])

    # ----- text level ----------------------------------------------------------------------------

    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]

    def _generate(
        self, encoded: list[list[int]], params: SamplingParams, trackers: list[_TextTracker]
    ) -> Iterator[tuple[int, str]]:
        """Prefill the prompts together, decode them as one batch, yield (row, text delta) as text appears.

        Fills `trackers` (one per prompt) and `self.last_stats`; releases the cache however it ends.
        """
        stats = self.last_stats = GenerationStats(prompt_tokens=sum(map(len, encoded)))
        start = time.perf_counter()
        seqs, logits = self.prefill(encoded)
        stats.prefill_seconds = time.perf_counter() - start
        start = time.perf_counter()
        steps = self.decode(seqs, logits, [list(p) for p in encoded], params)
        try:
            for step in steps:
                for row, token in step:
                    if not trackers[row].stopped:
                        stats.generated_tokens += 1
                        delta = trackers[row].push(token)
                        if delta:
                            yield row, delta
                if all(tracker.stopped for tracker in trackers):
                    break
            for row, tracker in enumerate(trackers):
                tail = tracker.finish()
                if tail:
                    yield row, tail
        finally:
            steps.close()
            self.release(seqs)
            stats.decode_seconds = time.perf_counter() - start

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams) -> list[Completion]:
        """Complete several prompts together: one ragged prefill, then batched decode."""
        encoded = [self._encode(p) for p in prompts]
        trackers = [_TextTracker(self.tokenizer, params.stop) for _ in encoded]
        for _ in self._generate(encoded, params, trackers):
            pass
        results = []
        for tracker, prompt in zip(trackers, encoded):
            hit_length = not tracker.stopped and (
                len(tracker.ids) >= params.max_new_tokens or len(prompt) + len(tracker.ids) >= self.context_length
            )
            results.append(
                Completion(
                    text=tracker.text,
                    token_ids=tracker.ids,
                    finish_reason="length" if hit_length else "stop",
                    prompt_tokens=len(prompt),
                )
            )
        return results

    def generate(self, prompt: str | Sequence[int], **sampling) -> str:
        """The continuation of `prompt` (text, or token ids) as text. Keyword arguments: `SamplingParams` fields."""
        return self.generate_batch([prompt], _sampling_params(sampling))[0].text

    def stream(self, prompt: str | Sequence[int], **sampling) -> Iterator[str]:
        """Yield the continuation as text deltas as tokens are produced."""
        params = _sampling_params(sampling)
        tracker = _TextTracker(self.tokenizer, params.stop)
        with closing(self._generate([self._encode(prompt)], params, [tracker])) as deltas:
            for _, delta in deltas:
                yield delta

    def chat(self, messages: list[dict[str, str]], *, stream: bool = False, **sampling) -> str | Iterator[str]:
        """Reply to a conversation rendered with the model's own chat template."""
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = self.tokenizer.encode(prompt, add_bos=False)
        return self.stream(ids, **sampling) if stream else self.generate(ids, **sampling)


def _sampling_params(sampling: dict) -> SamplingParams:
    """Keyword arguments of the text-level calls -> SamplingParams; None means "the default"."""
    return SamplingParams(**{key: value for key, value in sampling.items() if value is not None})
