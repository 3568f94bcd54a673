"""One place that turns Settings into the model backend, so the CLI, the UI and the API load it the same way.

It is the only module that knows which backend is in use: everything else calls the `model.backend.Backend`
it returns, our own engine or an OpenAI-compatible server.
"""

from __future__ import annotations

import threading

import model
from app.config import Settings
from model.backend import Backend

BACKENDS = ("local", "openai")
# Settings whose change needs a new backend; every other field applies to the next request as it is.
ENGINE_FIELDS = ("backend", "model", "quant", "threads", "cache_dir", "kv_cache_mb", "base_url", "remote_model",
                 "remote_api_key", "remote_timeout", "remote_retries", "remote_tool_calls")


def load_engine(settings: Settings) -> Backend:
    """Our engine loaded with `settings.model`, or (backend "openai") a connection to the server at
    `settings.base_url`, its features probed. Raises ValueError for a bad model or an unreachable server."""
    if settings.backend == "local":
        return model.load(
            settings.model,
            quant=settings.quant,
            threads=settings.threads,
            cache_dir=settings.cache_dir,
            kv_cache_mb=settings.kv_cache_mb,
        )
    if settings.backend == "openai":
        from model.remote import OpenAIBackend, RemoteConfig

        if not settings.base_url:
            raise ValueError("the openai backend needs the server's address: --base-url or R1_BASE_URL "
                             "(e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(RemoteConfig(
            settings.base_url,
            api_key=settings.remote_api_key,
            model=settings.remote_model,
            timeout=settings.remote_timeout,
            retries=settings.remote_retries,
            tool_calls=settings.remote_tool_calls,
        ))
    raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")


def describe(settings: Settings) -> str:
    """What `settings` will run, for "loading ..." lines."""
    if settings.backend == "openai":
        return f"{settings.remote_model or 'the model'} at {settings.base_url}"
    return f"{settings.model} ({settings.quant or 'fp32'})"


class SharedBackends:
    """Backends loaded once per distinct engine settings, for callers without a Runtime (`solve()`, `ChatR1()`)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, Backend] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> Backend:
        key = tuple(getattr(settings, name) for name in ENGINE_FIELDS)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load_engine(settings)
            return self._loaded[key]


shared_backends = SharedBackends()  # the process's one set: loading a model twice would double its memory
