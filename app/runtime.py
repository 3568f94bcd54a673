"""The engine a long-running front end serves from, reloadable when its settings change (the web UI's Settings tab)."""

from __future__ import annotations

import logging
import threading
import time

from app.config import Settings
from app.engine import ENGINE_FIELDS, load_engine
from app.solution import PathCache
from model.backends.backend import Backend

log = logging.getLogger(__name__)


class Runtime:
    """Current Settings plus the backend loaded for them (our engine or a server); shared by every session.

    It also owns the reasoning-path cache its sessions' `solve` calls share (keyed by model and adapter, so it
    stays right across `apply`).
    """

    def __init__(self, settings: Settings, engine: Backend | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._lock = threading.Lock()
        self.path_cache = PathCache()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def engine(self) -> Backend:
        """The loaded backend (loaded on first use). Raises ValueError for a missing or bad model or server."""
        return self.current()[1]

    def current(self) -> tuple[Settings, Backend]:
        """The settings and the backend loaded for them, read together: a concurrent `apply` cannot pair one
        with the other's predecessor (loads the backend on first use, as `engine` does)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load(self._settings)
            return self._settings, self._engine

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
    def _load(settings: Settings) -> Backend:
        start = time.perf_counter()
        engine = load_engine(settings)
        log.info("loaded %s in %.1f s", engine.name, time.perf_counter() - start)
        return engine
