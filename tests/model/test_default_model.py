"""End-to-end on the real default model (SmolLM2-135M GGUF): greedy parity with transformers, int8 quality,
streaming, stop strings, batching, chat, the CLI, and errors a user can hit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model
from model.serving.sampler import SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Q: A farmer has 12 cows and buys 5 more. How many cows does he have?\nA:",
]
GSM8K = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gsm8k" / "train.jsonl"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("default-model-cache")


@pytest.fixture(scope="module")
def engine(cache_dir) -> model.Engine:
    return model.load("default", quant=None, threads=2, cache_dir=cache_dir)


@pytest.fixture(scope="module", params=["int8", "int4"])
def quantized_engine(request, cache_dir) -> model.Engine:
    """Loaded twice: the second load memory-maps the repacked cache entry, the path users hit every day."""
    model.load("default", quant=request.param, threads=2, cache_dir=cache_dir)
    return model.load("default", quant=request.param, threads=2, cache_dir=cache_dir)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_64_tokens_match_transformers(engine, reference_hf_model, prompt):
    ids = engine.tokenizer.encode(prompt)
    with torch.no_grad():
        expected = reference_hf_model.generate(
            torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids) :].tolist()
    ours = engine.generate_batch([ids], SamplingParams(max_new_tokens=64, stop_token_ids=()))[0]
    assert ours.token_ids == expected
    assert ours.text == engine.tokenizer.decode(expected)


def test_cli_generate_prints_the_transformers_continuation(engine, reference_hf_model, cache_dir):
    ids = engine.tokenizer.encode(PROMPTS[0])
    with torch.no_grad():
        expected_ids = reference_hf_model.generate(
            torch.tensor([ids]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=list(engine.tokenizer.eos_token_ids),
            pad_token_id=0,
        )[0, len(ids) :].tolist()
    expected = engine.tokenizer.decode([t for t in expected_ids if t not in engine.tokenizer.eos_token_ids])
    env = dict(os.environ, R1_CACHE_DIR=str(cache_dir))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ui.cli",
            "generate",
            "--prompt",
            PROMPTS[0],
            "--max-new-tokens",
            "24",
            "--quant",
            "fp32",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    assert out.stdout == expected + "\n"


def test_default_precision_is_the_files_own_int4(cache_dir):
    """The default GGUF is Q4_1 with a Q8_0 embedding: "auto" runs int4 layers and an int8 LM head."""
    engine = model.load("default", threads=2, cache_dir=cache_dir)
    assert engine.model.layers[0].attention.wqkv.weight.dtype == torch.uint8  # packed int4
    assert engine.model.output.weight.dtype == torch.int8


def _perplexity(engine: model.Engine, ids: list[int]) -> float:
    logits = engine.logits(ids)[:-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return math.exp(nll.item())


@pytest.fixture(scope="module")
def gsm8k_ids(engine) -> list[int]:
    """2,048 tokens of GSM8K questions and answers."""
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} not found (../shared/datasets is provided in CI)")
    text = ""
    with GSM8K.open() as f:
        for line in f:
            row = json.loads(line)
            text += f"Question: {row['question']}\nAnswer: {row['answer']}\n\n"
            if len(text) > 9000:
                break
    ids = engine.tokenizer.encode(text)[:2048]
    assert len(ids) == 2048
    return ids


@pytest.fixture(scope="module")
def fp32_perplexity(engine, gsm8k_ids) -> float:
    """Computed once for both quantizations."""
    return _perplexity(engine, gsm8k_ids)


def test_quantized_perplexity_within_2_percent_of_fp32(fp32_perplexity, quantized_engine, gsm8k_ids):
    fp32, quantized = fp32_perplexity, _perplexity(quantized_engine, gsm8k_ids)
    print(
        f"perplexity on 2048 GSM8K tokens: fp32 {fp32:.3f}, quantized {quantized:.3f} ({(quantized / fp32 - 1) * 100:+.2f}%)"
    )
    assert fp32 < 20, "fp32 perplexity itself is implausible: the model is broken"
    assert abs(quantized / fp32 - 1) <= 0.02


def test_stream_concatenates_to_generate(engine):
    prompt = "List three colours:"
    pieces = list(engine.stream(prompt, max_new_tokens=40))
    assert len(pieces) > 3
    assert "".join(pieces) == engine.generate(prompt, max_new_tokens=40)


def test_stop_string_cuts_before_it(engine):
    full = engine.generate(PROMPTS[1], max_new_tokens=48)
    stop = full.strip().split()[3]
    cut = engine.generate(PROMPTS[1], max_new_tokens=48, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert "".join(engine.stream(PROMPTS[1], max_new_tokens=48, stop=[stop])) == cut


def test_batched_generation_equals_one_at_a_time(engine):
    params = SamplingParams(max_new_tokens=24)
    batched = [c.text for c in engine.generate_batch(PROMPTS, params)]
    alone = [engine.generate_batch([p], params)[0].text for p in PROMPTS]
    assert batched == alone


def test_seeded_sampling_is_reproducible(engine):
    kwargs = dict(max_new_tokens=20, temperature=0.9, top_p=0.95, seed=7)
    assert engine.generate(PROMPTS[0], **kwargs) == engine.generate(PROMPTS[0], **kwargs)


def test_chat_answers_with_the_models_template(engine):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    reply = engine.chat(messages, max_new_tokens=16)
    assert "Paris" in reply
    assert "".join(engine.chat(messages, stream=True, max_new_tokens=16)) == reply


def test_prompt_longer_than_context_is_refused_clearly(engine):
    small = model.Engine(engine.model, engine.tokenizer, context_length=64)
    with pytest.raises(ValueError, match="context length is 64"):
        small.submit([1] * 64, max_new_tokens=4)
    assert small.cache.blocks_in_use == 0, "a refused prompt must not take cache blocks"


def test_generation_stops_at_the_end_of_the_context(engine):
    small = model.Engine(engine.model, engine.tokenizer, context_length=64)
    done = small.generate_batch([[1] * 61], SamplingParams(max_new_tokens=10, stop_token_ids=()))[0]
    assert done.generated_tokens == 4 and done.finish_reason == "length"
    assert small.cache_stats().bytes_used == small.cache_stats().cached_blocks * small.cache.bytes_per_block, (
        "only the prefix cache holds blocks once the request is done"
    )
