"""Disk cache for repacked weights (safetensors, mmap-loaded) and small JSON side entries.

Every entry is written to a temp file in the cache directory, fsynced, then `os.replace`d onto
its final name, so readers see either no entry or a complete one. A failed save (full disk,
permissions) removes its temp file, logs a warning and returns False; it never raises.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

log = logging.getLogger(__name__)

# Bump when the on-disk layout or the meaning of cached tensors changes; part of every key.
CACHE_FORMAT_VERSION = 1

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def default_cache_dir() -> Path:
    """`$R1_CACHE_DIR`, else `~/.cache/r1-reasoner`."""
    env = os.environ.get("R1_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "r1-reasoner"


def cache_key(fingerprint: str, variant: str) -> str:
    """Key for one repacking (`variant`, e.g. "fp32", "int8") of one model file set."""
    if not variant.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"cache variant must be alphanumeric (with - or _), got {variant!r}")
    return f"v{CACHE_FORMAT_VERSION}-{variant}-{fingerprint}"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Have `write(tmp_path)` fill a temp file next to `path`, fsync it, then os.replace it onto `path`.

    Raises what `write` raises (OSError on a full disk); the temp file never outlives the call.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class WeightCache:
    """Entries live under `cache_dir`: `<key>.safetensors` for tensors, `<key>.json` for JSON blobs."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def _path(self, key: str, suffix: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad cache key {key!r}")
        return self.dir / f"{key}{suffix}"

    # ---- tensors -------------------------------------------------------------------------
    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> bool:
        """Store `tensors` (and string `meta`) under `key`; True on success, False (warned) on OSError."""
        path = self._path(key, ".safetensors")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            flat = {k: v.contiguous() for k, v in tensors.items()}
            atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=dict(meta or {})))
            return True
        except (OSError, SafetensorError) as e:  # safetensors reports a full disk as SafetensorError
            log.warning("weight cache: could not save %s (%s); continuing without cache", path, e)
            return False

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """Tensors under `key`, memory-mapped copy-on-write (no read of the whole file); None on miss."""
        hit = self.load_with_meta(key)
        return None if hit is None else hit[0]

    def load_meta(self, key: str) -> dict[str, str] | None:
        path = self._path(key, ".safetensors")
        try:
            return _read_header(path)[0].get("__metadata__", {})
        except (OSError, ValueError):
            return None

    def load_with_meta(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        path = self._path(key, ".safetensors")
        try:
            header, data_start = _read_header(path)
            size = path.stat().st_size
            # shared=False maps the file MAP_PRIVATE: pages load lazily and writes never reach the file.
            storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
        except (OSError, ValueError, RuntimeError) as e:
            if not isinstance(e, FileNotFoundError):
                log.warning("weight cache: ignoring unreadable entry %s (%s)", path, e)
            return None
        meta = header.pop("__metadata__", {}) or {}
        tensors: dict[str, torch.Tensor] = {}
        try:
            for name, info in header.items():
                dtype = _ST_DTYPES[info["dtype"]]
                begin, end = info["data_offsets"]
                begin += data_start
                end += data_start
                if end > size:
                    raise ValueError(f"tensor {name} runs past the end of the file")
                itemsize = torch.empty((), dtype=dtype).element_size()
                if begin % itemsize == 0:
                    t = torch.empty(0, dtype=dtype).set_(storage, begin // itemsize, tuple(info["shape"]))
                else:  # unaligned: copy out this tensor
                    t = torch.frombuffer(bytearray(storage[begin:end].numpy().tobytes()), dtype=dtype)
                    t = t.reshape(info["shape"])
                tensors[name] = t
        except (KeyError, ValueError, TypeError) as e:
            log.warning("weight cache: ignoring malformed entry %s (%s)", path, e)
            return None
        return tensors, meta

    # ---- JSON side entries (config, tokenizer) --------------------------------------------
    def save_json(self, key: str, obj: Any) -> bool:
        path = self._path(key, ".json")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
            return True
        except OSError as e:
            log.warning("weight cache: could not save %s (%s); continuing without cache", path, e)
            return False

    def load_json(self, key: str) -> Any | None:
        path = self._path(key, ".json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("weight cache: ignoring unreadable entry %s (%s)", path, e)
            return None


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
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
    return json.loads(raw), 8 + n
