"""GPTQ and AWQ checkpoints: the packing against the formats' definitions (written here independently, with Python
integers), tiny checkpoints quantized by our GPTQ loaded back (parity with a float checkpoint of the hand-unpacked
weights, act-order, group sizes), AWQ's layout, refused variants, and corrupt files."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from model.layers.linear import Linear
from model.loading.gptq import AWQ_ORDER, pack_rows, unpack_rows
from model.loading.tensor_names import ModelLoadError
from model.quantize.checkpoint import Calibration, quantize_checkpoint
from model.quantize.gptq import QuantSpec
from model.serving.compiled_step import unsupported_reason
from tests.model.tiny import save_word_tokenizer, tiny_model

WIDE = {"hidden_size": 256, "intermediate_size": 384}  # K of 256 and 384: 2 and 3 groups of 128
PROMPT = [0, 5, 17, 42, 99, 3, 150, 7, 64, 2, 11]


# ---- the formats, by hand -------------------------------------------------------------------------------------
def words_to_codes_by_hand(words: list[int], bits: int) -> list[int]:
    """The GPTQ definition: a unit of `bits` little-endian int32 words is one bitstream; code j sits at bit bits*j."""
    stream = sum((w & 0xFFFFFFFF) << (32 * i) for i, w in enumerate(words))
    return [(stream >> (bits * j)) & ((1 << bits) - 1) for j in range(32 * len(words) // bits)]


def gptq_unpack_by_hand(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [W, C] packed along rows -> codes [W*32/bits, C], column by column through Python integers."""
    unit = bits if 32 % bits else 1  # words per bitstream unit: 3-bit codes straddle words
    W, C = packed.shape
    columns = []
    for c in range(C):
        column = [int(v) for v in packed[:, c]]
        codes = []
        for u in range(0, W, unit):
            codes += words_to_codes_by_hand(column[u : u + unit], bits)
        columns.append(codes)
    return torch.tensor(columns).t()


def dequantize_gptq_by_hand(tensors: dict[str, torch.Tensor], prefix: str, bits: int) -> torch.Tensor:
    """W [N, K] = (q - (stored zero + 1)) * scale, per the GPTQ ("v1") layout."""
    q = gptq_unpack_by_hand(tensors[prefix + ".qweight"], bits)  # [K, N]
    zeros = gptq_unpack_by_hand(tensors[prefix + ".qzeros"].t().contiguous(), bits).t() + 1  # [G, N]
    scales, g_idx = tensors[prefix + ".scales"].float(), tensors[prefix + ".g_idx"].long()
    return ((q - zeros[g_idx]) * scales[g_idx]).t().float()


def awq_pack_by_hand(codes: torch.Tensor) -> torch.Tensor:
    """codes [R, C] -> AWQ int32 [R, C/8]: nibble i of word c holds column 8c + AWQ_ORDER[i]."""
    R, C = codes.shape
    words = torch.zeros(R, C // 8, dtype=torch.int64)
    for i in range(8):
        words |= codes[:, AWQ_ORDER[i] :: 8].long() << (4 * i)
    return (words - (words >= 2**31).long() * 2**32).to(torch.int32)  # as int32, two's complement


# ---- fixtures -----------------------------------------------------------------------------------------------
def float_checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    tiny_model("llama", seed=seed, **{**WIDE, **overrides}).save_pretrained(directory)
    save_word_tokenizer(directory)
    return directory


def calibration() -> Calibration:
    rng = random.Random(0)
    return Calibration(" ".join(f"t{rng.randrange(2, 211)}" for _ in range(2400)), samples=8, seq_len=128)


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory) -> Path:
    return float_checkpoint(tmp_path_factory.mktemp("float"))


@pytest.fixture(scope="module")
def g64_dir(float_dir, tmp_path_factory) -> Path:
    """A 4-bit g64 GPTQ checkpoint, quantized once; tests that damage it work on copies (`copy_of`)."""
    return quantized(float_dir, tmp_path_factory.mktemp("g64"), QuantSpec(bits=4, group_size=64))


def copy_of(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / directory.name))


def quantized(float_dir: Path, tmp_path: Path, spec: QuantSpec, method: str = "gptq") -> Path:
    out = tmp_path / "gptq"
    quantize_checkpoint(
        float_dir, out, spec, method=method, calibration=calibration(), cache_dir=tmp_path / "cache", progress=False
    )
    return out


def dequantized_float_dir(float_dir: Path, gptq_dir: Path, out: Path, bits: int) -> Path:
    """The float checkpoint whose linears are the hand-unpacked GPTQ weights: the reference."""
    out.mkdir()
    stored = load_file(gptq_dir / "model.safetensors")
    state = {}
    for name in load_file(float_dir / "model.safetensors"):
        prefix = name.removesuffix(".weight")
        state[name] = (
            dequantize_gptq_by_hand(stored, prefix, bits) if prefix + ".qweight" in stored else stored[name].float()
        )
    save_file(state, out / "model.safetensors")
    for f in float_dir.iterdir():
        if f.suffix != ".safetensors":
            (out / f.name).write_bytes(f.read_bytes())
    return out


def engine(source: Path, tmp_path: Path, quant: str = "auto"):
    return model.load(source, quant=quant, cache_dir=tmp_path / "cache", compiled_step=False, threads=1)


def assert_logits_close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    assert (got - want).abs().max().item() <= rel * want.abs().max().item()


# ---- packing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_row_packing_matches_the_format_definition(bits):
    codes = torch.randint(0, 2**bits, (64, 5), generator=torch.Generator().manual_seed(bits))
    packed = pack_rows(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (64 * bits // 32, 5)
    assert torch.equal(gptq_unpack_by_hand(packed, bits), codes)
    assert torch.equal(unpack_rows(packed, bits).long(), codes)


# ---- our GPTQ, loaded back ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "group_size, act_order, sym",
    [(32, False, True), (64, False, True), (128, False, True), (128, True, True), (32, True, True), (64, True, False)],
)
def test_gptq_checkpoint_loads_back_to_its_dequantized_weights(float_dir, tmp_path, group_size, act_order, sym):
    spec = QuantSpec(bits=4, group_size=group_size, act_order=act_order, sym=sym)
    gptq_dir = quantized(float_dir, tmp_path, spec)
    stored = load_file(gptq_dir / "model.safetensors")
    q_proj = "model.layers.0.self_attn.q_proj"
    assert stored[q_proj + ".qweight"].shape == (256 // 8, 256) and stored[q_proj + ".scales"].dtype == torch.float16
    assert stored[q_proj + ".scales"].shape == (256 // group_size, 256)
    g_idx = stored[q_proj + ".g_idx"].long()
    assert torch.equal(torch.bincount(g_idx), torch.full((256 // group_size,), group_size))  # every group full
    assert act_order == (not torch.equal(g_idx, torch.arange(256) // group_size))  # act-order scatters groups
    config = json.loads((gptq_dir / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"], config["desc_act"], config["sym"]) == (
        "gptq",
        4,
        group_size,
        act_order,
        sym,
    )
    assert json.loads((gptq_dir / "quantize_config.json").read_text())["desc_act"] == act_order

    reference = engine(dequantized_float_dir(float_dir, gptq_dir, tmp_path / "reference", 4), tmp_path, "fp32")
    want = reference.logits(PROMPT)
    assert_logits_close(engine(gptq_dir, tmp_path, "fp32").logits(PROMPT), want, 1e-5)  # the format, exactly

    on_kernel = engine(gptq_dir, tmp_path)  # quant="auto": int4, packed groups as stored
    wqkv = on_kernel.model.layers[0].attention.wqkv
    assert wqkv.weight.dtype == torch.uint8 and wqkv.scales.dtype == torch.bfloat16
    assert (wqkv.input_order is not None) == act_order
    # the kernel's weight (read out through an identity input) is the hand-unpacked one, up to bf16 scales
    hand = torch.cat([dequantize_gptq_by_hand(stored, f"model.layers.0.self_attn.{p}_proj", 4) for p in "qkv"])
    kernel_weight = wqkv(torch.eye(256)).t()
    assert (kernel_weight - hand).abs().max() <= 2**-7 * hand.abs().max()
    assert_logits_close(on_kernel.logits(PROMPT), want, 0.03)  # bf16 activations
    # the native decode step takes it, act-order included (its parity: tests/model/serving/test_compiled_step.py)
    assert unsupported_reason(on_kernel.model, on_kernel.cache) is None


def test_three_bit_checkpoints_load_only_dequantized(float_dir, tmp_path):
    gptq_dir = quantized(float_dir, tmp_path, QuantSpec(bits=3, group_size=64))
    stored = load_file(gptq_dir / "model.safetensors")
    assert stored["model.layers.0.mlp.down_proj.qweight"].shape == (384 * 3 // 32, 256)
    with pytest.raises(ModelLoadError, match="3-bit GPTQ weights do not run"):
        engine(gptq_dir, tmp_path)
    reference = engine(dequantized_float_dir(float_dir, gptq_dir, tmp_path / "reference", 3), tmp_path, "fp32")
    assert_logits_close(engine(gptq_dir, tmp_path, "fp32").logits(PROMPT), reference.logits(PROMPT), 1e-5)


# ---- AWQ ----------------------------------------------------------------------------------------------------
def test_awq_gemm_checkpoint_loads(float_dir, tmp_path):
    """An AWQ checkpoint packed by hand (asymmetric zero points, groups of 64) loads as its dequantized weights."""
    gen = torch.Generator().manual_seed(3)
    awq_dir, reference_dir = tmp_path / "awq", tmp_path / "reference"
    awq_dir.mkdir()
    reference_dir.mkdir()
    state = load_file(float_dir / "model.safetensors")
    awq, reference = {}, dict(state)
    for name, weight in state.items():
        if not name.startswith("model.layers.") or weight.dim() != 2:
            awq[name] = weight
            continue
        N, K = weight.shape
        codes = torch.randint(0, 16, (K, N), generator=gen)
        zeros = torch.randint(0, 16, (K // 64, N), generator=gen)
        scales = (torch.rand(K // 64, N, generator=gen) * 0.02 + 0.001).half()
        prefix = name.removesuffix(".weight")
        awq |= {
            prefix + ".qweight": awq_pack_by_hand(codes),
            prefix + ".qzeros": awq_pack_by_hand(zeros),
            prefix + ".scales": scales,
        }
        group = torch.arange(K) // 64
        reference[name] = ((codes - zeros[group]) * scales.float()[group]).t().contiguous()
    save_file(awq, awq_dir / "model.safetensors")
    save_file(reference, reference_dir / "model.safetensors")
    for f in float_dir.iterdir():
        if f.suffix != ".safetensors":
            (awq_dir / f.name).write_bytes(f.read_bytes())
            (reference_dir / f.name).write_bytes(f.read_bytes())
    config = json.loads((awq_dir / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 64,
        "zero_point": True,
        "version": "gemm",
    }
    (awq_dir / "config.json").write_text(json.dumps(config))

    want = engine(reference_dir, tmp_path, "fp32").logits(PROMPT)
    assert_logits_close(engine(awq_dir, tmp_path, "fp32").logits(PROMPT), want, 1e-5)
    on_kernel = engine(awq_dir, tmp_path)
    assert on_kernel.model.layers[1].feed_forward.w2.weight.dtype == torch.uint8
    assert_logits_close(on_kernel.logits(PROMPT), want, 0.03)


# ---- refusals and damage ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "quantization_config, named",
    [
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "gptq_v2"}, "'gptq_v2'"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}, "'marlin'"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "dynamic": {"-:.*down": {}}}, "'dynamic'"),
        ({"quant_method": "gptq", "bits": 5, "group_size": 128}, "5-bit GPTQ"),
        ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}, "AWQ version 'gemv'"),
        ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False}, "without zero points"),
    ],
)
def test_unknown_variants_are_refused_by_name(g64_dir, tmp_path, quantization_config, named):
    gptq_dir = copy_of(g64_dir, tmp_path)
    config = json.loads((gptq_dir / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (gptq_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=named):
        engine(gptq_dir, tmp_path)


def test_truncated_file_names_the_tensor(g64_dir, tmp_path):
    gptq_dir = copy_of(g64_dir, tmp_path)
    weights = gptq_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 2 // 3])
    with pytest.raises(ModelLoadError, match=r"truncated.*'model\.layers\.\d+\.[\w.]+'"):
        engine(gptq_dir, tmp_path)


def test_mismatched_tensors_name_the_linear(g64_dir, tmp_path):
    gptq_dir = copy_of(g64_dir, tmp_path)
    stored = load_file(gptq_dir / "model.safetensors")
    prefix = "model.layers.1.mlp.up_proj"
    stored[prefix + ".scales"] = stored[prefix + ".scales"][:-1]  # one group short
    save_file(stored, gptq_dir / "model.safetensors")
    with pytest.raises(ModelLoadError, match=rf"'{prefix}\.qweight'.*scales"):
        engine(gptq_dir, tmp_path)
    del stored[prefix + ".qzeros"]
    save_file(stored, gptq_dir / "model.safetensors")
    with pytest.raises(ModelLoadError, match=rf"has no '{prefix}\.qzeros'"):
        engine(gptq_dir, tmp_path)


def test_act_order_linear_round_trips_through_the_weight_cache(float_dir, tmp_path):
    gptq_dir = quantized(float_dir, tmp_path, QuantSpec(bits=4, group_size=32, act_order=True))
    first = engine(gptq_dir, tmp_path).logits(PROMPT)  # builds the cache entry
    again = engine(gptq_dir, tmp_path)  # a cache hit: input_order comes back from the entry
    assert isinstance(again.model.layers[2].feed_forward.w2, Linear)
    assert again.model.layers[2].feed_forward.w2.input_order is not None
    assert torch.equal(again.logits(PROMPT), first)
