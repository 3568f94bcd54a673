"""The native decode step (model/serving/compiled_step.py): parity with transformers and with the eager model, the
background build, and the eager fallback without a C++ compiler.

Building the library costs ~15 s of CPU (40 s wall on a loaded 2-core machine), so it is built once per session (the `library` fixture) and
these are the only tests that run it; the rest of the suite sets R1_COMPILED_STEP=0.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import model
from model import build_transformer
from model.engine import Engine
from model.layers.linear import INT4_GROUP_SIZE, Linear, dequantize_int8, quantize_int4
from model.layers.transformer import Transformer
from model.loading.hf_checkpoint import load_hf_checkpoint
from model.quantize.gptq import QuantSpec
from model.serving import compiled_step
from model.serving.compiled_step import CompiledDecode, NativeLibrary, find_compiler
from model.serving.drafts import NO_DRAFTS
from model.serving.native_layout import int4_codes, tiled_int4
from model.serving.sampler import SamplingParams
from model.serving.scheduler import SchedulerConfig, forward_step
from tests.model.loading.test_gptq import quantized
from tests.model.test_default_model import GSM8K, PROMPTS
from tests.model.test_engine_parity import random_ids, reference_logits
from tests.model.tiny import TINY, save_word_tokenizer, tiny_model

TOLERANCE = 1e-4  # fp32 logits: the native step sums in another order than transformers


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


VARIANTS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**TINY, tie_word_embeddings=True)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=False)),  # q/k/v biases
}


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> NativeLibrary:
    """The process's native library, built once into a session directory."""
    if find_compiler() is None:
        pytest.skip("no C++ compiler: the eager fallback is tested below")
    lib = compiled_step.native_library()
    lib.start(tmp_path_factory.mktemp("native"))
    assert lib.wait(timeout=900), f"native build failed: {lib.error}"
    return lib


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request, tmp_path_factory):
    """(reference HF model, our config, checkpoint tensors) holding the same random weights."""
    model_cls, config = VARIANTS[request.param]
    torch.manual_seed(0)
    reference = model_cls(config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.1 if p.ndim > 1 else 0.5)
    directory = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(directory)
    ours_config, tensors = load_hf_checkpoint(directory)
    return reference, ours_config, tensors


def decode(
    model, compiled: CompiledDecode | None, prompts: list[list[int]], tails: list[list[int]] | int
) -> list[torch.Tensor]:
    """Prefill `prompts` eagerly, then feed one token of each tail per step (`tails` a number of steps: each
    sequence's greedy choice, the argmax of its last logits); the logits of every step."""
    cache = model.new_cache(max_seq_len=256, capacity_bytes=1 << 22)
    seqs = [cache.new_sequence() for _ in prompts]
    logits = forward_step(model, cache, seqs, prompts)
    steps = []
    if compiled is not None:
        assert compiled.wait(timeout=60), compiled.reason
    for step in range(tails if isinstance(tails, int) else len(tails[0])):
        if compiled is not None:
            layout_probe = cache.append(seqs, [1] * len(seqs))
            cache.rollback(layout_probe)
            assert compiled.usable(layout_probe, all_logits=False), compiled.reason
        fed = logits.argmax(-1)[:, None].tolist() if isinstance(tails, int) else [[tail[step]] for tail in tails]
        logits = forward_step(model, cache, seqs, fed, compiled=compiled)
        steps.append(logits)
    return steps


def test_native_decode_matches_transformers_in_fp32(library, checkpoint, tmp_path):
    reference, config, tensors = checkpoint
    model = build_transformer(config, tensors)
    compiled = CompiledDecode(model, model.new_cache(max_seq_len=256, capacity_bytes=1 << 20), tmp_path, library)
    # Ragged: three sequences at different lengths, one of them crossing a 16-token block boundary.
    prompts = [random_ids(n, seed) for seed, n in enumerate([9, 30, 15])]
    tails = [random_ids(6, 20 + seed) for seed in range(3)]
    for step, logits in enumerate(decode(model, compiled, prompts, tails)):
        for row, (prompt, tail) in enumerate(zip(prompts, tails)):
            expected = reference_logits(reference, prompt + tail[: step + 1])[-1]
            torch.testing.assert_close(logits[row], expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_native_decode_on_aten_kernels_matches_eager_on_quantized_weights(library, checkpoint, tmp_path, quant):
    _, config, tensors = checkpoint
    model = build_transformer(config, tensors, quant)
    cache = model.new_cache(max_seq_len=256, capacity_bytes=1 << 20)
    compiled = CompiledDecode(model, cache, tmp_path, library, int8_kernels=False)
    prompts = [random_ids(n, seed) for seed, n in enumerate([12, 4])]
    tails = [random_ids(5, 30 + seed) for seed in range(2)]
    eager = decode(model, None, prompts, tails)
    native = decode(model, compiled, prompts, tails)
    assert not compiled.uses_int8_kernels
    for e, n in zip(eager, native):
        # Same kernels and casts; only summation order differs, which can flip a bf16 rounding (the quantized
        # LM head returns bf16 logits: one unit in the last place is 2^-8 of the value).
        torch.testing.assert_close(n, e, atol=1e-2, rtol=1e-2)
        chosen = n.argmax(-1, keepdim=True)
        assert (e.gather(-1, chosen) >= e.max(-1, keepdim=True).values - 1e-2).all()


# ----- the int8-activation kernels (native/int8_kernels.h) ----------------------------------------------


@pytest.fixture(scope="module")
def kernels(library):
    if not torch.ops.r1_native.int8_kernels_built():
        pytest.skip("this CPU has no AVX512-VNNI: the native step keeps ATen's kernels (tested above)")
    return torch.ops.r1_native.linear_int8


def int8_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' activations: per 32-block q = round(x / d), d = max|x| / 127 -> (q * d, each block's exact sum)."""
    blocks = x.double().view(x.shape[0], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    q = torch.where(d > 0, torch.round(blocks / torch.where(d > 0, d, 1)), 0).clamp(-127, 127)
    return (q * d).view_as(x), blocks.sum(-1)


def kernel_reference(x: torch.Tensor, linear: Linear) -> torch.Tensor:
    """What the kernels compute, in float64: int8 activations against the weight's exact codes and scales; an int4
    weight's zero term meets the block's exact sum of x (as llama.cpp's Q8_1 sum)."""
    x_hat, sums = int8_activations(x)
    if linear.weight.dtype == torch.int8:
        y = x_hat @ dequantize_int8(linear.weight, linear.scales).double().t()
    else:
        n, k = linear.out_features, linear.in_features
        codes = int4_codes(linear.weight, n, k).double().view(n, -1, 32)
        sz = linear.scales.double().transpose(0, 1)  # [N, K / group, 2]
        sz = sz.repeat_interleave(k // 32 // sz.shape[1], dim=1)  # [N, G, 2]: each 32-wide block's pair
        scale, offset = sz[..., 0], sz[..., 1] - 8 * sz[..., 0]
        y = torch.einsum("mgk,ngk,ng->mn", x_hat.view(x.shape[0], -1, 32), codes, scale) + sums @ offset.t()
    return y if linear.bias is None else y + linear.bias.double()


def quantized_linear(n: int, k: int, quant: str, bias: bool, seed: int, group_size: int = INT4_GROUP_SIZE) -> Linear:
    """A random linear quantized to `quant`; int4 in groups of `group_size` columns (wider: as GPTQ/AWQ load)."""
    torch.manual_seed(seed)
    linear = Linear(k, n, bias=bias)
    linear.weight.data = torch.randn(n, k) * 0.2
    if bias:
        linear.bias.data = torch.randn(n)
    if group_size == INT4_GROUP_SIZE:
        linear.quantize_(quant)
    else:
        codes, linear.scales = quantize_int4(linear.weight.data, group_size)
        linear.weight = torch.nn.Parameter(torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1), False)
    return linear


def run_kernel(kernels, linear: Linear, x: torch.Tensor) -> torch.Tensor:
    packed = tiled_int4(linear.weight, linear.scales) if linear.weight.dtype == torch.uint8 else torch.empty(0)
    bias = torch.empty(0) if linear.bias is None else linear.bias.data
    return kernels(x, linear.weight, linear.scales, bias, packed)


# n: rows in sixteens, not sixty-fours (one int4 tile); k: one block, an odd count of blocks (the int8 kernel's
# 32-wide tail), several 64-wide chunks; m: every count of rows up to one past a register pass (8).
@pytest.mark.parametrize("quant", ["int4", "int8"])
@pytest.mark.parametrize("n, k", [(16, 32), (48, 96), (80, 256)])
def test_kernels_compute_int8_activations_against_the_weights_codes(kernels, quant, n, k):
    for m in range(1, 10):
        linear = quantized_linear(n, k, quant, bias=m % 2 == 0, seed=m)
        x = torch.randn(m, k) * torch.rand(m, k) * 4  # uneven magnitudes, so blocks get different scales
        x[0, :32] = 0  # an all-zero block (scale 0)
        expected = kernel_reference(x, linear)
        got = run_kernel(kernels, linear, x)
        torch.testing.assert_close(got.double(), expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-5)


# GPTQ/AWQ checkpoints keep their groups of 64 to 256 columns (model/loading/gptq.py): one (scale, zero) pair spans
# several of the kernels' 32-wide blocks.
@pytest.mark.parametrize("n, k, group_size", [(16, 128, 64), (48, 384, 128), (32, 512, 256)])
def test_int4_kernel_reads_scale_groups_wider_than_its_blocks(kernels, n, k, group_size):
    for m in (1, 3, 9):
        linear = quantized_linear(n, k, "int4", bias=m == 3, seed=m, group_size=group_size)
        assert linear.scales.shape == (k // group_size, n, 2)
        x = torch.randn(m, k) * torch.rand(m, k) * 4
        expected = kernel_reference(x, linear)
        got = run_kernel(kernels, linear, x)
        torch.testing.assert_close(got.double(), expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-5)


def test_kernels_rows_do_not_depend_on_the_batch(kernels):
    """Each row's result is the same alone or in a batch of 9 (no cross-row reduction, fixed summation order)."""
    for quant in ("int4", "int8"):
        linear = quantized_linear(48, 96, quant, bias=True, seed=3)
        x = torch.randn(9, 96)
        batched = run_kernel(kernels, linear, x)
        for row in range(9):
            assert torch.equal(run_kernel(kernels, linear, x[row : row + 1])[0], batched[row])


@pytest.mark.parametrize("n", [49, 50, 51])
def test_int8_kernel_rows_left_over_from_its_row_groups(kernels, n):
    """The int8 kernel takes four or two weight rows at a time (by batch rows) and single rows for what is left of a
    work item's four: with 1-3 rows left over, each result still equals the row's alone, and the reference."""
    linear = quantized_linear(n, 96, "int8", bias=n % 2 == 1, seed=n)
    x = torch.randn(8, 96) * torch.rand(8, 96) * 4
    alone = torch.cat([run_kernel(kernels, linear, x[row : row + 1]) for row in range(8)])
    expected = kernel_reference(x, linear)
    torch.testing.assert_close(alone.double(), expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-5)
    for m in (2, 3, 5, 8):
        assert torch.equal(run_kernel(kernels, linear, x[:m]), alone[:m])


def test_kernels_refuse_weights_they_do_not_take(kernels):
    linear = quantized_linear(16, 48, "int8", bias=False, seed=0)  # 48 is not a multiple of 32
    with pytest.raises(RuntimeError, match="do not take"):
        run_kernel(kernels, linear, torch.randn(1, 48))


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_native_decode_on_int8_kernels_tracks_eager_on_quantized_weights(kernels, checkpoint, tmp_path, quant):
    _, config, tensors = checkpoint
    model = build_transformer(config, tensors, quant)
    compiled = CompiledDecode(model, model.new_cache(max_seq_len=256, capacity_bytes=1 << 20), tmp_path)
    # Ragged: nine sequences (one register pass of eight and one more), lengths across 16-token block boundaries.
    lengths = [12, 4, 16, 17, 31, 1, 9, 33, 15]
    prompts = [random_ids(n, seed) for seed, n in enumerate(lengths)]
    tails = [random_ids(5, 30 + seed) for seed in range(len(lengths))]
    eager = decode(model, None, prompts, tails)
    native = decode(model, compiled, prompts, tails)
    assert compiled.uses_int8_kernels
    for e, n in zip(eager, native):
        # int8 activations instead of bf16 move these random models' logits by 1-3.4% of their range (int4 weights
        # alone move them 13-35% from fp32's); a wrong kernel, rope or KV row moves them by their whole range.
        assert (n - e).abs().max() <= 0.05 * e.abs().max()
    # Each row alone gives exactly its row of the batch.
    alone = decode(model, compiled, prompts[3:4], tails[3:4])
    for batch_step, alone_step in zip(native, alone):
        assert torch.equal(batch_step[3], alone_step[0])


def test_engine_uses_the_native_step_once_ready(library, checkpoint, tmp_path):
    reference, config, tensors = checkpoint
    engine = Engine(
        build_transformer(config, tensors),
        IdTokenizer(),
        kv_cache_mb=16,
        native_dir=tmp_path,
        scheduler=SchedulerConfig(drafts=NO_DRAFTS),
    )  # one native step per token, to count them
    prompt = random_ids(11, 15)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
    assert engine.compiled.wait(timeout=60)
    done = engine.submit(prompt, SamplingParams(max_new_tokens=12, stop_token_ids=())).result()
    engine.close()
    assert done.token_ids == expected
    assert engine.compiled.steps == 11  # every step after the prefill, which gave the first token


def test_without_a_compiler_decoding_stays_eager_and_says_so_once(checkpoint, tmp_path, monkeypatch, caplog):
    reference, config, tensors = checkpoint
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("CXX", raising=False)
    library = NativeLibrary()  # a fresh one: the process's own may already be loaded
    monkeypatch.setattr(compiled_step, "native_library", lambda: library)
    prompt = random_ids(11, 15)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
    with caplog.at_level(logging.WARNING, logger="model.serving.compiled_step"):
        for _ in range(2):  # two engines, one message
            engine = Engine(
                build_transformer(config, tensors), IdTokenizer(), kv_cache_mb=16, native_dir=tmp_path / "native"
            )
            library.wait(timeout=60)
            assert not library.ready and "no C++ compiler" in library.error
            done = engine.submit(prompt, SamplingParams(max_new_tokens=8, stop_token_ids=())).result()
            engine.close()
            assert done.token_ids == expected
    warnings = [r for r in caplog.records if "native decode step unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].getMessage()
    assert not (tmp_path / "native").exists() or not any((tmp_path / "native").iterdir())


def test_a_failed_build_is_remembered_and_not_retried(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "c++"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fatal error: Python.h: no such file' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    with pytest.raises(compiled_step.NativeBuildError, match="no such file"):
        compiled_step.build_library(tmp_path / "native", str(fake))
    fake.write_text("#!/bin/sh\nexit 99\n")  # would fail differently if it ran again
    with pytest.raises(compiled_step.NativeBuildError, match="(?s)an earlier build failed.*no such file"):
        compiled_step.build_library(tmp_path / "native", str(fake))
    assert not [p for p in (tmp_path / "native").iterdir() if p.suffix in (".so", ".tmp")]


def test_a_build_lands_under_its_key_through_a_temporary_file(tmp_path):
    fake = tmp_path / "bin" / "c++"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor last; do :; done\necho library > "$last"\n')  # writes its -o argument
    fake.chmod(0o755)
    built = compiled_step.build_library(tmp_path / "native", str(fake))
    assert built == compiled_step.library_path(tmp_path / "native", str(fake)) and built.read_text() == "library\n"
    assert [p.name for p in (tmp_path / "native").iterdir()] == [built.name]  # no temporary file left
    assert compiled_step.library_path(tmp_path / "native", "/other/c++") != built  # the key names the compiler


def test_models_the_native_step_does_not_cover_stay_eager(checkpoint, tmp_path):
    _, config, tensors = checkpoint
    model = build_transformer(config, tensors)
    cache = model.new_cache(max_seq_len=256, capacity_bytes=1 << 20)
    model.layers[1].feed_forward = torch.nn.Identity()
    library = NativeLibrary()
    compiled = CompiledDecode(model, cache, tmp_path, library)
    assert "layer 1" in compiled.reason
    assert library._thread is None  # nothing is built for a model it cannot run


def test_config_fields_the_native_step_does_not_know_make_it_decline(checkpoint, monkeypatch):
    _, config, tensors = checkpoint
    model = build_transformer(config, tensors)
    cache = model.new_cache(max_seq_len=256, capacity_bytes=1 << 20)
    assert compiled_step.unsupported_reason(model, cache) is None
    monkeypatch.setattr(
        compiled_step, "KNOWN_CONFIG_FIELDS", compiled_step.KNOWN_CONFIG_FIELDS - {"qkv_bias", "n_layers"}
    )
    reason = compiled_step.unsupported_reason(model, cache)
    assert reason is not None and "n_layers" in reason  # set away from its default (a field still at it would pass)


# ----- act-order GPTQ weights (input_order) -----------------------------------------------------------


# (act-order, group size, tiny_model's overrides): K = 64 and 96 (an odd count of 32-wide groups); K = 128 and 192 in
# groups of 64, which the int4 kernel keeps (one scale pair per two of the int8 kernels' blocks).
GPTQ_VARIANTS = {
    "act-order-g32": (True, 32, {}),
    "in-order-g32": (False, 32, {}),
    "act-order-g64": (True, 64, {"hidden_size": 128, "intermediate_size": 192}),
}


@pytest.fixture(scope="module", params=sorted(GPTQ_VARIANTS))
def gptq_model(request, tmp_path_factory) -> Transformer:
    """A tiny random Llama quantized by our GPTQ into 4-bit groups, with act-order (scattered column groups, so every
    linear gathers its input) or without, loaded onto the int4 kernel."""
    act_order, group_size, overrides = GPTQ_VARIANTS[request.param]
    directory = tmp_path_factory.mktemp("gptq")
    tiny_model("llama", **overrides).save_pretrained(directory / "float")
    save_word_tokenizer(directory / "float")
    spec = QuantSpec(bits=4, group_size=group_size, act_order=act_order)
    gptq_dir = quantized(directory / "float", directory, spec)
    # The suite's thread count, not `load`'s default (torch's is process-wide).
    engine = model.load(gptq_dir, cache_dir=directory / "cache", compiled_step=False, threads=torch.get_num_threads())
    linears = [m for m in engine.model.modules() if isinstance(m, Linear) and m.weight.dtype == torch.uint8]
    assert len(linears) == 4 * TINY["num_hidden_layers"]  # qkv, wo, w13, w2 of every layer on the int4 kernel
    for linear in linears:
        order = linear.input_order
        assert (order is not None and not torch.equal(order, torch.arange(linear.in_features))) == act_order
        assert linear.scales.shape[0] == linear.in_features // group_size
    return engine.model


@pytest.mark.parametrize("int8_kernels", [False, True])
def test_native_decode_runs_act_order_gptq_weights_as_eager_does(library, gptq_model, tmp_path, int8_kernels):
    if int8_kernels and not torch.ops.r1_native.int8_kernels_built():
        pytest.skip("this CPU has no AVX512-VNNI: the native step keeps ATen's kernels")
    compiled = CompiledDecode(
        gptq_model, gptq_model.new_cache(max_seq_len=256, capacity_bytes=1 << 20), tmp_path, library, int8_kernels
    )
    assert compiled.reason is None  # the native step takes the model, act-order or not
    # Ragged: nine sequences (one register pass of eight and one more), lengths across 16-token block boundaries.
    prompts = [random_ids(n, seed) for seed, n in enumerate([12, 4, 16, 17, 31, 1, 9, 33, 15])]
    tails = [random_ids(5, 30 + seed) for seed in range(len(prompts))]
    eager = decode(gptq_model, None, prompts, tails)
    native = decode(gptq_model, compiled, prompts, tails)
    assert compiled.steps == 5 and compiled.uses_int8_kernels == int8_kernels
    for e, n in zip(eager, native):
        if int8_kernels:
            # int8 activations instead of bf16 move the logits by 2-4% of their range, with act-order or without
            # (as test_native_decode_on_int8_kernels_tracks_eager_on_quantized_weights); a missed gather, 30-100%.
            assert (n - e).abs().max() <= 0.05 * e.abs().max()
        else:  # the same kernels and casts as eager: only summation order differs
            torch.testing.assert_close(n, e, atol=1e-2, rtol=1e-2)
    if not int8_kernels:  # (int8 activations flip near-ties of these random models: greedy paths part after a while)
        eager, native = decode(gptq_model, None, prompts, 8), decode(gptq_model, compiled, prompts, 8)
        assert [n.argmax(-1).tolist() for n in native] == [e.argmax(-1).tolist() for e in eager]


def test_an_input_order_outside_the_layers_columns_is_refused(library, checkpoint, tmp_path):
    """The int8 kernels' gather reads the columns an input order names unchecked, so the C++ model checks them."""
    _, config, tensors = checkpoint
    model = build_transformer(config, tensors, "int4")
    model.layers[1].feed_forward.w2.input_order = torch.full((config.ffn_dim,), config.ffn_dim)
    compiled = CompiledDecode(model, model.new_cache(max_seq_len=256, capacity_bytes=1 << 20), tmp_path, library)
    assert not compiled.wait(timeout=60)
    assert "could not be made" in compiled.reason and "outside" in compiled.reason


# ----- the real default model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("native-default-model")


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_default_model_fp32_native_greedy_matches_transformers(library, default_cache, reference_hf_model, prompt):
    engine = model.load(
        "default",
        quant=None,
        threads=2,
        cache_dir=default_cache,
        compiled_step=True,
        prompt_lookup=False,
        jump_forward=False,
    )  # one native step per token, to count them
    assert engine.compiled.library.ready  # the session's library: nothing to build again
    assert engine.compiled.wait(timeout=60)
    ids = engine.tokenizer.encode(prompt)
    with torch.no_grad():
        expected = reference_hf_model.generate(
            torch.tensor([ids]), max_new_tokens=48, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids) :].tolist()
    ours = engine.generate_batch([ids], SamplingParams(max_new_tokens=48, stop_token_ids=()))[0]
    engine.close()
    assert engine.compiled.steps == 47
    assert ours.token_ids == expected


@pytest.mark.slow
def test_default_model_int4_native_decode_loses_nothing_against_eager(library, default_cache):
    """Teacher-forced decode over GSM8K text: the native step's perplexity equals the eager step's, on ATen's
    kernels and on the int8-activation kernels."""
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} not found (../shared/datasets is provided in CI)")
    engine = model.load("default", quant="int4", threads=2, cache_dir=default_cache, compiled_step=False)
    text = "\n".join(json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[:12])
    ids = engine.tokenizer.encode(text)[:160]
    aten = CompiledDecode(engine.model, engine.cache, default_cache, library, int8_kernels=False)
    kernels = CompiledDecode(engine.model, engine.cache, default_cache, library)
    assert aten.wait(timeout=120) and kernels.wait(timeout=120)  # every step below native, the first too

    def perplexity(compiled: CompiledDecode | None) -> float:
        cache = engine.model.new_cache(max_seq_len=512, capacity_bytes=1 << 24)
        seq = cache.new_sequence()
        forward_step(engine.model, cache, [seq], [ids[:32]])
        nll = 0.0
        for position in range(32, len(ids) - 1):
            logits = forward_step(engine.model, cache, [seq], [[ids[position]]], compiled=compiled)
            nll -= float(logits[0].log_softmax(-1)[ids[position + 1]])
        return math.exp(nll / (len(ids) - 33))

    eager, on_aten, on_kernels = perplexity(None), perplexity(aten), perplexity(kernels)
    engine.close()
    print(
        f"int4 decode perplexity on {len(ids) - 33} GSM8K tokens: eager {eager:.4f}, native on ATen {on_aten:.4f} "
        f"({(on_aten / eager - 1) * 100:+.2f}%), native on int8 kernels {on_kernels:.4f} ({(on_kernels / eager - 1) * 100:+.2f}%)"
    )
    assert aten.steps == len(ids) - 33
    # Both steps run bf16 matmuls through ATen, but in different call shapes; on a CPU with AMX / AVX512-BF16 those
    # accumulate in another order: 0.19% apart there (2026-12-07; under 0.1% on the AVX2 machines before). A
    # wrong native step (a missed rope, a stale KV row) is off by whole percents.
    assert abs(on_aten / eager - 1) < 3e-3
    if kernels.uses_int8_kernels:
        assert kernels.steps == len(ids) - 33
        # int8 activations (llama.cpp's Q8_1 scheme) instead of bf16: -0.06% measured (2026-12-07, this AMX CPU).
        assert abs(on_kernels / eager - 1) < 5e-3
