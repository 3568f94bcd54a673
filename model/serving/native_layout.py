"""Int4 weights in the layout of the native step's int8-activation kernels (model/serving/native/int8_kernels.h).

`Linear` keeps int4 weights in torch's packed layout, which `aten._weight_int4pack_mm_for_cpu` reads and which
depends on the CPU torch runs on (64-row blocks with AVX512, 32 without). The native kernels need 16-row tiles
whose 32-bit lanes hold four consecutive codes of one row (`vpdpbusd`'s operand), so each int4 weight is
repacked once when the native step is made: read back into codes through the permutation torch's packer applies
(found by packing probe codes, so no knowledge of torch's layout is assumed), then tiled. The tiled copy is the
same size as the packed weight; the scales are shared with `Linear`, not copied.
"""

from __future__ import annotations

import functools

import torch

TILE_ROWS = 16  # output rows per tile = int32 lanes of a 512-bit register
GROUP = 32  # codes per row and tile group: the activations' blocks (a GPTQ/AWQ scale group may span several)


@functools.cache
def _nibble_sources(n: int, k: int) -> torch.Tensor:
    """For each nibble of torch's packed [n, k] int4 weight (byte i's low nibble is 2i, its high one 2i + 1), the
    flat index n * k + k' of the code it holds.

    Packs codes that are the base-16 digits of each element's own index, one digit per pack, and reads the
    digits back: log16(n * k) packs of the shape.
    """
    index = torch.arange(n * k, dtype=torch.int64)
    sources = torch.zeros(n * k, dtype=torch.int64)
    shift = 0
    while (1 << shift) < n * k:
        digits = ((index >> shift) & 15).to(torch.int32).view(n, k)
        sources |= _nibbles(torch.ops.aten._convert_weight_to_int4pack_for_cpu(digits, 1)).to(torch.int64) << shift
        shift += 4
    if not torch.equal(sources.sort().values, index):
        raise ValueError(f"torch's int4 packing of a {n}x{k} weight is not a permutation of its codes")
    return sources


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 bytes -> their nibbles, low then high, flat."""
    flat = packed.reshape(-1)
    return torch.stack([flat & 15, flat >> 4], dim=-1).reshape(-1)


def int4_codes(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """torch's packed int4 weight of shape [n, k] -> its codes, uint8 [n, k] in 0..15."""
    if packed.dtype != torch.uint8 or packed.numel() * 2 != n * k:
        raise ValueError(
            f"a packed int4 weight of {n}x{k} codes has {n * k // 2} uint8 bytes, not {packed.dtype} {list(packed.shape)}"
        )
    codes = torch.empty(n * k, dtype=torch.uint8)
    codes[_nibble_sources(n, k)] = _nibbles(packed)
    return codes.view(n, k)


def int4_tiles(codes: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [n, k] -> the kernels' tiles, uint8 [n * k / 2]: per 16-row tile and 32-wide group 256 bytes,
    byte 64c + 4r + i = code[r, 4c + i] | code[r, 16 + 4c + i] << 4."""
    n, k = codes.shape
    if n % TILE_ROWS or k % GROUP:
        raise ValueError(f"int4 tiles need rows in sixteens and groups of {GROUP}, not {n}x{k}")
    c = codes.view(n // TILE_ROWS, TILE_ROWS, k // GROUP, 2, 4, 4)  # [tile, r, group, low/high half, c, i]
    packed = c[:, :, :, 0] | (c[:, :, :, 1] << 4)  # [tile, r, group, c, i]
    return packed.permute(0, 2, 3, 1, 4).contiguous().view(-1)  # [tile, group, c, r, i]


def tiled_int4(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """A `Linear`'s packed int4 weight [n, k / 2] and its scales [k / g, n, 2] -> the tiled copy the kernels read."""
    n = scales.shape[1]
    return int4_tiles(int4_codes(weight, n, weight.numel() * 2 // n))
