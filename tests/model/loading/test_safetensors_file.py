"""Reading and writing safetensors one tensor at a time: the files are valid safetensors, aligned, and errors
are clear."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from model.loading.safetensors_file import ALIGNMENT, HeaderOverflow, TensorFile, read_header, write_stream

TENSORS = {
    "odd.int8": torch.randint(-128, 127, (3, 5), dtype=torch.int8),  # 15 bytes: the next tensor needs padding
    "w.bf16": torch.randn(7, 3).to(torch.bfloat16),
    "w.fp8": torch.randn(4, 4).to(torch.float8_e4m3fn),
    "norm.f32": torch.randn(11),
    "empty": torch.zeros(0, 4),
}


def test_streamed_file_is_valid_safetensors_with_aligned_tensors(tmp_path):
    path = tmp_path / "t.safetensors"
    write_stream(path, iter(TENSORS.items()), {"note": "x"}, names=TENSORS)
    header, data_start = read_header(path)
    assert header["__metadata__"] == {"note": "x"} and data_start % ALIGNMENT == 0
    assert all(header[name]["data_offsets"][0] % ALIGNMENT == 0 for name in TENSORS)
    with safe_open(str(path), framework="pt") as reference:  # the format's own reader accepts it
        for name, tensor in TENSORS.items():
            assert torch.equal(reference.get_tensor(name).view(torch.uint8), tensor.view(torch.uint8))
    with TensorFile(path) as ours:
        assert ours.names() == list(TENSORS)  # file order; padding entries hidden
        for name, tensor in TENSORS.items():
            got = ours.read(name)
            assert got.dtype == tensor.dtype and torch.equal(got.view(torch.uint8), tensor.view(torch.uint8))


def test_too_small_a_header_reservation_is_refused(tmp_path):
    with pytest.raises(HeaderOverflow):
        write_stream(tmp_path / "t.safetensors", iter(TENSORS.items()), {}, names=[])


def test_truncated_file_names_the_tensor(tmp_path):
    path = tmp_path / "t.safetensors"
    write_stream(path, iter(TENSORS.items()), {}, names=TENSORS)
    path.write_bytes(path.read_bytes()[:-30])
    with TensorFile(path) as f:
        assert torch.equal(f.read("odd.int8"), TENSORS["odd.int8"])
        with pytest.raises(ValueError, match="norm.f32.*truncated"):
            f.read("norm.f32")
