"""The header-only GGUF tensor directory, and the precision `model.load(quant="auto")` picks from it."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

import model
from model.loading.checkpoint import ModelLoadError, native_quant
from model.loading.gguf import SUPPORTED_TYPES, open_gguf
from model.loading.gguf_header import GGML_TYPE_NAMES, tensor_types


def write_gguf(path: Path, tensor_kinds: dict[str, Q], rows: int = 4, cols: int = 256) -> Path:
    """A GGUF with string-array metadata (as tokenizers have) and zero-filled tensors of the given types."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.0, 1.5, -2.0])
    w.add_string("general.name", "tiny")
    for name, kind in tensor_kinds.items():
        block, type_size = GGML_QUANT_SIZES[kind]
        shape = (cols,) if name.endswith("norm.weight") else (rows, cols)
        if kind == Q.F32:
            w.add_tensor(name, np.zeros(shape, dtype=np.float32))
        else:
            n_bytes = int(np.prod(shape)) // block * type_size
            w.add_tensor(
                name, np.zeros((*shape[:-1], n_bytes // int(np.prod(shape[:-1]))), dtype=np.uint8), raw_dtype=kind
            )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def layer_tensors(matmul: Q, down: Q | None = None) -> dict[str, Q]:
    return {
        "token_embd.weight": Q.Q8_0,
        "blk.0.attn_norm.weight": Q.F32,
        "blk.0.attn_q.weight": matmul,
        "blk.0.attn_v.weight": matmul,
        "blk.0.ffn_down.weight": down or matmul,
    }


def test_type_table_matches_the_gguf_package():
    assert {k: Q(k).name for k in GGML_TYPE_NAMES} == GGML_TYPE_NAMES
    assert {t.name for t in SUPPORTED_TYPES} <= set(GGML_TYPE_NAMES.values())


def test_tensor_types_equal_the_full_readers(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", layer_tensors(Q.Q4_K, down=Q.Q6_K))
    expected = {
        t.name: (t.tensor_type.name, tuple(int(d) for d in reversed(t.shape.tolist()))) for t in open_gguf(path).tensors
    }
    assert tensor_types(path) == expected
    assert expected["blk.0.attn_q.weight"] == ("Q4_K", (4, 256))


def test_truncated_header_is_a_clear_error(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", layer_tensors(Q.Q4_0))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ModelLoadError, match="cut.gguf.*truncated"):
        tensor_types(cut)


@pytest.mark.parametrize(
    "matmul,down,expected",
    [
        (Q.Q4_0, None, "int4"),
        (Q.Q4_1, None, "int4"),
        (Q.Q4_K, None, "int4"),
        (Q.Q8_0, None, "int8"),
        (Q.Q4_K, Q.Q6_K, "int8"),  # Q4_K_M-style mix: 6-bit tensors do not fit 4 bits
        (Q.F16, None, None),
        (Q.F32, None, None),
    ],
)
def test_auto_precision_keeps_what_the_file_holds(tmp_path, matmul, down, expected):
    assert native_quant(write_gguf(tmp_path / "m.gguf", layer_tensors(matmul, down))) == expected


def test_load_rejects_an_unknown_quant_naming_the_choices():
    with pytest.raises(ValueError, match="'int3'.*auto, fp32, int8, int4"):
        model.load("default", quant="int3")
