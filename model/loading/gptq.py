"""GPTQ and AWQ checkpoints: group-quantized linear weights, their file layouts, and their mapping onto our int4 kernel.

Both formats store a linear weight W [N out, K in] as integer codes q with, per group of input columns, a scale s and
a zero point z per output row: W[n, k] = (q[n, k] - z[g(k), n]) * s[g(k), n]. They differ in how the codes sit in
int32 words (the format's definition; tests/model/loading/test_gptq.py unpacks them independently):

- GPTQ (AutoGPTQ / gptqmodel / transformers, `checkpoint_format: "gptq"`): `qweight` int32 [K*bits/32, N], the codes
  of consecutive input rows packed along K as one little-endian bitstream (code j of a 32-row unit at bit bits*j,
  so 3-bit codes straddle words); `qzeros` int32 [G, N*bits/32], the zero points minus one packed the same way along
  N; `scales` fp16 [G, N]; `g_idx` int32 [K], the group of each input column (act-order, `desc_act`, quantizes columns
  in order of decreasing Hessian diagonal, so a group's columns are scattered).
- AWQ (AutoAWQ's GEMM layout, `version: "gemm"`): `qweight` int32 [K, N/8], 4-bit codes packed along N in the
  nibble order 0, 2, 4, 6, 1, 3, 5, 7; `qzeros` int32 [G, N/8] likewise, without the GPTQ minus one; `scales` [G, N];
  groups are contiguous runs of `group_size` columns.

`GroupQuantized` holds one weight unpacked to uint8 codes (a transient form, one byte per weight); `to_int4_kernel`
turns it into what `Linear` runs (model/layers/linear.py): torch's packed int4 with bf16 (scale, zero) per kernel
group, where kernel zero = (8 - z) * s. The kernel needs groups that are contiguous runs of 32/64/128/256 columns
dividing K: a GPTQ group of 128 over K = 576 (SmolLM2's width) becomes two kernel groups of 64 with equal scales, and
act-order columns are sorted by group once at load (`input_order`: the layer gathers its input columns in that order).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GPTQ_BITS = (2, 3, 4, 8)  # what the GPTQ layout packs; only 4 runs on our int4 kernel
KERNEL_BITS = 4
KERNEL_GROUP_SIZES = (256, 128, 64, 32)  # torch's CPU int4 kernel, largest (fewest scales) first
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AWQ nibble i of a word holds column AWQ_ORDER[i] of its eight
QUANTIZE_CONFIG = "quantize_config.json"  # gptqmodel/AutoGPTQ's copy of config.json's quantization_config


class GroupQuantError(ValueError):
    """A quantized checkpoint this loader refuses (named variant) or whose tensors do not fit together."""


@dataclass(frozen=True)
class GroupQuantConfig:
    """What a checkpoint's `quantization_config` says about its linear weights."""

    method: str  # "gptq" | "awq"
    bits: int
    group_size: int  # -1: one group over all input columns
    desc_act: bool = False  # GPTQ act-order
    sym: bool = True

    def to_json(self) -> dict[str, Any]:
        """The GPTQ `quantization_config` / quantize_config.json other tools read (transformers, optimum, gptqmodel)."""
        assert self.method == "gptq"
        return {
            "quant_method": "gptq",
            "bits": self.bits,
            "group_size": self.group_size,
            "desc_act": self.desc_act,
            "sym": self.sym,
            "true_sequential": True,
            "checkpoint_format": "gptq",
            "damp_percent": 0.01,
        }


def read_quant_config(quantization_config: dict[str, Any] | None, source: object = "") -> GroupQuantConfig | None:
    """A GPTQ or AWQ `quantization_config` -> GroupQuantConfig; None for any other method (fp8 reads its own).

    Raises GroupQuantError naming a variant we do not read: GPTQ checkpoint formats other than "gptq" (gptq_v2,
    marlin, bitblas...), per-module `dynamic` overrides, bit widths the layout does not define; AWQ other than the
    4-bit GEMM layout with zero points (gemv, gemv_fast, marlin...)."""
    q = quantization_config or {}
    method = str(q.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        return None
    bits = int(q.get("bits", q.get("w_bit", 0)))
    group_size = int(q.get("group_size", q.get("q_group_size", 128)))
    if group_size != -1 and (group_size <= 0 or group_size % 32):
        raise GroupQuantError(f"{source}: {method} group_size {group_size} is not a positive multiple of 32 (or -1)")
    if method == "gptq":
        fmt = str(q.get("checkpoint_format", "gptq")).lower()
        if fmt != "gptq":
            raise GroupQuantError(f"{source}: GPTQ checkpoint_format {fmt!r} is not supported (supported: 'gptq')")
        if q.get("dynamic"):
            raise GroupQuantError(f"{source}: GPTQ 'dynamic' per-module settings are not supported")
        if bits not in GPTQ_BITS:
            raise GroupQuantError(
                f"{source}: {bits}-bit GPTQ is not a GPTQ layout (bits: {', '.join(map(str, GPTQ_BITS))})"
            )
        return GroupQuantConfig("gptq", bits, group_size, bool(q.get("desc_act", False)), bool(q.get("sym", True)))
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise GroupQuantError(f"{source}: AWQ version {version!r} is not supported (supported: 'gemm')")
    if not q.get("zero_point", True):
        raise GroupQuantError(f"{source}: AWQ without zero points is not supported")
    if bits != 4:
        raise GroupQuantError(f"{source}: {bits}-bit AWQ is not supported (AWQ's GEMM layout is 4-bit)")
    return GroupQuantConfig("awq", bits, group_size, sym=False)


def read_dir_quant_config(directory: Path, hf_config: dict[str, Any]) -> GroupQuantConfig | None:
    """config.json's quantization_config, else a GPTQ directory's quantize_config.json (older AutoGPTQ exports)."""
    q = hf_config.get("quantization_config")
    if q is None and (directory / QUANTIZE_CONFIG).is_file():
        try:
            q = {"quant_method": "gptq", **json.loads((directory / QUANTIZE_CONFIG).read_text(encoding="utf-8"))}
        except (OSError, ValueError) as e:
            raise GroupQuantError(f"{directory / QUANTIZE_CONFIG}: unreadable: {e}") from e
    return read_quant_config(q, directory / "config.json")


# ---- bit packing: codes <-> int32 words --------------------------------------------------------------------
def _unit(bits: int) -> tuple[int, int]:
    """(codes, int32 words) of one packing unit: 32/bits codes in one word, or 32 codes in `bits` words (3-bit)."""
    codes = 32 // math.gcd(32, bits)
    return codes, codes * bits // 32


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int codes [R, C] (0 <= code < 2**bits) -> int32 [R*bits/32, C]: each unit of rows as one little-endian bitstream."""
    n_codes, n_words = _unit(bits)
    R, C = codes.shape
    if R % n_codes:
        raise GroupQuantError(f"{R} rows do not pack into units of {n_codes} {bits}-bit codes")
    values = codes.to(torch.int64).view(R // n_codes, n_codes, C)
    words = torch.zeros(R // n_codes, n_words, C, dtype=torch.int64)
    for j in range(n_codes):
        word, shift = divmod(bits * j, 32)
        words[:, word] |= (values[:, j] << shift) & 0xFFFFFFFF
        if shift + bits > 32:  # the code straddles two words
            words[:, word + 1] |= values[:, j] >> (32 - shift)
    words = torch.where(words >= 1 << 31, words - (1 << 32), words)  # as two's-complement int32
    return words.view(-1, C).to(torch.int32)


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [W, C] -> uint8 codes [W*32/bits, C]: the inverse of `pack_rows`."""
    n_codes, n_words = _unit(bits)
    W, C = packed.shape
    if W % n_words:
        raise GroupQuantError(f"{W} words do not hold whole units of {n_codes} {bits}-bit codes")
    words = packed.to(torch.int64).view(W // n_words, n_words, C) & 0xFFFFFFFF
    codes = torch.empty(W // n_words, n_codes, C, dtype=torch.uint8)
    mask = (1 << bits) - 1
    for j in range(n_codes):
        word, shift = divmod(bits * j, 32)
        value = words[:, word] >> shift
        if shift + bits > 32:
            value = value | (words[:, word + 1] << (32 - shift))
        codes[:, j] = (value & mask).to(torch.uint8)
    return codes.view(-1, C)


def _awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """AWQ int32 [R, C/8] -> uint8 codes [R, C]: nibble i of word c is column 8c + AWQ_ORDER[i]."""
    R, words = packed.shape
    nibbles = torch.stack([(packed >> (4 * i)) & 0xF for i in range(8)], dim=-1)  # [R, C/8, 8] in nibble order
    columns = torch.empty_like(nibbles)
    columns[..., list(AWQ_ORDER)] = nibbles
    return columns.view(R, words * 8).to(torch.uint8)


# ---- one weight ----------------------------------------------------------------------------------------------
@dataclass
class GroupQuantized:
    """One linear weight [N, K] in group-quantized form: W[n, k] = (codes[n, k] - zeros[g_idx[k], n]) * scales[g_idx[k], n]."""

    codes: torch.Tensor  # uint8 [N, K]
    scales: torch.Tensor  # float [G, N], as stored (fp16)
    zeros: torch.Tensor  # int16 [G, N], in codes
    g_idx: torch.Tensor  # int64 [K]
    bits: int

    @property
    def shape(self) -> torch.Size:  # what the loader's name and shape checks read
        return self.codes.shape

    @classmethod
    def from_gptq(
        cls,
        qweight: torch.Tensor,
        qzeros: torch.Tensor,
        scales: torch.Tensor,
        g_idx: torch.Tensor | None,
        config: GroupQuantConfig,
    ) -> GroupQuantized:
        """The GPTQ tensors of one linear (`g_idx` None: groups in column order). Raises GroupQuantError on shapes that
        do not fit together."""
        bits = config.bits
        K = qweight.shape[0] * 32 // bits
        N = qweight.shape[1]
        _require(qweight, torch.int32, 2, "qweight")
        _require(qzeros, torch.int32, 2, "qzeros")
        G = scales.shape[0]
        if tuple(scales.shape) != (G, N) or tuple(qzeros.shape) != (G, N * bits // 32):
            raise GroupQuantError(
                f"scales {list(scales.shape)} / qzeros {list(qzeros.shape)} do not fit qweight "
                f"{list(qweight.shape)} ({bits}-bit: [{K}, {N}] codes)"
            )
        codes = unpack_rows(qweight, bits).t().contiguous()  # [N, K]
        zeros = unpack_rows(qzeros.t().contiguous(), bits).t().to(torch.int16) + 1  # stored as zero - 1 ("v1")
        return cls(codes, scales, zeros, cls._groups(g_idx, K, G, config.group_size), bits)

    @classmethod
    def from_awq(
        cls, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, config: GroupQuantConfig
    ) -> GroupQuantized:
        """The AWQ (GEMM) tensors of one linear. Raises GroupQuantError on shapes that do not fit together."""
        _require(qweight, torch.int32, 2, "qweight")
        _require(qzeros, torch.int32, 2, "qzeros")
        K, N = qweight.shape[0], qweight.shape[1] * 8
        G = scales.shape[0]
        if tuple(scales.shape) != (G, N) or tuple(qzeros.shape) != (G, N // 8):
            raise GroupQuantError(
                f"scales {list(scales.shape)} / qzeros {list(qzeros.shape)} do not fit AWQ qweight "
                f"{list(qweight.shape)} ([{K}, {N}] codes)"
            )
        codes = _awq_unpack(qweight).t().contiguous()
        return cls(codes, scales, _awq_unpack(qzeros).to(torch.int16), cls._groups(None, K, G, config.group_size), 4)

    @staticmethod
    def _groups(g_idx: torch.Tensor | None, K: int, G: int, group_size: int) -> torch.Tensor:
        if g_idx is None:
            g_idx = torch.arange(K) // (K if group_size == -1 else group_size)
        g_idx = g_idx.to(torch.int64)
        if tuple(g_idx.shape) != (K,):
            raise GroupQuantError(f"g_idx of shape {list(g_idx.shape)} for {K} input columns")
        if K and (int(g_idx.min()) < 0 or int(g_idx.max()) >= G):
            raise GroupQuantError(f"g_idx names groups outside the {G} that scales hold")
        return g_idx

    def dequantize(self) -> torch.Tensor:
        """fp32 [N, K], the weight as the format defines it (exact in the stored scales)."""
        scales, zeros = self.scales.float()[self.g_idx].t(), self.zeros.float()[self.g_idx].t()  # [N, K]
        return (self.codes.float() - zeros) * scales

    @staticmethod
    def cat(parts: list[GroupQuantized]) -> GroupQuantized:
        """Rows stacked (q/k/v or gate/up fused into one Linear): they must group their input columns alike."""
        first = parts[0]
        for part in parts[1:]:
            if part.bits != first.bits or not torch.equal(part.g_idx, first.g_idx):
                raise GroupQuantError(
                    "weights fused into one linear have different bits or g_idx (act-order "
                    "column groups), which one int4 kernel call cannot run"
                )
        return GroupQuantized(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scales for p in parts], dim=1),
            torch.cat([p.zeros for p in parts], dim=1),
            first.g_idx,
            first.bits,
        )

    def to_int4_kernel(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(packed uint8 [N, K/2], bf16 scales_and_zeros [K/kg, N, 2], input_order int64 [K] or None) for `Linear`.

        input_order: the input columns sorted by group, when act-order scattered them (None when already in order).
        Raises GroupQuantError for weights the int4 kernel cannot hold (bits other than 4, N not a multiple of 16,
        no kernel group size that fits the column groups)."""
        N, K = self.codes.shape
        if self.bits != KERNEL_BITS:
            raise GroupQuantError(f"{self.bits}-bit weights do not run on the int4 kernel")
        if N % 16:
            raise GroupQuantError(f"{N} output rows: the int4 kernel packs rows in sixteens")
        order = None
        g_idx, codes = self.g_idx, self.codes
        if bool((g_idx[1:] < g_idx[:-1]).any()):
            order = torch.argsort(g_idx, stable=True)
            g_idx, codes = g_idx[order], codes[:, order]
        for kg in KERNEL_GROUP_SIZES:
            if K % kg == 0 and bool((g_idx.view(-1, kg) == g_idx.view(-1, kg)[:, :1]).all()):
                break
        else:
            raise GroupQuantError(
                f"no int4 kernel group size ({', '.join(map(str, KERNEL_GROUP_SIZES))}) tiles "
                f"the column groups of a [{N}, {K}] weight"
            )
        groups = g_idx.view(-1, kg)[:, 0]  # [K/kg]: the checkpoint group of each kernel group
        scales, zeros = self.scales.float()[groups], self.zeros.float()[groups]  # [K/kg, N]
        scales_and_zeros = torch.stack([scales, (8 - zeros) * scales], dim=-1).to(torch.bfloat16)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
        return packed, scales_and_zeros.contiguous(), order


def _require(tensor: torch.Tensor, dtype: torch.dtype, dims: int, what: str) -> None:
    if tensor.dtype != dtype or tensor.dim() != dims:
        raise GroupQuantError(f"{what} is {tensor.dtype} with {tensor.dim()} dims, expected {dims}-d {dtype}")
