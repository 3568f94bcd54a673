"""Logits parity with transformers' Llama / Qwen2 on tiny random checkpoints: full, ragged, cached, forked."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from model import build_transformer
from model.engine import Engine
from model.hf_checkpoint import load_hf_checkpoint
from model.sampler import SamplingParams

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


class _IdTokenizer:
    """Token-level tests need no text; the engine only asks for end-of-sequence ids."""

    eos_token_ids = ()


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
    return reference, Engine(build_transformer(ours_config, tensors), _IdTokenizer())


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
    prompts = [random_ids(n, seed) for seed, n in enumerate([23, 5, 1, 17])]
    seqs, logits = engine.prefill(prompts)
    engine.release(seqs)
    for prompt, row in zip(prompts, logits):
        torch.testing.assert_close(row, reference_logits(reference, prompt)[-1], atol=TOLERANCE, rtol=0)


def test_cached_incremental_decode_equals_recomputation(pair):
    reference, engine = pair
    prompts = [random_ids(9, 7), random_ids(30, 8)]
    seqs, _ = engine.prefill(prompts)
    tails = [random_ids(12, 9), random_ids(12, 10)]
    for step in range(12):
        # ragged steps: the second sequence sometimes takes two tokens at once
        chunks = [[tails[0][step]], tails[1][step : step + 1]]
        logits = engine.extend(seqs, chunks)
        for row, (prompt, tail) in enumerate(zip(prompts, tails)):
            expected = reference_logits(reference, prompt + tail[: step + 1])[-1]
            torch.testing.assert_close(logits[row], expected, atol=TOLERANCE, rtol=0)
    engine.release(seqs)


def test_forked_sequences_equal_independent_ones(pair):
    reference, engine = pair
    prefix = random_ids(21, 11)  # 21 tokens: the last block is partly filled and shared after the fork
    (parent,), _ = engine.prefill([prefix])
    blocks_before = engine.cache.blocks_in_use
    children = engine.fork(parent, 3)
    assert engine.cache.blocks_in_use == blocks_before, "forking must share blocks, not copy them"
    continuations = [random_ids(3, 12), random_ids(1, 13), random_ids(6, 14)]
    logits = engine.extend(children, continuations)
    for row, tail in zip(logits, continuations):
        torch.testing.assert_close(row, reference_logits(reference, prefix + tail)[-1], atol=TOLERANCE, rtol=0)
    # The parent's cache is untouched by its children's writes (copy-on-write).
    parent_logits = engine.extend([parent], [[5]])
    torch.testing.assert_close(parent_logits[0], reference_logits(reference, prefix + [5])[-1], atol=TOLERANCE, rtol=0)
    engine.release([parent, *children])


def test_greedy_generation_matches_reference_generate(pair):
    reference, engine = pair
    prompt = random_ids(11, 15)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
    seqs, logits = engine.prefill([prompt])
    history = [list(prompt)]
    steps = list(engine.decode(seqs, logits, history, SamplingParams(max_new_tokens=20, stop_token_ids=())))
    engine.release(seqs)
    assert [step[0][1] for step in steps] == expected
