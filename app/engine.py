"""One place that turns Settings into the model backend, so the CLI, the UI and the API load it the same way.

It is the only module that knows which backend is in use: everything else calls the `model.backends.backend.Backend`
it returns, our own engine or an OpenAI-compatible server.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

import model
from app.config import Settings
from model import ATTENTION_MODES as ATTENTION_MODES, LOAD_QUANTS as LOAD_QUANTS
from model.backends.backend import Backend
from model.engine import DEFAULT_KV_CACHE_MB as DEFAULT_KV_CACHE_MB
from model.layers.moe import DEFAULT_EXPERT_CAPACITY as DEFAULT_EXPERT_CAPACITY, TASK_TYPES, ExpertLoad as ExpertLoad
from model.serving.request import Completion as Completion, GenerationError as GenerationError, Request as Request
from reasoning.search import REASONING_ADAPTER, WORD_PROBLEM_ADAPTER

# The model names above written `X as X` are re-exported for ui/, which imports app and never model
# (docs/ARCHITECTURE.md).

ADAPTER_SCOPES = ("reasoning", "word-problems", "all")
# The per-request adapter name each narrower scope loads `--adapter` under (reasoning/search.py's step_adapter).
SCOPED_ADAPTER_NAMES = {"reasoning": REASONING_ADAPTER, "word-problems": WORD_PROBLEM_ADAPTER}

BACKENDS = ("local", "openai")
# Settings whose change needs a new backend; every other field applies to the next request as it is.
ENGINE_FIELDS = (
    "backend",
    "model",
    "quant",
    "threads",
    "cache_dir",
    "kv_cache_mb",
    "expert_capacity",
    "router_bias",
    "adapter",
    "adapter_scope",
    "attention",
    "attention_local_blocks",
    "attention_topk",
    "fallback_full_attention",
    "prompt_lookup",
    "jump_forward",
    "base_url",
    "remote_model",
    "remote_api_key",
    "remote_timeout",
    "remote_retries",
    "remote_tool_calls",
)


def load_engine(settings: Settings) -> Backend:
    """Our engine loaded with `settings.model`, or (backend "openai") a connection to the server at
    `settings.base_url`, its features probed. Raises ValueError for a bad model or router bias, or an
    unreachable server."""
    if settings.backend == "local":
        if settings.adapter_scope not in ADAPTER_SCOPES:
            raise ValueError(
                f"unknown adapter scope {settings.adapter_scope!r}; choose one of {', '.join(ADAPTER_SCOPES)}"
            )
        everything = settings.adapter_scope == "all"
        engine = model.load(
            settings.model,
            quant=settings.quant,
            threads=settings.threads,
            cache_dir=settings.cache_dir,
            kv_cache_mb=settings.kv_cache_mb,
            attention=attention_config(settings),
            fallback_full_attention=settings.fallback_full_attention,
            adapter=settings.adapter if everything else None,
            request_adapters={SCOPED_ADAPTER_NAMES[settings.adapter_scope]: settings.adapter}
            if settings.adapter and not everything
            else None,
            prompt_lookup=settings.prompt_lookup,
            jump_forward=settings.jump_forward,
        )
        if settings.expert_capacity is not None:
            engine.set_expert_capacity(settings.expert_capacity)
        if settings.router_bias is not None:
            engine.set_task_router_bias(read_router_bias(settings.router_bias))
        return engine
    if settings.backend == "openai":
        from model.backends.remote import OpenAIBackend, RemoteConfig

        if not settings.base_url:
            raise ValueError(
                "the openai backend needs the server's address: --base-url or R1_BASE_URL "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        return OpenAIBackend(
            RemoteConfig(
                settings.base_url,
                api_key=settings.remote_api_key,
                model=settings.remote_model,
                timeout=settings.remote_timeout,
                retries=settings.remote_retries,
                tool_calls=settings.remote_tool_calls,
            )
        )
    raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")


def describe(settings: Settings) -> str:
    """What `settings` will run, for "loading ..." lines."""
    if settings.backend == "openai":
        return f"{settings.remote_model or 'the model'} at {settings.base_url}"
    adapter = f" + adapter {settings.adapter} ({settings.adapter_scope})" if settings.adapter else ""
    return f"{settings.model} ({settings.quant or 'fp32'}){adapter}"


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


def read_router_bias(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file with one tensor [MoE layers, experts] per task type ("math", "code", "chat").

    Raises ValueError naming the file for a missing or unreadable file or a tensor that is not a task type.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    try:
        biases = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise ValueError(f"cannot read router bias file {path}: {e}") from e
    unknown = sorted(set(biases) - set(TASK_TYPES))
    if unknown or not biases:
        raise ValueError(f"{path}: router bias tensors must be named {', '.join(TASK_TYPES)}; found {sorted(biases)}")
    return biases


def attention_config(settings: Settings) -> model.AttentionConfig:
    """The attention pattern the settings ask for. Raises ValueError naming a bad mode or value."""
    return model.AttentionConfig(
        mode=settings.attention, local_blocks=settings.attention_local_blocks, topk=settings.attention_topk
    )
