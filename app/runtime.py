"""The engine a long-running front end serves from, reloadable when its settings change (the web UI's Settings tab)."""

from __future__ import annotations

import logging
import threading
import time

from app.config import Settings
from app.engine import load_engine
from model.engine import Engine

log = logging.getLogger(__name__)

# Settings whose change needs a new engine; every other field applies to the next request as it is.
ENGINE_FIELDS = (
    "model", "quant", "threads", "cache_dir", "kv_cache_mb",
    "attention", "attention_local_blocks", "attention_topk", "fallback_full_attention",
)


class Runtime:
    """Current Settings plus the Engine loaded for them; shared by every session of a server."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def engine(self) -> Engine:
        """The loaded engine (loaded on first use). Raises ValueError for a missing or bad model."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load(self._settings)
            return self._engine

    def apply(self, settings: Settings) -> bool:
        """Switch to `settings`; returns whether the engine was reloaded.

        The new engine is loaded before the old one is closed, so a bad model path raises ValueError
        and leaves the running engine and settings untouched. Requests still running on a replaced
        engine end "cancelled".
        """
        with self._lock:
            reload = self._engine is None or any(
                getattr(settings, name) != getattr(self._settings, name) for name in ENGINE_FIELDS
            )
            old = self._engine
            if reload:
                self._engine = self._load(settings)
            self._settings = settings
        if reload and old is not None:
            old.close()
        return reload

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    @staticmethod
    def _load(settings: Settings) -> Engine:
        start = time.perf_counter()
        engine = load_engine(settings)
        log.info("loaded %s (%s) in %.1f s", settings.model, settings.quant or "fp32", time.perf_counter() - start)
        return engine
