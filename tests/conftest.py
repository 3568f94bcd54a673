"""Shared fixtures: the real default model (int4) in a Runtime, loaded once for the app and ui tests."""

from __future__ import annotations

import os

import pytest

from app import Settings
from app.runtime import Runtime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The native decode step costs a ~15 s (CPU) compile per fresh cache dir: only tests/model/test_compiled_step.py
# builds it (once); every other engine of the suite, and every `r1` subprocess, decodes eagerly.
os.environ.setdefault("R1_COMPILED_STEP", "0")


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    settings = Settings(
        quant="int4", cache_dir=str(base / "ui-weight-cache"), data_dir=str(base / "ui-data"), max_new_tokens=32
    )
    runtime = Runtime(settings)
    runtime.engine  # load once, up front
    yield runtime
    runtime.close()
