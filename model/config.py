"""Model configuration, read from checkpoint metadata (GGUF keys or HF config.json), never from file names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling ("rope_type": "llama3"); None on the config means plain RoPE."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    # architecture
    arch: str
    vocab_size: int
    dim: int
    n_layers: int
    ffn_dim: int
    # attention
    n_heads: int
    n_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    # positions
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    # norms and embeddings
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # special tokens (None where the checkpoint does not say)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a Hugging Face `config.json` dict (LlamaForCausalLM / Qwen2ForCausalLM)."""
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {model_type!r} in config.json; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        n_heads = cfg["num_attention_heads"]
        dim = cfg["hidden_size"]
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        return cls(
            arch=model_type,
            vocab_size=cfg["vocab_size"],
            dim=dim,
            n_layers=cfg["num_hidden_layers"],
            ffn_dim=cfg["intermediate_size"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim") or dim // n_heads,
            qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
            max_seq_len=cfg.get("max_position_embeddings", 2048),
            rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
            rope_scaling=_hf_rope_scaling(cfg),
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], *, has_output_tensor: bool) -> ModelConfig:
        """Build from decoded GGUF key/values (`general.architecture`, `<arch>.block_count`, ...)."""
        arch = meta.get("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {arch!r} in GGUF metadata; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )

        def key(name: str, default: Any = None) -> Any:
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise ValueError(f"GGUF metadata lacks required key {arch}.{name}")
            return value

        n_heads = int(key("attention.head_count"))
        dim = int(key("embedding_length"))
        vocab_size = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ()))
        if not vocab_size:
            raise ValueError("GGUF metadata gives no vocabulary size")
        scaling = None
        if meta.get(f"{arch}.rope.scaling.type") == "llama3":
            scaling = RopeScaling(
                factor=float(key("rope.scaling.factor")),
                low_freq_factor=float(key("rope.scaling.low_freq_factor", 1.0)),
                high_freq_factor=float(key("rope.scaling.high_freq_factor", 4.0)),
                original_max_position_embeddings=int(key("rope.scaling.original_context_length")),
            )
        eos = meta.get("tokenizer.ggml.eos_token_id")
        eot = meta.get("tokenizer.ggml.eot_token_id")
        eos_ids = tuple(dict.fromkeys(int(t) for t in (eos, eot) if t is not None))
        bos = meta.get("tokenizer.ggml.bos_token_id")
        return cls(
            arch=arch,
            vocab_size=int(vocab_size),
            dim=dim,
            n_layers=int(key("block_count")),
            ffn_dim=int(key("feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=int(key("attention.head_count_kv", n_heads)),
            head_dim=int(meta.get(f"{arch}.attention.key_length") or dim // n_heads),
            qkv_bias=arch == "qwen2",
            max_seq_len=int(key("context_length", 2048)),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings=not has_output_tensor,
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=eos_ids,
        )


def _hf_rope_scaling(cfg: dict[str, Any]) -> RopeScaling | None:
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not rs or rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    return RopeScaling(
        factor=float(rs["factor"]),
        low_freq_factor=float(rs["low_freq_factor"]),
        high_freq_factor=float(rs["high_freq_factor"]),
        original_max_position_embeddings=int(rs["original_max_position_embeddings"]),
    )
