"""`model.load` on an HF checkpoint directory, end to end: config, sharded weights, tokenizer and chat
template from the directory, repacking, the weight cache, and text generation equal to transformers'."""

from __future__ import annotations

import pytest
import torch

import model
from tests.model.loading.test_loading import tiny_hf_model

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory, reference_hf_tokenizer):
    """A tiny random Qwen2 (q/k/v biases: the R1-Distill-Qwen layout) with the default model's tokenizer."""
    reference = tiny_hf_model("qwen2", vocab=len(reference_hf_tokenizer), seed=3)
    directory = tmp_path_factory.mktemp("qwen2-hf")
    reference.save_pretrained(directory, max_shard_size="2MB")
    reference_hf_tokenizer.save_pretrained(directory)
    return directory, reference


def test_generate_matches_transformers_greedy(qwen2_dir, reference_hf_tokenizer, tmp_path):
    directory, reference = qwen2_dir
    engine = model.load(directory, threads=1, cache_dir=tmp_path)
    ids = engine.tokenizer.encode(PROMPT)
    assert ids == reference_hf_tokenizer.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids) :].tolist()
    assert engine.generate(PROMPT, max_new_tokens=16, stop_token_ids=()) == engine.tokenizer.decode(expected)


@pytest.mark.parametrize("quant", [None, "int8", "int4"])
def test_second_load_from_cache_generates_the_same(qwen2_dir, tmp_path, quant):
    directory, _ = qwen2_dir
    first = model.load(directory, quant=quant, threads=1, cache_dir=tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors")
    assert entries == [next(e for e in entries if f"engine-{quant or 'fp32'}" in e)]
    second = model.load(directory, quant=quant, threads=1, cache_dir=tmp_path)
    messages = [{"role": "user", "content": "Hi"}]
    assert first.chat(messages, max_new_tokens=12) == second.chat(messages, max_new_tokens=12)
    torch.testing.assert_close(first.logits([1, 2, 3]), second.logits([1, 2, 3]), atol=0, rtol=0)
