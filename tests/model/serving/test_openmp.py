"""Releasing a thread's OpenMP pool: it is freed where torch runs on libgomp, and parallel work goes on after it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from model.serving.openmp import release_thread_pool


def test_a_released_pool_leaves_parallel_work_correct_on_every_thread():
    if not list((Path(torch.__file__).parent / "lib").glob("libgomp*.so*")):
        pytest.skip("this torch runs no libgomp")
    torch.set_num_threads(2)
    x = torch.arange(200_000, dtype=torch.float32) / 1e5
    want = x.exp()  # a parallel region: this thread now holds a pool
    assert release_thread_pool()
    assert torch.equal(x.exp(), want)  # a new pool is made on demand
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.equal(x.exp(), want) and release_thread_pool()))
    worker.start()
    worker.join()
    assert seen == [True]
