"""Quantized linear layers: quantization error bounds and each kernel against a dequantized reference."""

from __future__ import annotations

import pytest
import torch

from model.layers.linear import Linear, dequantize_int4, dequantize_int8, quantize_int4, quantize_int8


def test_int8_per_channel_error_is_within_half_a_step():
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3, 64)[:, None]
    q, scales = quantize_int8(weight)
    assert q.dtype == torch.int8 and scales.shape == (64,)
    assert torch.all((dequantize_int8(q, scales) - weight).abs() <= scales[:, None] / 2 + 1e-7)


def test_int4_groups_of_32_are_exact_for_q4_1_style_weights():
    # Q4_1 blocks: 32 codes in 0..15 times a scale plus a minimum, per block. int4 must reproduce them.
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (16, 64), generator=gen)
    codes[:, ::32] = 0  # every block spans the full code range, as a real quantizer's blocks do
    codes[:, 1::32] = 15
    scale = torch.rand(16, 2, generator=gen).bfloat16().float().repeat_interleave(32, dim=1)
    low = (torch.randn(16, 2, generator=gen) * 8).round() / 8
    weight = codes * scale + low.repeat_interleave(32, dim=1)
    q, sz = quantize_int4(weight)
    torch.testing.assert_close(dequantize_int4(q, sz), weight, atol=0.02, rtol=0.01)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_linear_matches_dequantized_reference_and_keeps_bias(mode):
    torch.manual_seed(2)
    layer = Linear(64, 32, bias=True)
    layer.weight.data.normal_()
    layer.bias.data.normal_()
    x = torch.randn(5, 3, 64)
    fp32 = layer(x)
    reference_weight = layer.weight.data.clone()
    if mode == "int8":
        reference_weight = dequantize_int8(*quantize_int8(reference_weight))
    else:
        reference_weight = dequantize_int4(*quantize_int4(reference_weight))
    layer.quantize_(mode)
    assert layer.weight.dtype == (torch.int8 if mode == "int8" else torch.uint8)
    reference = torch.nn.functional.linear(x, reference_weight, layer.bias)
    torch.testing.assert_close(layer(x), reference, atol=0.15, rtol=0.02)  # bf16 activations
    relative_error = (layer(x) - fp32).abs().mean() / fp32.abs().mean()
    assert relative_error < (0.02 if mode == "int8" else 0.15)


def test_int4_falls_back_to_int8_where_the_shape_does_not_pack():
    layer = Linear(48, 8)  # 48 is not a multiple of the group size
    layer.weight.data.normal_()
    layer.quantize_("int4")
    assert layer.weight.dtype == torch.int8


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_state_round_trips_through_load_state_dict(mode):
    source = Linear(64, 16)
    source.weight.data.normal_()
    source.quantize_(mode)
    target = Linear(64, 16)
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 64)
    assert torch.equal(target(x), source(x))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="int3"):
        Linear(64, 16).quantize_("int3")
