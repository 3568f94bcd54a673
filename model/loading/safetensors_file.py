"""The safetensors file format, read and written one tensor at a time.

safetensors' own `safe_open` memory-maps a file, and every page a read touches then counts in the process's
resident memory until the file is closed: reading a whole checkpoint that way peaks at its size. `TensorFile`
instead reads each tensor's bytes with one positioned read into a fresh buffer, so a streaming load holds
only the tensors in flight. `write_stream` writes tensors as they arrive (see `write_stream`).

Layout: an 8-byte little-endian header length, a JSON header ({name: {dtype, shape, data_offsets}, optional
"__metadata__"}, which may be padded with spaces), then the data, offsets relative to its start.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
ALIGNMENT = 64  # bytes; where `write_stream` starts every tensor's data
PADDING_PREFIX = "__padding__."  # the format forbids gaps, so alignment padding is stored as these U8 tensors
# Header bytes one written tensor can need: its name plus at most ~230 for dtype, a 4-d shape and two offsets,
# and as much again for a padding entry after it.
_HEADER_BYTES_PER_TENSOR = 512


class HeaderOverflow(ValueError):
    """`write_stream` was told fewer or shorter names than it was given."""


def read_header(path: Path | str) -> tuple[dict[str, Any], int]:
    """(the JSON header, the data's byte offset). Raises OSError or ValueError for a short or malformed header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError("implausible safetensors header length")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("truncated safetensors header")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header, 8 + n


class TensorFile:
    """One safetensors file opened for reading tensors one at a time, without memory-mapping it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        header, self._data_start = read_header(self.path)
        header.pop("__metadata__", None)
        # file order: one sequential pass over the disk
        self._entries = dict(sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]))
        self._fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def names(self) -> list[str]:
        return [n for n in self._entries if not n.startswith(PADDING_PREFIX)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[self._entries[name]["dtype"]]

    def read(self, name: str) -> torch.Tensor:
        """The tensor `name`, in a buffer of its own. Raises ValueError if its bytes are missing or malformed."""
        info = self._entries[name]
        try:
            dtype, shape = DTYPES[info["dtype"]], tuple(info["shape"])
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed header entry for {name!r}: {info!r}") from e
        n_bytes = end - begin
        expected = dtype.itemsize
        for size in shape:
            expected *= size
        if n_bytes != expected:
            raise ValueError(f"{name!r} has {n_bytes} bytes for shape {list(shape)} of {info['dtype']}")
        buffer = bytearray(n_bytes)
        view, done = memoryview(buffer), 0
        while done < n_bytes:
            got = os.preadv(self._fd, [view[done:]], self._data_start + begin + done)
            if got == 0:
                raise ValueError(f"{name!r} runs past the end of the file (truncated?)")
            done += got
        return (
            torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).reshape(shape)
            if n_bytes
            else torch.empty(shape, dtype=dtype)
        )


def write_stream(
    path: Path | str, tensors: Iterable[tuple[str, torch.Tensor]], meta: dict[str, str], names: Iterable[str]
) -> None:
    """Write `tensors` to a new file at `path` as they arrive, each starting on an ALIGNMENT boundary.

    The header comes first in the file but is known only at the end, so room is reserved for it from `names`
    (an upper bound: the names to come, or as many at least as long) and it is written last, padded with
    spaces. Raises HeaderOverflow if the reservation was too small, OSError on write errors, ValueError for a
    repeated name, and whatever `tensors` raises.
    """
    reserve = sum(len(n) + _HEADER_BYTES_PER_TENSOR for n in names) + len(json.dumps(meta)) + 64
    data_start = -(-(8 + reserve) // ALIGNMENT) * ALIGNMENT
    entries: dict[str, dict[str, Any]] = {"__metadata__": meta}
    offset = 0
    with open(path, "wb") as f:
        f.seek(data_start)
        for name, tensor in tensors:
            if name in entries or name.startswith(PADDING_PREFIX):
                raise ValueError(f"tensor name {name!r} given twice or reserved")
            if offset % ALIGNMENT:
                pad = ALIGNMENT - offset % ALIGNMENT
                entries[f"{PADDING_PREFIX}{len(entries)}"] = {
                    "dtype": "U8",
                    "shape": [pad],
                    "data_offsets": [offset, offset + pad],
                }
                f.write(bytes(pad))
                offset += pad
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(memoryview(data))
            entries[name] = {
                "dtype": DTYPE_NAMES[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + data.nbytes],
            }
            offset += data.nbytes
        header = json.dumps(entries, separators=(",", ":")).encode()
        if len(header) > data_start - 8:
            raise HeaderOverflow(f"header of {len(header)} bytes exceeds the {data_start - 8} reserved")
        f.seek(0)
        f.write(struct.pack("<Q", data_start - 8) + header + b" " * (data_start - 8 - len(header)))
