"""Runtime: the engine follows the settings; a bad change raises and loses nothing."""

from __future__ import annotations

import dataclasses

import pytest

from app.runtime import Runtime

pytestmark = pytest.mark.slow


def test_engine_reloads_only_for_engine_settings_and_survives_a_bad_model(runtime, tmp_path):
    own = Runtime(runtime.settings)  # its own engine, from the weight cache the shared one filled
    try:
        first = own.engine
        assert own.apply(dataclasses.replace(own.settings, temperature=0.5, search_budget=8)) is False
        assert own.engine is first and own.settings.search_budget == 8

        before = own.settings
        with pytest.raises(ValueError, match="nope.gguf"):
            own.apply(dataclasses.replace(before, model=str(tmp_path / "nope.gguf")))
        assert own.engine is first and own.settings == before
        assert own.engine.generate("The capital of France is", max_new_tokens=4)  # still serving

        assert own.apply(dataclasses.replace(before, kv_cache_mb=64)) is True
        settings, engine = own.current()  # read together: the new settings with the engine loaded for them
        assert engine is own.engine is not first and engine.kv_cache_mb == settings.kv_cache_mb == 64
        assert own.engine.generate("The capital of France is", max_new_tokens=4)
    finally:
        own.close()
