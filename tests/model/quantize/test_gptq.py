"""GPTQ and RTN on one weight: the grid and groups they produce, and GPTQ's point, a smaller output error than
round-to-nearest on inputs like the ones it calibrated on (held-out draws of the same distribution)."""

from __future__ import annotations

import pytest
import torch

from model.quantize.gptq import QuantSpec, gptq, rtn


def correlated_inputs(tokens: int, K: int, seed: int) -> torch.Tensor:
    """Activations as a transformer's are: correlated features with a few large-magnitude channels."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(K, K, generator=torch.Generator().manual_seed(99)) / K**0.5
    scale = torch.ones(K)
    scale[::17] = 8.0  # outlier channels
    return (torch.randn(tokens, K, generator=gen) @ mixing + 0.3 * torch.randn(tokens, K, generator=gen)) * scale


@pytest.fixture(scope="module")
def layer():
    K, N = 256, 96
    weight = torch.randn(N, K, generator=torch.Generator().manual_seed(1)) * 0.05
    X = correlated_inputs(2048, K, seed=2)
    return weight, 2 * X.t() @ X / X.shape[0], correlated_inputs(1024, K, seed=3)


def output_error(weight: torch.Tensor, quantized: torch.Tensor, X: torch.Tensor) -> float:
    return ((X @ (weight - quantized).t()) ** 2).mean().item()


@pytest.mark.parametrize(
    "bits, group_size, act_order, sym",
    [
        (4, 128, False, True),
        (3, 128, False, True),
        (4, 32, True, True),
        (3, 64, True, False),
        (4, 128, False, False),
        (8, -1, False, True),
    ],
)
def test_gptq_has_less_output_error_than_rtn_on_held_out_inputs(layer, bits, group_size, act_order, sym):
    weight, hessian, held_out = layer
    spec = QuantSpec(bits=bits, group_size=group_size, act_order=act_order, sym=sym)
    ours, baseline = gptq(weight, hessian, spec), rtn(weight, spec)
    assert output_error(weight, ours.weight, held_out) < 0.8 * output_error(weight, baseline.weight, held_out)


@pytest.mark.parametrize("method", ["gptq", "rtn"])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("sym", [True, False])
def test_codes_scales_and_groups_give_back_the_weight(layer, method, act_order, sym):
    weight, hessian, _ = layer
    spec = QuantSpec(bits=3, group_size=64, act_order=act_order, sym=sym)
    q = gptq(weight, hessian, spec) if method == "gptq" else rtn(weight, spec)
    N, K = weight.shape
    assert q.codes.dtype == torch.uint8 and int(q.codes.max()) <= 7
    assert q.scales.dtype == torch.float16 and q.scales.shape == (K // 64, N)
    if sym:
        assert torch.all(q.zeros == 4)  # the zero point mid-range
    else:
        assert 1 <= int(q.zeros.min()) and int(q.zeros.max()) <= 7 and len(q.zeros.unique()) > 1
    assert torch.equal(torch.bincount(q.g_idx), torch.full((K // 64,), 64))
    scattered = not torch.equal(q.g_idx, torch.arange(K) // 64)
    assert scattered == (method == "gptq" and act_order)
    by_hand = (q.codes.float() - q.zeros.float()[q.g_idx].t()) * q.scales.float()[q.g_idx].t()
    assert torch.equal(q.weight, by_hand)  # what GPTQ measured its errors against is what the file holds
    if method == "rtn":  # rounding moves a weight by at most a step of its group (GPTQ's updates move it further)
        assert torch.all((q.weight - weight).abs() <= q.scales.float()[q.g_idx].t() * 1.001)


def test_dead_inputs_are_zeroed_and_spec_is_checked(layer):
    weight, hessian, _ = layer
    hessian = hessian.clone()
    hessian[5, :] = hessian[:, 5] = 0  # an input that never fires
    assert torch.all(gptq(weight, hessian, QuantSpec()).weight[:, 5] == 0)
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=5)
    with pytest.raises(ValueError, match="group size"):
        QuantSpec(group_size=48)
    with pytest.raises(ValueError, match="Hessian of shape"):
        gptq(weight, hessian[:10, :10], QuantSpec())
