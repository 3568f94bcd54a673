"""Releasing the calling thread's OpenMP worker pool once it is done with model work.

The engine decodes on its scheduler thread. torch's libgomp keeps a pool of workers per thread that has run a
parallel region, and once the threads of all pools outnumber the CPUs it shortens its spin-waits to a few
iterations, so every barrier sleeps in a futex and pays a wake-up. A batch-1 native decode step has about 240
barriers: on a 2-CPU machine at 2 threads it took 3.1 ms when no other pool existed and 13.1 ms once the thread
that loaded the model held one (docs/BENCHMARKS.md, "The llama.cpp row is llama.cpp's own loop"). `model.load`
therefore frees the loading thread's pool when it returns (OpenMP 5's `omp_pause_resource_all`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

OMP_PAUSE_SOFT = 1


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """torch's own libgomp (the one its parallel regions run on), or None where torch ships none."""
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    if not found:
        return None
    try:
        library = ctypes.CDLL(str(found[0]))
        library.omp_pause_resource_all.argtypes = [ctypes.c_int]
        return library
    except (OSError, AttributeError) as e:  # an old libgomp without OpenMP 5's pause
        log.info("OpenMP pools stay as they are: %s", e)
        return None


def release_thread_pool() -> bool:
    """Free the calling thread's OpenMP worker pool (the next parallel region on this thread makes a new one).
    Returns whether it was freed."""
    library = _libgomp()
    return library is not None and library.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
