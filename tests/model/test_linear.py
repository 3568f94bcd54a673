"""int8 weight-only linear: quantization error bounds and the kernel against a dequantized reference."""

from __future__ import annotations

import torch

from model.linear import Linear, dequantize_int8, quantize_int8


def test_per_channel_quantization_error_is_within_half_a_step():
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3, 64)[:, None]
    q, scales = quantize_int8(weight)
    assert q.dtype == torch.int8 and scales.shape == (64,)
    error = (dequantize_int8(q, scales) - weight).abs()
    assert torch.all(error <= scales[:, None] / 2 + 1e-7)


def test_int8_linear_matches_dequantized_reference_and_keeps_bias():
    torch.manual_seed(1)
    layer = Linear(48, 64, bias=True)
    layer.weight.data.normal_()
    layer.bias.data.normal_()
    x = torch.randn(5, 3, 48)
    fp32 = layer(x)
    layer.quantize_int8_()
    assert layer.weight.dtype == torch.int8
    reference = torch.nn.functional.linear(x, dequantize_int8(layer.weight, layer.scales.float()), layer.bias)
    torch.testing.assert_close(layer(x), reference, atol=0.1, rtol=0.02)  # bf16 activations
    assert (layer(x) - fp32).abs().mean() < 0.05 * fp32.abs().mean()


def test_int8_state_round_trips_through_load_state_dict():
    source = Linear(16, 8)
    source.weight.data.normal_()
    source.quantize_int8_()
    target = Linear(16, 8)
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 16)
    assert torch.equal(target(x), source(x))
