"""The serving core: concurrent requests, per-row stop and cancel, the prefix cache, faults, shutdown.

Most tests run a tiny random Llama (fast, fp32, so batched and solo runs are bit-comparable) with the
default model's real tokenizer; the concurrency test is repeated on the real default model (slow).
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch

import model
from model import SamplingParams, build_transformer
from model.config import ModelConfig
from model.engine import Engine
from model.serving.scheduler import SchedulerConfig

PROMPTS = [
    f"Request number {i} asks about {topic}."
    for i, topic in enumerate(["cats", "the sea", "prime numbers", "bread", "trains", "rain", "chess", "tea"])
]


def tiny_transformer(vocab_size: int, seed: int = 0, quant: str | None = None, successor: bool = False):
    """A random 2-layer Llama. `successor`: its LM head is the embedding shifted by one row and its layers are weak,
    so it mostly writes the id after the one it read (t -> t + 1): runs of ids it has seen can be drafted."""
    config = ModelConfig(
        arch="llama",
        vocab_size=vocab_size,
        dim=64,
        n_layers=2,
        ffn_dim=128,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        max_seq_len=4096,
    )
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "tok_embeddings.weight": torch.randn(vocab_size, 64, generator=g),
        "output.weight": torch.randn(vocab_size, 64, generator=g) * 0.3,
        "norm.weight": torch.ones(64),
    }
    for i in range(2):
        p = f"layers.{i}."
        shapes = {
            "attention.wq": (64, 64),
            "attention.wk": (32, 64),
            "attention.wv": (32, 64),
            "attention.wo": (64, 64),
            "feed_forward.w1": (128, 64),
            "feed_forward.w3": (128, 64),
            "feed_forward.w2": (64, 128),
        }
        for name, shape in shapes.items():
            tensors[p + name + ".weight"] = torch.randn(*shape, generator=g) * (0.02 if successor else 0.2)
        tensors[p + "attention_norm.weight"] = torch.ones(64)
        tensors[p + "ffn_norm.weight"] = torch.ones(64)
    if successor:
        tensors["output.weight"] = tensors["tok_embeddings.weight"].roll(1, dims=0)
    return build_transformer(config, tensors, quant)


@pytest.fixture(scope="module")
def tokenizer(default_checkpoint):
    return default_checkpoint.tokenizer


@pytest.fixture(scope="module")
def transformer(tokenizer):
    return tiny_transformer(tokenizer.vocab_size)


@pytest.fixture
def engine(transformer, tokenizer):
    with Engine(transformer, tokenizer, kv_cache_mb=64) as engine:
        yield engine


def run_threads(fn, n: int) -> dict[int, object]:
    results: dict[int, object] = {}

    def target(i: int) -> None:
        results[i] = fn(i)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.parametrize("sampling", [dict(), dict(temperature=0.9, top_p=0.95)], ids=["greedy", "seeded"])
def test_eight_concurrent_streams_equal_their_solo_runs(engine, sampling):
    def stream(i: int) -> str:
        return "".join(engine.stream(PROMPTS[i], max_new_tokens=24, seed=100 + i, **sampling))

    together = run_threads(stream, 8)
    engine.clear_prefix_cache()
    alone = {i: engine.generate(PROMPTS[i], max_new_tokens=24, seed=100 + i, **sampling) for i in range(8)}
    assert together == alone
    assert len(set(alone.values())) > 1, "the prompts should lead to different outputs"


@pytest.mark.slow
def test_eight_concurrent_streams_on_the_default_model(tokenizer):
    with model.load("default", quant=None) as engine:
        together = run_threads(lambda i: "".join(engine.stream(PROMPTS[i], max_new_tokens=16)), 8)
        engine.clear_prefix_cache()
        assert together == {i: engine.generate(PROMPTS[i], max_new_tokens=16) for i in range(8)}


def test_a_stopped_row_leaves_the_batch_at_once(engine):
    params = SamplingParams(max_new_tokens=20, stop_token_ids=())
    solo = engine.generate_batch([PROMPTS[0]], params)[0]
    stop_id = solo.token_ids[2]
    early, late = engine.generate_batch(
        [PROMPTS[0], PROMPTS[1]], [SamplingParams(max_new_tokens=20, stop_token_ids=(stop_id,)), params]
    )
    # (the stop id may occur before position 2; either way the row ends where it first appears)
    first = solo.token_ids.index(stop_id)
    assert early.finish_reason == "stop" and early.token_ids == solo.token_ids[:first]
    assert late.finish_reason == "length" and late.generated_tokens == 20
    requests = [
        engine.submit(PROMPTS[0], max_new_tokens=20, stop_token_ids=(stop_id,)),
        engine.submit(PROMPTS[1], params),
    ]
    early_request, late_request = requests
    for r in requests:
        r.result()
    # one prefill step, then one step per fed token: the stopped row fed only the tokens before its stop
    assert early_request.forward_steps == 1 + first
    assert late_request.forward_steps == 20


def test_stop_string_text_and_token_ids_agree(engine, tokenizer):
    full = engine.submit(PROMPTS[2], max_new_tokens=30, stop_token_ids=()).result()
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cut = engine.submit(PROMPTS[2], max_new_tokens=30, stop_token_ids=(), stop=[stop]).result()
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert cut.text == full.text[: full.text.index(stop)]
    assert tokenizer.decode(cut.token_ids) == cut.text


def test_cancel_mid_stream_frees_its_blocks_and_spares_the_others(engine):
    baseline = engine.cache_stats().bytes_used
    other = engine.submit(PROMPTS[3], max_new_tokens=40, stop_token_ids=())
    victim = engine.submit(PROMPTS[4], max_new_tokens=4000, stop_token_ids=())
    deltas = victim.stream()
    for _ in range(3):
        next(deltas)
    victim.cancel()
    done = victim.result(timeout=30)
    assert done.finish_reason == "cancelled" and 3 <= done.generated_tokens < 4000
    finished = other.result(timeout=60)
    assert finished.finish_reason == "length" and finished.generated_tokens == 40
    assert finished.text == engine.generate(PROMPTS[3], max_new_tokens=40, stop_token_ids=())
    stats = engine.cache_stats()
    assert stats.bytes_used - baseline <= stats.cached_blocks * engine.cache.bytes_per_block
    assert engine.cache.blocks_in_use == engine._scheduler.radix.cached_blocks, "only the prefix cache holds blocks"


def test_a_dropped_stream_cancels_its_request(engine):
    request = engine.submit(PROMPTS[5], max_new_tokens=4000, stop_token_ids=())
    deltas = request.stream()
    next(deltas)
    del deltas
    gc.collect()
    assert request.result(timeout=30).finish_reason == "cancelled"


def test_cancel_before_the_first_step(engine):
    request = engine.submit(PROMPTS[0], max_new_tokens=10)
    request.cancel()
    done = request.result(timeout=30)
    assert done.finish_reason == "cancelled" and done.generated_tokens <= 1


def test_a_repeated_long_prefix_is_served_from_cache(engine, tokenizer):
    system = " ".join(f"Rule {i}: be kind to number {i * 7}." for i in range(90))
    prefix = tokenizer.encode(system)
    assert len(prefix) >= 1000
    params = SamplingParams(max_new_tokens=6, stop_token_ids=(), logprobs=3)
    first = engine.submit(prefix + tokenizer.encode(" Question one?"), params).result()
    second = engine.submit(prefix + tokenizer.encode(" Question two?"), params).result()
    full_blocks = len(prefix) // engine.cache.block_size * engine.cache.block_size
    assert first.cached_tokens == 0 and second.cached_tokens >= full_blocks
    engine.clear_prefix_cache()
    uncached = engine.submit(prefix + tokenizer.encode(" Question two?"), params).result()
    assert uncached.cached_tokens == 0 and uncached.token_ids == second.token_ids
    for cached_step, fresh_step in zip(second.logprobs, uncached.logprobs):
        torch.testing.assert_close(
            torch.tensor([lp for _, lp in cached_step.top]),
            torch.tensor([lp for _, lp in fresh_step.top]),
            atol=1e-4,
            rtol=0,
        )
    stats = engine.cache_stats()
    assert stats.hit_tokens >= full_blocks and stats.miss_tokens > 0


def test_requests_submitted_together_compute_a_shared_prefix_once(engine, tokenizer):
    prefix = tokenizer.encode(" ".join(f"Fact {i} is about {i * 3}." for i in range(40)))
    requests = [engine.submit(prefix + tokenizer.encode(f" Ask {i}."), max_new_tokens=4) for i in range(4)]
    done = [r.result(timeout=60) for r in requests]
    full = len(prefix) // engine.cache.block_size * engine.cache.block_size
    assert sorted(c.cached_tokens >= full for c in done) == [False, True, True, True]


def test_eviction_is_lru_and_never_touches_running_requests(transformer, tokenizer):
    # Room for 12 blocks of 16 tokens: three 64-token prompts fill it once they are cached.
    per_block = transformer.new_cache(max_seq_len=4096, capacity_bytes=1 << 30).bytes_per_block
    engine = Engine(transformer, tokenizer, kv_cache_mb=12 * per_block / (1 << 20), context_length=180)
    assert engine.cache.max_blocks == 12
    try:
        prompts = [[1000 + 100 * p + i for i in range(64)] for p in range(3)]
        for prompt in prompts:  # cached in order 0, 1, 2
            engine.generate(prompt, max_new_tokens=1, stop_token_ids=())
        engine.generate(prompts[0], max_new_tokens=1, stop_token_ids=())  # touch 0: 1 is now least recent
        engine.generate([7] * 40, max_new_tokens=1, stop_token_ids=())  # needs room: evicts from prompt 1
        hits = {p: engine.submit(prompts[p], max_new_tokens=1).result().cached_tokens for p in (0, 2)}
        assert hits == {0: 48, 2: 48}, "the recently used prefixes survive"
        assert engine.submit(prompts[1], max_new_tokens=1).result().cached_tokens < 48
        # A running request's blocks are never evicted: a long generation runs while others churn the cache.
        long = engine.submit([5] * 20, max_new_tokens=100, stop_token_ids=())
        for p in range(3):
            engine.generate([2000 + 50 * p + i for i in range(60)], max_new_tokens=2, stop_token_ids=())
        done = long.result(timeout=120)
        assert done.finish_reason == "length" and done.generated_tokens == 100
        assert done.token_ids == engine.submit([5] * 20, max_new_tokens=100, stop_token_ids=()).result().token_ids
        assert engine.cache_stats().evicted_blocks > 0
        assert engine.cache.n_blocks <= 12
    finally:
        engine.close()


def test_a_raising_processor_fails_only_its_own_request(engine):
    def explode(generated_ids, logits):
        if len(generated_ids) == 2:
            raise RuntimeError("processor blew up")
        return logits

    bad = engine.submit(PROMPTS[6], max_new_tokens=10, logits_processor=explode)
    good = engine.submit(PROMPTS[7], max_new_tokens=10)
    failed = bad.result(timeout=30)
    assert failed.finish_reason == "error" and "processor blew up" in failed.error
    assert failed.generated_tokens == 2
    assert good.result(timeout=30).text == engine.generate(PROMPTS[7], max_new_tokens=10)
    with pytest.raises(model.GenerationError, match="blew up"):
        "".join(engine.submit(PROMPTS[6], max_new_tokens=10, logits_processor=explode).stream())


def test_a_processor_that_allows_nothing_ends_its_request_with_an_error(engine):
    done = engine.submit(
        PROMPTS[0], max_new_tokens=5, logits_processor=lambda ids, logits: logits.fill_(float("-inf"))
    ).result()
    assert done.finish_reason == "error" and "allowed no token" in done.error and done.token_ids == []


def test_a_failing_forward_step_is_rolled_back_and_the_loop_keeps_serving(engine, monkeypatch):
    expected = engine.generate(PROMPTS[1], max_new_tokens=8)
    engine.clear_prefix_cache()
    calls = {"n": 0}
    real_forward = type(engine.model).forward

    def flaky_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("simulated out-of-memory")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(engine.model), "forward", flaky_forward)
    failed = engine.submit(PROMPTS[1], max_new_tokens=8).result(timeout=30)
    assert failed.finish_reason == "error" and "simulated out-of-memory" in failed.error
    assert engine.cache.blocks_in_use == engine._scheduler.radix.cached_blocks, "the failed request's blocks are back"
    assert engine.generate(PROMPTS[1], max_new_tokens=8) == expected


def test_an_overlong_prompt_is_refused_at_submit(engine, transformer, tokenizer):
    small = Engine(transformer, tokenizer, context_length=64)
    with pytest.raises(ValueError, match="context length is 64"):
        small.submit(list(range(64)))
    with pytest.raises(ValueError, match="empty prompt"):
        small.submit([])
    small.close()


def test_chunked_prefill_keeps_running_streams_flowing(transformer, tokenizer):
    with Engine(transformer, tokenizer, scheduler=SchedulerConfig(prefill_chunk=64, max_step_tokens=80)) as engine:
        streaming = engine.submit(PROMPTS[0], max_new_tokens=60, stop_token_ids=())
        while streaming.first_token_at is None:
            threading.Event().wait(0.001)
        long = engine.submit(list(range(100, 740)), max_new_tokens=2, stop_token_ids=())
        long.result(timeout=60)
        assert long.forward_steps >= 640 // 64, "the long prompt is fed in chunks"
        done = streaming.result(timeout=60)
        assert done.generated_tokens == 60
        assert done.text == engine.generate(PROMPTS[0], max_new_tokens=60, stop_token_ids=())


def test_close_ends_requests_in_flight(transformer, tokenizer):
    engine = Engine(transformer, tokenizer)
    running = engine.submit(PROMPTS[0], max_new_tokens=4000, stop_token_ids=())
    queued = [engine.submit(p, max_new_tokens=4000, stop_token_ids=()) for p in PROMPTS]
    next(running.stream())
    engine.close()
    assert {r.result(timeout=10).finish_reason for r in [running, *queued]} == {"cancelled"}
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(PROMPTS[0])


def test_the_prefix_cache_can_be_turned_off(transformer, tokenizer):
    with Engine(transformer, tokenizer, scheduler=SchedulerConfig(prefix_cache=False)) as engine:
        prompt = list(range(200, 300))
        first, second = (engine.submit(prompt, max_new_tokens=3).result() for _ in range(2))
        assert first.cached_tokens == second.cached_tokens == 0 and first.token_ids == second.token_ids
        assert engine.cache.blocks_in_use == 0


def test_running_requests_that_outgrow_the_pool_are_preempted_and_resumed(transformer, tokenizer):
    per_block = transformer.new_cache(max_seq_len=4096, capacity_bytes=1 << 30).bytes_per_block
    prompts = [[3000 + 100 * p + i for i in range(40)] for p in range(3)]
    params = SamplingParams(max_new_tokens=60, stop_token_ids=())
    with Engine(transformer, tokenizer) as roomy:
        expected = [c.token_ids for c in roomy.generate_batch(prompts, params)]
    # 12 blocks = 192 tokens; the three requests need 3 x 100 = 300 once they are done.
    with Engine(transformer, tokenizer, kv_cache_mb=12 * per_block / (1 << 20), context_length=150) as tight:
        done = tight.generate_batch(prompts, params)
        assert [c.token_ids for c in done] == expected
        assert all(c.finish_reason == "length" for c in done)
        assert tight.cache_stats().preemptions > 0
        assert tight.cache.n_blocks <= 12
