"""The native kernels' int4 layout (model/serving/native_layout.py): codes read back from torch's packing, tiles."""

from __future__ import annotations

import pytest
import torch

from model.layers.linear import Linear, quantize_int4
from model.serving.native_layout import int4_codes, int4_tiles, tiled_int4


@pytest.mark.parametrize("n, k", [(16, 32), (48, 96), (64, 64), (80, 160), (960, 576)])
def test_codes_come_back_from_torchs_packing(n, k):
    torch.manual_seed(n + k)
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    assert torch.equal(int4_codes(packed, n, k), codes.to(torch.uint8))


def test_a_linears_weight_gives_its_quantized_codes():
    torch.manual_seed(0)
    weight = torch.randn(48, 96)
    linear = Linear(96, 48)
    linear.weight.data = weight.clone()
    linear.quantize_("int4")
    expected, _ = quantize_int4(weight)
    assert torch.equal(int4_codes(linear.weight, 48, 96), expected.to(torch.uint8))
    assert tiled_int4(linear.weight, linear.scales).numel() == linear.weight.numel()  # same size as torch's copy


def test_tile_bytes_hold_each_rows_four_codes_per_lane():
    torch.manual_seed(1)
    n, k = 32, 64
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    tiles = int4_tiles(codes)
    groups = k // 32
    for t in range(n // 16):
        for g in range(groups):
            block = tiles[(t * groups + g) * 256 : (t * groups + g + 1) * 256]
            for c in range(4):
                for r in range(16):
                    for i in range(4):
                        byte = int(block[64 * c + 4 * r + i])
                        row, col = 16 * t + r, 32 * g + 4 * c + i
                        assert byte & 15 == codes[row, col] and byte >> 4 == codes[row, col + 16]


def test_shapes_that_do_not_tile_are_refused():
    with pytest.raises(ValueError, match="sixteens"):
        int4_tiles(torch.zeros(8, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 bytes"):
        int4_codes(torch.zeros(16, 8, dtype=torch.uint8), 16, 32)
