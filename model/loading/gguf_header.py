"""A GGUF file's tensor directory (names, GGML types, shapes) read from the header alone, without the gguf package.

`gguf.GGUFReader` builds views of every field and tensor (~3 s for the default model) and importing the
package is what warm loads avoid; `model.load(quant="auto")` only needs the weights' types to pick a
precision before anything is loaded, and walking the header takes milliseconds.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from model.loading.tensor_names import ModelLoadError

# ggml's `enum ggml_type` for the types we load (tests/model/loading/test_gguf_header.py checks it against the gguf package).
GGML_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    30: "BF16",
}
# Bytes of each fixed-size metadata value type; strings (8) and arrays (9) are walked.
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def tensor_types(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """GGUF tensor name -> (GGML type name such as "Q4_1", or "type <id>" for others; torch-order shape)."""
    path = Path(path)
    try:
        buf = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))
        if bytes(buf[:4]) != b"GGUF":
            raise ModelLoadError(f"{path} is not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)  # after magic and version

        def skip_value(kind: int, pos: int) -> int:
            if kind == _STRING:
                return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
            if kind == _ARRAY:
                item_kind, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                if item_kind in _SCALAR_BYTES:
                    return pos + count * _SCALAR_BYTES[item_kind]
                for _ in range(count):
                    pos = skip_value(item_kind, pos)
                return pos
            return pos + _SCALAR_BYTES[kind]

        pos = 24
        for _ in range(n_kv):
            pos = skip_value(_STRING, pos)  # the key
            pos = skip_value(struct.unpack_from("<I", buf, pos)[0], pos + 4)
        types: dict[str, tuple[str, tuple[int, ...]]] = {}
        for _ in range(n_tensors):
            (length,) = struct.unpack_from("<Q", buf, pos)
            name = bytes(buf[pos + 8 : pos + 8 + length]).decode()
            pos += 8 + length
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            ne = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)  # ggml order: fastest dimension first
            (kind,) = struct.unpack_from("<I", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 4 + 8  # dims, type, data offset
            types[name] = (GGML_TYPE_NAMES.get(kind, f"type {kind}"), tuple(reversed(ne)))
        return types
    except ModelLoadError:
        raise
    except Exception as e:  # struct.error / KeyError / UnicodeDecodeError on a truncated or corrupt header
        raise ModelLoadError(
            f"cannot parse the GGUF header of {path} (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
