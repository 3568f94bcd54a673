"""Logits parity with transformers on tiny random checkpoints of every family we run, loaded the way users load
them (`save_pretrained`, then `model.load(dir, quant=None)`): full prefill, ragged batches, cached decode, forks.

Logits must agree within 1e-5 of their largest magnitude (fp32). DeepSeek-V3 covers MLA (with and without a
query latent, YaRN, interleaved rope rows) and DeepSeekMoE; Mixtral the softmax top-2 router.
"""

from __future__ import annotations

import pytest
import torch

import model
from model.layers.mla import set_mla_mode
from model.serving.sampler import SamplingParams
from model.serving.scheduler import forward_step
from tests.model.tiny import CONFIGS, VOCAB, save_word_tokenizer, tiny_model

RELATIVE_TOLERANCE = 1e-5


def assert_logits_close(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """Within RELATIVE_TOLERANCE of the reference's largest logit magnitude."""
    assert ours.shape == expected.shape
    error = (ours - expected).abs().max().item()
    assert error <= RELATIVE_TOLERANCE * expected.abs().max().item(), (
        f"max error {error:.3g} of {expected.abs().max():.3g}"
    )


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    """(reference transformers model, our Engine) holding the same random weights, loaded through save_pretrained."""
    reference = tiny_model(request.param)
    directory = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(directory, max_shard_size="200KB")  # sharded: exercises the index file
    save_word_tokenizer(directory)
    engine = model.load(directory, quant=None, threads=1, cache_dir=tmp_path_factory.mktemp("cache"), kv_cache_mb=16)
    assert engine.config.arch == reference.config.model_type
    yield reference, engine
    engine.close()


def reference_logits(reference, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference(torch.tensor([ids])).logits[0].float()


def random_ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_full_sequence_logits_match(pair):
    reference, engine = pair
    ids = random_ids(40, 1)
    ours = engine.logits(ids)
    assert ours.shape == (40, VOCAB) and ours.dtype == torch.float32
    assert_logits_close(ours, reference_logits(reference, ids))


def test_ragged_batch_prefill_matches_each_prompt_alone(pair):
    reference, engine = pair
    cache = engine.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    prompts = [random_ids(n, seed) for seed, n in enumerate([23, 5, 1, 17])]
    seqs = [cache.new_sequence() for _ in prompts]
    logits = forward_step(engine.model, cache, seqs, prompts)
    for prompt, row in zip(prompts, logits):
        assert_logits_close(row, reference_logits(reference, prompt)[-1])


def test_cached_incremental_decode_equals_recomputation(pair):
    reference, engine = pair
    cache = engine.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    prompts = [random_ids(9, 7), random_ids(30, 8)]
    seqs = [cache.new_sequence() for _ in prompts]
    forward_step(engine.model, cache, seqs, prompts)
    tails = [random_ids(12, 9), random_ids(12, 10)]
    for step in range(12):
        # ragged steps: the second sequence sometimes takes two tokens at once
        chunks = [[tails[0][step]], tails[1][step : step + 1]]
        logits = forward_step(engine.model, cache, seqs, chunks)
        for row, (prompt, tail) in enumerate(zip(prompts, tails)):
            expected = reference_logits(reference, prompt + tail[: step + 1])[-1]
            assert_logits_close(logits[row], expected)


def test_forked_sequences_equal_independent_ones(pair):
    reference, engine = pair
    cache = engine.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    prefix = random_ids(21, 11)  # 21 tokens: the last block is partly filled and shared after the fork
    parent = cache.new_sequence()
    forward_step(engine.model, cache, [parent], [prefix])
    blocks_before = cache.blocks_in_use
    children = cache.fork(parent, 3)
    assert cache.blocks_in_use == blocks_before, "forking must share blocks, not copy them"
    continuations = [random_ids(3, 12), random_ids(1, 13), random_ids(6, 14)]
    logits = forward_step(engine.model, cache, children, continuations)
    for row, tail in zip(logits, continuations):
        assert_logits_close(row, reference_logits(reference, prefix + tail)[-1])
    # The parent's cache is untouched by its children's writes (copy-on-write).
    parent_logits = forward_step(engine.model, cache, [parent], [[5]])
    assert_logits_close(parent_logits[0], reference_logits(reference, prefix + [5])[-1])


def test_greedy_generation_matches_reference_generate(pair):
    reference, engine = pair
    prompt = random_ids(11, 15)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
    done = engine.submit(prompt, SamplingParams(max_new_tokens=20, stop_token_ids=())).result()
    assert done.token_ids == expected and done.finish_reason == "length"


def test_prefix_cached_logprobs_equal_uncached_ones(pair):
    reference, engine = pair
    prefix = random_ids(40, 16)  # two and a half blocks
    params = SamplingParams(max_new_tokens=4, stop_token_ids=(), logprobs=5)
    first = engine.submit(prefix + [1, 2], params).result()
    second = engine.submit(prefix + [3], params).result()
    assert first.cached_tokens == 0 and second.cached_tokens == 32
    with torch.no_grad():
        expected = (
            reference(torch.tensor([prefix + [3] + second.token_ids[:-1]])).logits[0, -4:].float().log_softmax(-1)
        )
    ours = torch.tensor([[lp for _, lp in step.top] for step in second.logprobs])
    assert_logits_close(ours, expected.topk(5).values)


@pytest.mark.parametrize("mode", ["absorbed", "naive"])
def test_mla_absorbed_and_expanded_attention_agree_in_prefill_and_decode(pair, mode):
    """Both ways MLA can attend, forced on every step kind (auto picks expanded for prefill, absorbed for decode)."""
    reference, engine = pair
    if engine.config.mla is None:
        pytest.skip("not an MLA model")
    set_mla_mode(engine.model, mode)
    try:
        cache = engine.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
        prompts = [random_ids(19, 21), random_ids(6, 22)]
        seqs = [cache.new_sequence() for _ in prompts]
        logits = forward_step(engine.model, cache, seqs, prompts)  # ragged prefill
        for row, prompt in zip(logits, prompts):
            assert_logits_close(row, reference_logits(reference, prompt)[-1])
        for tokens in [[3, 4], [5, 6], [7, 8]]:  # decode
            logits = forward_step(engine.model, cache, seqs, [[t] for t in tokens])
            for row, prompt in enumerate(prompts):
                prompts[row] = prompt + [tokens[row]]
                assert_logits_close(logits[row], reference_logits(reference, prompts[row])[-1])
    finally:
        set_mla_mode(engine.model, "auto")
