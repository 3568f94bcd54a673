"""Disk cache for repacked weights (safetensors, mmap-loaded) and small JSON side entries.

Every entry is written to a temp file in the cache directory, fsynced, then `os.replace`d onto
its final name, so readers see either no entry or a complete one. A failed save (full disk,
permissions) removes its temp file, logs a warning and returns False; it raises only what the
tensors' producer raises.

Weights are written as a stream (`save_stream`, model/loading/safetensors_file.py): each tensor goes to disk as it
arrives, so a first load never holds the whole model in memory. Every tensor starts on a 64-byte boundary,
which the int8/int4 kernels need to run on memory-mapped weights without a copy.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from model.loading.safetensors_file import DTYPES, PADDING_PREFIX, HeaderOverflow, read_header, write_stream

log = logging.getLogger(__name__)

# Bump when the on-disk layout or the meaning of cached tensors changes; part of every key.
CACHE_FORMAT_VERSION = 1


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
        return self.save_stream(key, tensors.items(), meta, names=tensors.keys())

    def save_stream(
        self,
        key: str,
        tensors: Iterable[tuple[str, torch.Tensor]],
        meta: dict[str, str] | None = None,
        *,
        names: Iterable[str],
    ) -> bool:
        """Store tensors as they arrive under `key`; True on success, False (warned) if the entry could not be written.

        names: an upper bound on what will arrive (the names of the tensors, or of as many that are at least as
        long), from which the header's room is reserved. Exceptions raised by `tensors` propagate, and the
        partial entry is removed.
        """
        path = self._path(key, ".safetensors")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: write_stream(tmp, tensors, dict(meta or {}), names))
            return True
        except (OSError, HeaderOverflow) as e:
            log.warning("weight cache: could not save %s (%s); continuing without cache", path, e)
            return False

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """Tensors under `key`, memory-mapped copy-on-write (no read of the whole file); None on miss."""
        hit = self.load_with_meta(key)
        return None if hit is None else hit[0]

    def load_with_meta(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        path = self._path(key, ".safetensors")
        try:
            header, data_start = read_header(path)
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
                if name.startswith(PADDING_PREFIX):
                    continue
                dtype = DTYPES[info["dtype"]]
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
