"""One place that turns Settings into the vector store, so the CLI, the UI and the bot open the same one.

Not re-exported from `app`: importing chromadb costs ~0.5 s, which `r1 generate` should not pay.
"""

from __future__ import annotations

from app.config import Settings
from memory.vector_store import MemoryStoreError, VectorStore

__all__ = ["LOCAL_USER", "MemoryStoreError", "open_vector_store"]

LOCAL_USER = "local"  # the user of a single-user install (the CLI, the local web chat)


def open_vector_store(settings: Settings) -> VectorStore:
    """The Chroma server at settings.chroma_url if set, else the on-disk store at settings.chroma_store_path()."""
    if settings.chroma_url:
        return VectorStore(url=settings.chroma_url)
    return VectorStore(settings.chroma_store_path())
