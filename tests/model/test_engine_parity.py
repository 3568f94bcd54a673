"""Logits parity with transformers' Llama / Qwen2 on tiny random checkpoints: full, ragged, cached, forked."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from model import build_transformer
from model.engine import Engine
from model.hf_checkpoint import load_hf_checkpoint
from model.sampler import SamplingParams
from model.scheduler import forward_step

TOLERANCE = 1e-4
VOCAB = 211

TINY = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)

VARIANTS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**TINY, tie_word_embeddings=False)),
    "llama-tied-llama3-rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **TINY,
            tie_word_embeddings=True,
            rope_theta=50000.0,
            rope_scaling=dict(
                rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16
            ),
        ),
    ),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=False)),
}


class IdTokenizer:
    """Token-level tests need no real text: each id decodes to one character of its own."""

    eos_token_ids = ()

    def decode(self, ids, skip_special_tokens=False) -> str:
        return "".join(chr(0x4E00 + i) for i in ids)

    def encode(self, text: str, add_bos=None) -> list[int]:
        return [ord(c) - 0x4E00 for c in text]

    def stream_decoder(self):
        tokenizer = self

        class Decoder:
            def put(self, token_id: int) -> str:
                return tokenizer.decode([token_id])

            def flush(self) -> str:
                return ""

        return Decoder()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    """(reference HF model, our Engine) holding the same random weights, loaded through save_pretrained."""
    model_cls, config = VARIANTS[request.param]
    torch.manual_seed(0)
    reference = model_cls(config).eval()
    with torch.no_grad():  # random everything, biases and norms included, so no term can hide
        for p in reference.parameters():
            p.normal_(0, 0.1 if p.ndim > 1 else 0.5)
    directory = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(directory, max_shard_size="200KB")  # sharded: exercises the index file
    ours_config, tensors = load_hf_checkpoint(directory)
    assert ours_config.arch == config.model_type
    return reference, Engine(build_transformer(ours_config, tensors), IdTokenizer(), kv_cache_mb=16)


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
    torch.testing.assert_close(ours, reference_logits(reference, ids), atol=TOLERANCE, rtol=0)


def test_ragged_batch_prefill_matches_each_prompt_alone(pair):
    reference, engine = pair
    cache = engine.model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    prompts = [random_ids(n, seed) for seed, n in enumerate([23, 5, 1, 17])]
    seqs = [cache.new_sequence() for _ in prompts]
    logits = forward_step(engine.model, cache, seqs, prompts)
    for prompt, row in zip(prompts, logits):
        torch.testing.assert_close(row, reference_logits(reference, prompt)[-1], atol=TOLERANCE, rtol=0)


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
            torch.testing.assert_close(logits[row], expected, atol=TOLERANCE, rtol=0)


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
        torch.testing.assert_close(row, reference_logits(reference, prefix + tail)[-1], atol=TOLERANCE, rtol=0)
    # The parent's cache is untouched by its children's writes (copy-on-write).
    parent_logits = forward_step(engine.model, cache, [parent], [[5]])
    torch.testing.assert_close(parent_logits[0], reference_logits(reference, prefix + [5])[-1], atol=TOLERANCE, rtol=0)


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
        expected = reference(torch.tensor([prefix + [3] + second.token_ids[:-1]])).logits[0, -4:].float().log_softmax(-1)
    ours = torch.tensor([[lp for _, lp in step.top] for step in second.logprobs])
    torch.testing.assert_close(ours, expected.topk(5).values, atol=TOLERANCE, rtol=0)
