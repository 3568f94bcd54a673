"""Reference dequantizers for the GGML block formats we load, written from ggml's C (`ggml-quants.c`).

The loader itself calls `gguf.quants.dequantize`; these independent ports live with the tests, which check that
library against the format's definition with them (and they document the layouts). No product code imports them. Every function
has the signature of ggml's `dequantize_row_<type>`: raw bytes of n whole blocks,
`blocks: uint8[n_blocks, type_size]` -> `float32[n_blocks * block_size]`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

QK_K = 256  # super-block size of the K-quants


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 at byte offset `start` of every block, as float32 [n, 1]."""
    return blocks[:, start : start + 2].copy().view(np.float16).astype(np.float32)


def dequantize_row_q8_0(blocks: np.ndarray) -> np.ndarray:
    # block_q8_0 { f16 d; int8 qs[32]; }  y = d * q
    d = _f16(blocks, 0)
    q = blocks[:, 2:34].view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def dequantize_row_q4_0(blocks: np.ndarray) -> np.ndarray:
    # block_q4_0 { f16 d; u8 qs[16]; }  low nibbles are elements 0..15, high nibbles 16..31; y = d * (q - 8)
    d = _f16(blocks, 0)
    qs = blocks[:, 2:18]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (d * q).reshape(-1)


def dequantize_row_q4_1(blocks: np.ndarray) -> np.ndarray:
    # block_q4_1 { f16 d; f16 m; u8 qs[16]; }  y = d * q + m
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    qs = blocks[:, 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return (d * q + m).reshape(-1)


def _scale_min_k4(scales: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4: 8 (scale, min) pairs of 6 bits packed into 12 bytes."""
    if j < 4:
        sc = scales[:, j] & 63
        mn = scales[:, j + 4] & 63
    else:
        sc = (scales[:, j + 4] & 0x0F) | ((scales[:, j - 4] >> 6) << 4)
        mn = (scales[:, j + 4] >> 4) | ((scales[:, j] >> 6) << 4)
    return sc.astype(np.float32)[:, None], mn.astype(np.float32)[:, None]


def dequantize_row_q4_k(blocks: np.ndarray) -> np.ndarray:
    # block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 sub-blocks of 32,
    # y = d * sc * q - dmin * m; each 32 bytes of qs hold two sub-blocks (low then high nibbles).
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    scales, qs = blocks[:, 4:16], blocks[:, 16:144]
    out = []
    for j in range(4):
        q = qs[:, 32 * j : 32 * (j + 1)]
        sc1, m1 = _scale_min_k4(scales, 2 * j)
        sc2, m2 = _scale_min_k4(scales, 2 * j + 1)
        out.append(d * sc1 * (q & 0x0F).astype(np.float32) - dmin * m1)
        out.append(d * sc2 * (q >> 4).astype(np.float32) - dmin * m2)
    return np.concatenate(out, axis=1).reshape(-1)


def dequantize_row_q6_k(blocks: np.ndarray) -> np.ndarray:
    # block_q6_K { u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d; }: 16 sub-blocks of 16,
    # 6-bit q = low 4 bits from ql | 2 high bits from qh, centred by -32; y = d * scale * q.
    ql, qh = blocks[:, 0:128], blocks[:, 128:192]
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(blocks, 208)
    out = np.empty((blocks.shape[0], QK_K), dtype=np.float32)
    for half in range(2):  # each half: 128 outputs from 64 bytes of ql, 32 of qh, 8 scales
        l_ = ql[:, 64 * half : 64 * half + 64]
        h_ = qh[:, 32 * half : 32 * half + 32]
        s_ = sc[:, 8 * half : 8 * half + 8]
        q1 = ((l_[:, :32] & 0x0F) | (((h_ >> 0) & 3) << 4)).astype(np.int16) - 32
        q2 = ((l_[:, 32:] & 0x0F) | (((h_ >> 2) & 3) << 4)).astype(np.int16) - 32
        q3 = ((l_[:, :32] >> 4) | (((h_ >> 4) & 3) << 4)).astype(np.int16) - 32
        q4 = ((l_[:, 32:] >> 4) | (((h_ >> 6) & 3) << 4)).astype(np.int16) - 32
        for k, q in enumerate((q1, q2, q3, q4)):
            # outputs l in [0,16) use scale 2k, l in [16,32) use scale 2k+1
            scale = np.repeat(s_[:, 2 * k : 2 * k + 2], 16, axis=1)
            out[:, 128 * half + 32 * k : 128 * half + 32 * (k + 1)] = d * scale * q.astype(np.float32)
    return out.reshape(-1)


# GGML type name -> (block size, bytes per block, reference dequantizer)
REFERENCE_DEQUANTIZERS: dict[str, tuple[int, int, Callable[[np.ndarray], np.ndarray]]] = {
    "Q8_0": (32, 34, dequantize_row_q8_0),
    "Q4_0": (32, 18, dequantize_row_q4_0),
    "Q4_1": (32, 20, dequantize_row_q4_1),
    "Q4_K": (QK_K, 144, dequantize_row_q4_k),
    "Q6_K": (QK_K, 210, dequantize_row_q6_k),
}
