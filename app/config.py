"""Application settings: one dataclass, filled from defaults, then R1_* environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "R1_"
DEFAULT_DATA_DIR = "~/.local/share/r1-reasoner"


@dataclass(frozen=True)
class Settings:
    backend: str = "local"  # "local" (our engine runs `model`) or "openai" (an OpenAI-compatible server runs it)
    model: str = "default"  # "default" (the bundled SmolLM2-135M GGUF), a .gguf file, or an HF model directory
    quant: str = (
        "auto"  # "auto" (int4/int8 as the model file holds, fp32 for float checkpoints), "fp32", "int8", "int4"
    )
    threads: int | None = None  # None = physical cores
    cache_dir: str | None = None  # repacked-weight cache; None = $R1_CACHE_DIR or ~/.cache/r1-reasoner
    kv_cache_mb: float | None = None  # KV-cache capacity (running requests + prefix cache); None = 1024 MiB
    # MoE models (DeepSeek-V3/R1, Mixtral); both off by default, which keeps routing equal to the reference
    expert_capacity: int | None = (
        None  # most (token, expert) assignments per expert per step; overflow goes to a backup
    )
    adapter: str | None = None  # a LoRA directory in PEFT's format (`r1 train sft` writes one); None = none
    # "reasoning": only solve's reasoning steps run with it; "word-problems": only those of maths word problems;
    # "all": every request
    adapter_scope: str = "reasoning"
    router_bias: str | None = None  # a safetensors file of per-task router biases (tensors "math", "code", "chat")
    attention: str = "dense"  # "dense", "local", "topk" or "auto" (dense up to 512 tokens of context, top-k above)
    attention_local_blocks: int = 2  # sparse modes: 64-token blocks before its own that a query always sees
    attention_topk: float = 0.05  # topk / auto: blocks picked per query block, a fraction (< 1) or a count (>= 1)
    fallback_full_attention: bool = False  # attend densely whatever `attention` says
    # greedy decoding's draft tokens, verified in one step, output unchanged (model/serving/drafts.py)
    prompt_lookup: bool = True  # speculate by matching the last n-gram in the prompt and the text so far
    jump_forward: bool = True  # under a grammar, feed the tokens it forces in one step
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    system_prompt: str = "You are a helpful assistant."
    # backend "openai": the server (vLLM, SGLang, llama.cpp, another `r1 serve`); see docs/SCALING.md
    base_url: str | None = None  # its API root, e.g. http://127.0.0.1:8000/v1
    remote_model: str | None = None  # the model to ask it for; None = the first it lists
    remote_api_key: str | None = None  # sent as `Authorization: Bearer <key>` (`--api-key` of the client commands)
    remote_timeout: float = 600.0  # seconds the server may stay silent before a request fails
    remote_retries: int = 3  # retries of connection errors, 429 and 5xx, with exponential backoff
    remote_tool_calls: str = "auto"  # the bot's actions: auto, tools (the server's), json_schema, prompt
    search_budget: int | None = None  # reasoning-search iterations per problem; None = the strategy's default
    # front ends (`r1 ui`, `r1 serve`)
    data_dir: str | None = None  # every piece of persistent state; None = $R1_DATA_DIR or ~/.local/share/r1-reasoner
    chroma_path: str | None = None  # the on-disk vector store; None = <data_dir>/chroma
    chroma_url: str | None = None  # a Chroma server (http://host:port) instead of the on-disk store
    memory_window_tokens: int | None = None  # the conversation window; None = model context - answer - recall room
    memory_recall_k: int = 3  # snippets recalled from the vector store per chat turn; 0 = none
    host: str = "127.0.0.1"  # any other address is an explicit choice
    port: int | None = None  # None = 7860 for the web UI, 8000 for the API server
    api_key: str | None = None  # the API server then requires `Authorization: Bearer <key>`
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides the bound address and localhost (comma-separated)
    max_request_mb: float = 4.0  # the API server refuses (413) a larger request body

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Defaults overridden by R1_MODEL, R1_QUANT, R1_THREADS, R1_MAX_NEW_TOKENS, ... (field name, upper-cased)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind == "bool":
                    values[f.name] = _parse_bool(raw)
                elif kind.startswith("int"):
                    values[f.name] = int(raw)
                elif kind.startswith("float"):
                    values[f.name] = float(raw)
                elif kind.startswith("tuple"):
                    values[f.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from None
        return cls(**values)

    def override(self, **values: Any) -> Settings:
        """A copy with every non-None value applied (CLI flags left unset keep the current value)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def data_path(self) -> Path:
        """The data directory (not created here: each store creates what it writes)."""
        return Path(self.data_dir or DEFAULT_DATA_DIR).expanduser()

    def chroma_store_path(self) -> Path:
        return Path(self.chroma_path).expanduser() if self.chroma_path else self.data_path() / "chroma"

    def sampling(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
