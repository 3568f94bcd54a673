"""Settings: defaults, then R1_* environment variables, then CLI flags."""

from __future__ import annotations

import pytest

from app import Settings


def test_environment_overrides_defaults_with_typed_values():
    settings = Settings.from_env(
        {"R1_QUANT": "int4", "R1_THREADS": "3", "R1_TEMPERATURE": "0.7", "R1_SEED": "", "R1_KV_CACHE_MB": "256"}
    )
    assert (settings.quant, settings.threads, settings.temperature, settings.seed) == ("int4", 3, 0.7, None)
    assert settings.kv_cache_mb == 256.0
    assert settings.model == "default" and settings.max_new_tokens == 512


def test_flags_left_unset_keep_the_environment_value():
    settings = Settings.from_env({"R1_MAX_NEW_TOKENS": "64"}).override(max_new_tokens=None, temperature=0.2)
    assert settings.max_new_tokens == 64 and settings.temperature == 0.2


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="R1_MAX_NEW_TOKENS='lots'"):
        Settings.from_env({"R1_MAX_NEW_TOKENS": "lots"})


def test_sampling_carries_every_sampling_field():
    sampling = Settings(top_k=5, repetition_penalty=1.1).sampling()
    assert sampling["top_k"] == 5 and sampling["repetition_penalty"] == 1.1
    assert set(sampling) == {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"}


def test_front_end_settings_come_from_the_environment(tmp_path):
    settings = Settings.from_env({"R1_DATA_DIR": str(tmp_path / "data"), "R1_PORT": "9000", "R1_API_KEY": "sesame"})
    assert settings.data_path() == tmp_path / "data"
    assert (settings.host, settings.port, settings.api_key) == ("127.0.0.1", 9000, "sesame")
    assert Settings().port is None  # each front end has its own default port
    served = Settings.from_env({"R1_ALLOWED_HOSTS": "r1.lan, box.local,", "R1_MAX_REQUEST_MB": "0.5"})
    assert served.allowed_hosts == ("r1.lan", "box.local") and served.max_request_mb == 0.5


def test_memory_locations_follow_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings().chroma_store_path() == tmp_path / ".local/share/r1-reasoner/chroma"
    settings = Settings.from_env({"R1_DATA_DIR": "/srv/r1", "R1_MEMORY_WINDOW_TOKENS": "16384"})
    assert settings.chroma_store_path().as_posix() == "/srv/r1/chroma" and settings.memory_window_tokens == 16384
    assert Settings(data_dir="/srv/r1", chroma_path="~/vectors").chroma_store_path() == tmp_path / "vectors"


def test_attention_settings_come_from_the_environment():
    from app.engine import attention_config

    settings = Settings.from_env(
        {
            "R1_ATTENTION": "topk",
            "R1_ATTENTION_TOPK": "0.25",
            "R1_ATTENTION_LOCAL_BLOCKS": "4",
            "R1_FALLBACK_FULL_ATTENTION": "yes",
        }
    )
    assert settings.fallback_full_attention is True
    config = attention_config(settings)
    assert (config.mode, config.topk, config.local_blocks) == ("topk", 0.25, 4)
    assert Settings().attention == "dense" and Settings().fallback_full_attention is False
    with pytest.raises(ValueError, match="R1_FALLBACK_FULL_ATTENTION='maybe'"):
        Settings.from_env({"R1_FALLBACK_FULL_ATTENTION": "maybe"})
    with pytest.raises(ValueError, match="unknown attention mode 'sparse'"):
        attention_config(Settings(attention="sparse"))
