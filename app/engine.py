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
        attention=attention_config(settings),
        fallback_full_attention=settings.fallback_full_attention,
    )


def attention_config(settings: Settings) -> model.AttentionConfig:
    """The attention pattern the settings ask for. Raises ValueError naming a bad mode or value."""
    return model.AttentionConfig(
        mode=settings.attention, local_blocks=settings.attention_local_blocks, topk=settings.attention_topk
    )
