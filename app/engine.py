"""One place that turns Settings into a loaded Engine, so the CLI, the UI and the API load it the same way."""

from __future__ import annotations

import model
from app.config import Settings
from model.engine import Engine


def load_engine(settings: Settings) -> Engine:
    return model.load(
        settings.model,
        quant=settings.quant,
        threads=settings.threads,
        cache_dir=settings.cache_dir,
        kv_cache_mb=settings.kv_cache_mb,
    )
