"""Per-request adapters: a batch mixing requests with and without an adapter gives each what it gets alone on the
base engine or on an engine with the adapter loaded for everything; the prefix cache never shares K/V across
adapters; the native decode step only runs steps without adapter rows; hidden states for a value head."""

from __future__ import annotations

import pytest
import torch

import model
from model.layers.adapters import AdapterRows
from model.loading.lora import AdapterError, attach_adapter, read_adapter
from model.serving.sampler import SamplingParams
from model.serving.scheduler import forward_step
from tests.model.test_engine_parity import assert_logits_close, random_ids

pytest.importorskip("peft")
from tests.model.loading.test_lora import peft_model

NAME = "reasoning"


def load(directory, cache_dir, **kwargs):
    return model.load(directory, threads=1, cache_dir=cache_dir, kv_cache_mb=16, compiled_step=False, **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(tiny llama directory, a q/v/down adapter for it, a weight cache directory)."""
    base_dir, adapter_dir = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("adapter")
    peft_model("llama", ["q_proj", "v_proj", "down_proj"], base_dir).save_pretrained(adapter_dir)
    return base_dir, adapter_dir, tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", params=[None, "int8"], ids=["fp32", "int8"])
def engines(request, files):
    """(base engine, adapter-for-all engine, engine holding the adapter per request) on one tiny llama."""
    base_dir, adapter_dir, cache_dir = files
    quant = request.param
    loaded = (
        load(base_dir, cache_dir, quant=quant),
        load(base_dir, cache_dir, quant=quant, adapter=adapter_dir),
        load(base_dir, cache_dir, quant=quant, request_adapters={NAME: adapter_dir}),
    )
    yield loaded
    for engine in loaded:
        engine.close()


def test_adapter_rows_group_tokens_by_slot():
    assert AdapterRows.of([None, None], [3, 1]) is None
    assert AdapterRows.of([0, 0], [3, 1]).groups == ((0, None),)  # every row: no gather
    rows = AdapterRows.of([None, 1, 0, 1], [2, 3, 1, 2])
    assert [(slot, idx.tolist()) for slot, idx in rows.groups] == [(0, [5]), (1, [2, 3, 4, 6, 7])]


def test_mixed_ragged_step_matches_the_base_and_the_adapter_engines(engines):
    base, merged, mixed = engines
    assert mixed.adapters == (NAME,) and base.adapters == ()
    prompts = [random_ids(n, seed) for seed, n in enumerate([23, 5, 17, 9, 1])]
    adapters = [None, NAME, NAME, None, NAME]
    cache = mixed.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    seqs = [cache.new_sequence() for _ in prompts]
    logits = forward_step(mixed.model, cache, seqs, prompts, all_logits=True, adapters=adapters)
    start = 0
    for prompt, adapter in zip(prompts, adapters):
        alone = (merged if adapter else base).logits(prompt)
        assert_logits_close(logits[start : start + len(prompt)], alone)
        start += len(prompt)
    ids = prompts[0]
    assert (merged.logits(ids) - base.logits(ids)).abs().max() > 0.05 * base.logits(ids).abs().max(), (
        "the adapter must change the logits, or the comparison shows nothing"
    )
    assert_logits_close(mixed.logits(ids, adapter=NAME), merged.logits(ids))
    assert_logits_close(mixed.logits(ids), base.logits(ids))


def test_mixed_batch_generates_what_each_request_generates_alone(engines):
    base, merged, mixed = engines
    mixed.clear_prefix_cache()
    params = SamplingParams(max_new_tokens=8, temperature=0.0, logprobs=1, stop_token_ids=())
    prompts = [random_ids(n, 10 + i) for i, n in enumerate([20, 7, 33, 12, 3, 20])]
    adapters = [NAME, None, None, NAME, NAME, None]
    requests = [mixed.submit(p, params, adapter=a) for p, a in zip(prompts, adapters)]
    together = [r.result() for r in requests]
    differs = 0
    for prompt, adapter, got in zip(prompts, adapters, together):
        alone = (merged if adapter else base).submit(prompt, params).result()
        assert got.token_ids == alone.token_ids
        for ours, theirs in zip(got.logprobs, alone.logprobs):
            assert abs(ours.logprob - theirs.logprob) <= 1e-4
        other = (base if adapter else merged).submit(prompt, params).result()
        differs += other.token_ids != alone.token_ids
    assert differs, "the adapter must change some generation, or the comparison shows nothing"


def test_prefix_cache_keeps_adapter_and_base_kv_apart(engines):
    base, merged, mixed = engines
    mixed.clear_prefix_cache()
    prompt = random_ids(70, 99)  # four full 16-token blocks
    params = SamplingParams(max_new_tokens=4, temperature=0.0, logprobs=1, stop_token_ids=())
    first_base = mixed.submit(prompt, params).result()
    first_adapter = mixed.submit(prompt, params, adapter=NAME).result()
    assert first_adapter.cached_tokens == 0, "adapter K/V must not come from a base request's blocks"
    again_adapter = mixed.submit(prompt, params, adapter=NAME).result()
    again_base = mixed.submit(prompt, params).result()
    assert again_adapter.cached_tokens == 64 and again_base.cached_tokens == 64
    assert again_adapter.token_ids == merged.submit(prompt, params).result().token_ids == first_adapter.token_ids
    assert again_base.token_ids == base.submit(prompt, params).result().token_ids == first_base.token_ids
    for ours, theirs in zip(again_adapter.logprobs, first_adapter.logprobs):
        assert abs(ours.logprob - theirs.logprob) <= 1e-4


def test_native_decode_step_runs_only_steps_without_adapter_rows(engines):
    _, _, mixed = engines

    class Native:  # stands in for a built CompiledDecode: usable for any decode step
        calls = 0

        def usable(self, layout, all_logits):
            return True

        def __call__(self, tokens, cache, layout):
            Native.calls += 1
            return torch.zeros(len(tokens), mixed.config.vocab_size)

    cache = mixed.model.new_cache(max_seq_len=64, capacity_bytes=1 << 20)
    seqs = [cache.new_sequence(), cache.new_sequence()]
    native = Native()
    logits = forward_step(mixed.model, cache, seqs, [[5], [6]], compiled=native, adapters=[None, NAME])
    assert Native.calls == 0 and logits.abs().sum() > 0
    forward_step(mixed.model, cache, seqs, [[7], [8]], compiled=native, adapters=[None, None])
    assert Native.calls == 1


def test_hidden_states_are_what_the_lm_head_reads_and_reuse_cached_prefixes(engines):
    base, merged, mixed = engines
    prompts = [random_ids(n, 40 + n) for n in (40, 9)]
    for adapter, alone in ((None, base), (NAME, merged)):
        mixed.submit(prompts[0], max_new_tokens=1, adapter=adapter).result()  # caches prompts[0]'s full blocks
        hidden = mixed.hidden_states(prompts, adapter=adapter)
        assert hidden.shape == (2, mixed.config.dim)
        with torch.inference_mode():
            from_head = mixed.model.output(hidden).float()
        for prompt, row in zip(prompts, from_head):
            assert_logits_close(row, alone.logits(prompt)[-1])
    assert not torch.allclose(mixed.hidden_states(prompts), mixed.hidden_states(prompts, adapter=NAME))


def test_unknown_or_duplicate_adapter_names_are_refused(engines, files):
    _, _, mixed = engines
    with pytest.raises(ValueError, match="unknown adapter 'other'; loaded per-request adapters: reasoning"):
        mixed.submit([1, 2, 3], max_new_tokens=1, adapter="other")
    with pytest.raises(ValueError, match="unknown adapter"):
        mixed.hidden_states([[1, 2]], adapter="other")
    with pytest.raises(AdapterError, match="an adapter named 'reasoning' is already loaded"):
        attach_adapter(mixed.model, read_adapter(files[1]), NAME)
    assert mixed.adapters == (NAME,)
