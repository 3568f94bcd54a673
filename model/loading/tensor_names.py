"""Checkpoint tensor names: the tables from HF and GGUF names to ours, the shapes a config implies, and the
loader's error type. A leaf module: the readers (model/loading/hf_checkpoint.py, model/loading/gguf.py) and the loader
(model/loading/checkpoint.py) all import it, and it imports nothing of theirs.

"Our" checkpoint names are the unfused, unquantized weights (`layers.3.attention.wq.weight`), in rotate-half
RoPE layout; model/loading/repack.py turns them into the Transformer's packed state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

import torch

from model.config import ModelConfig


class ModelLoadError(ValueError):
    """A model source is missing, corrupt, truncated, or does not match what we can run."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model source does not exist."""


_FIELD = re.compile(r"\{(\w+)\}")
_NUMBER = re.compile(r"(?<=\.)\d+(?=\.|$)")  # a path component that is a number: a layer or an expert index


class NameTable:
    """Maps names through `{source template: our template}`; templates name their numbers, e.g.
    "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight" -> "layers.{layer}.feed_forward.experts.{expert}.w3.weight".
    """

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)
        # A name's numbers replaced by "#" is its key: one dict look-up per tensor, whatever the table size.
        self._by_key = {
            _FIELD.sub("#", source): (tuple(_FIELD.findall(source)), ours) for source, ours in table.items()
        }

    def lookup(self, name: str) -> tuple[str, dict[str, int]] | None:
        """(our template, the numbers it needs) for `name`, or None if the table does not know it."""
        hit = self._by_key.get(_NUMBER.sub("#", name))
        if hit is None:
            return None
        fields, ours = hit
        return ours, dict(zip(fields, map(int, _NUMBER.findall(name))))

    def map(self, name: str, **fields: int) -> str | None:
        """Our name for `name` (None if unknown); `fields` supply numbers the source name lacks (stacked experts)."""
        hit = self.lookup(name)
        return None if hit is None else hit[0].format(**hit[1], **fields)

    def inverse(self) -> NameTable:
        return NameTable({ours: source for source, ours in self.table.items()})


# HF name -> ours. HF Llama/Qwen2/Mixtral q/k rows are in rotate-half order already; DeepSeek's rope rows
# are interleaved pairs (config `rope_interleave`) and are reordered by the reader.
HF_NAMES = NameTable(
    {
        "model.embed_tokens.weight": "tok_embeddings.weight",
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "output.weight",
        "model.layers.{layer}.input_layernorm.weight": "layers.{layer}.attention_norm.weight",
        "model.layers.{layer}.post_attention_layernorm.weight": "layers.{layer}.ffn_norm.weight",
        # grouped-query attention (Llama, Qwen2, Mixtral)
        "model.layers.{layer}.self_attn.q_proj.weight": "layers.{layer}.attention.wq.weight",
        "model.layers.{layer}.self_attn.q_proj.bias": "layers.{layer}.attention.wq.bias",
        "model.layers.{layer}.self_attn.k_proj.weight": "layers.{layer}.attention.wk.weight",
        "model.layers.{layer}.self_attn.k_proj.bias": "layers.{layer}.attention.wk.bias",
        "model.layers.{layer}.self_attn.v_proj.weight": "layers.{layer}.attention.wv.weight",
        "model.layers.{layer}.self_attn.v_proj.bias": "layers.{layer}.attention.wv.bias",
        "model.layers.{layer}.self_attn.o_proj.weight": "layers.{layer}.attention.wo.weight",
        # multi-head latent attention (DeepSeek-V3); q_proj above when q_lora_rank is none
        "model.layers.{layer}.self_attn.q_a_proj.weight": "layers.{layer}.attention.wq_a.weight",
        "model.layers.{layer}.self_attn.q_a_layernorm.weight": "layers.{layer}.attention.q_norm.weight",
        "model.layers.{layer}.self_attn.q_b_proj.weight": "layers.{layer}.attention.wq_b.weight",
        "model.layers.{layer}.self_attn.kv_a_proj_with_mqa.weight": "layers.{layer}.attention.wkv_a.weight",
        "model.layers.{layer}.self_attn.kv_a_layernorm.weight": "layers.{layer}.attention.kv_norm.weight",
        "model.layers.{layer}.self_attn.kv_b_proj.weight": "layers.{layer}.attention.wkv_b.weight",
        # dense MLP
        "model.layers.{layer}.mlp.gate_proj.weight": "layers.{layer}.feed_forward.w1.weight",
        "model.layers.{layer}.mlp.up_proj.weight": "layers.{layer}.feed_forward.w3.weight",
        "model.layers.{layer}.mlp.down_proj.weight": "layers.{layer}.feed_forward.w2.weight",
        # DeepSeekMoE
        "model.layers.{layer}.mlp.gate.weight": "layers.{layer}.feed_forward.router.weight",
        "model.layers.{layer}.mlp.gate.e_score_correction_bias": "layers.{layer}.feed_forward.router.score_bias",
        "model.layers.{layer}.mlp.experts.{expert}.gate_proj.weight": "layers.{layer}.feed_forward.experts.{expert}.w1.weight",
        "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight": "layers.{layer}.feed_forward.experts.{expert}.w3.weight",
        "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight": "layers.{layer}.feed_forward.experts.{expert}.w2.weight",
        "model.layers.{layer}.mlp.shared_experts.gate_proj.weight": "layers.{layer}.feed_forward.shared.w1.weight",
        "model.layers.{layer}.mlp.shared_experts.up_proj.weight": "layers.{layer}.feed_forward.shared.w3.weight",
        "model.layers.{layer}.mlp.shared_experts.down_proj.weight": "layers.{layer}.feed_forward.shared.w2.weight",
        # Mixtral
        "model.layers.{layer}.block_sparse_moe.gate.weight": "layers.{layer}.feed_forward.router.weight",
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight": "layers.{layer}.feed_forward.experts.{expert}.w1.weight",
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight": "layers.{layer}.feed_forward.experts.{expert}.w2.weight",
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight": "layers.{layer}.feed_forward.experts.{expert}.w3.weight",
    }
)

# GGUF name -> ours, as llama.cpp's convert_hf_to_gguf.py writes them. Its `*_exps` tensors stack every expert
# of a layer in one [E, ...] tensor (the reader slices them); DeepSeek's kv_b is stored split in two by newer
# converters (attn_k_b transposed, attn_v_b), which the reader joins back.
GGUF_NAMES = NameTable(
    {
        "token_embd.weight": "tok_embeddings.weight",
        "output_norm.weight": "norm.weight",
        "output.weight": "output.weight",
        "blk.{layer}.attn_norm.weight": "layers.{layer}.attention_norm.weight",
        "blk.{layer}.ffn_norm.weight": "layers.{layer}.ffn_norm.weight",
        "blk.{layer}.attn_q.weight": "layers.{layer}.attention.wq.weight",
        "blk.{layer}.attn_q.bias": "layers.{layer}.attention.wq.bias",
        "blk.{layer}.attn_k.weight": "layers.{layer}.attention.wk.weight",
        "blk.{layer}.attn_k.bias": "layers.{layer}.attention.wk.bias",
        "blk.{layer}.attn_v.weight": "layers.{layer}.attention.wv.weight",
        "blk.{layer}.attn_v.bias": "layers.{layer}.attention.wv.bias",
        "blk.{layer}.attn_output.weight": "layers.{layer}.attention.wo.weight",
        "blk.{layer}.attn_q_a.weight": "layers.{layer}.attention.wq_a.weight",
        "blk.{layer}.attn_q_a_norm.weight": "layers.{layer}.attention.q_norm.weight",
        "blk.{layer}.attn_q_b.weight": "layers.{layer}.attention.wq_b.weight",
        "blk.{layer}.attn_kv_a_mqa.weight": "layers.{layer}.attention.wkv_a.weight",
        "blk.{layer}.attn_kv_a_norm.weight": "layers.{layer}.attention.kv_norm.weight",
        "blk.{layer}.attn_kv_b.weight": "layers.{layer}.attention.wkv_b.weight",
        "blk.{layer}.ffn_gate.weight": "layers.{layer}.feed_forward.w1.weight",
        "blk.{layer}.ffn_up.weight": "layers.{layer}.feed_forward.w3.weight",
        "blk.{layer}.ffn_down.weight": "layers.{layer}.feed_forward.w2.weight",
        "blk.{layer}.ffn_gate_inp.weight": "layers.{layer}.feed_forward.router.weight",
        "blk.{layer}.exp_probs_b.bias": "layers.{layer}.feed_forward.router.score_bias",
        "blk.{layer}.ffn_gate_exps.weight": "layers.{layer}.feed_forward.experts.{expert}.w1.weight",
        "blk.{layer}.ffn_up_exps.weight": "layers.{layer}.feed_forward.experts.{expert}.w3.weight",
        "blk.{layer}.ffn_down_exps.weight": "layers.{layer}.feed_forward.experts.{expert}.w2.weight",
        "blk.{layer}.ffn_gate_shexp.weight": "layers.{layer}.feed_forward.shared.w1.weight",
        "blk.{layer}.ffn_up_shexp.weight": "layers.{layer}.feed_forward.shared.w3.weight",
        "blk.{layer}.ffn_down_shexp.weight": "layers.{layer}.feed_forward.shared.w2.weight",
    }
)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint-named tensor the engine expects for `config`, with its torch shape."""
    D, V = config.dim, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (V, D), "norm.weight": (D,)}
    if not config.tie_embeddings:
        shapes["output.weight"] = (V, D)
    for i, spec in enumerate(config.layer_specs()):
        p = f"layers.{i}."
        shapes[p + "attention_norm.weight"] = (D,)
        shapes[p + "ffn_norm.weight"] = (D,)
        attention = _mla_shapes(config) if spec.attention == "mla" else _gqa_shapes(config)
        mlp = _moe_shapes(config) if spec.mlp == "moe" else _swiglu_shapes(D, config.ffn_dim)
        shapes.update({p + "attention." + k: v for k, v in attention.items()})
        shapes.update({p + "feed_forward." + k: v for k, v in mlp.items()})
    return shapes


def _gqa_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    D, hd = config.dim, config.head_dim
    q, kv = config.n_heads * hd, config.n_kv_heads * hd
    shapes = {"wq.weight": (q, D), "wk.weight": (kv, D), "wv.weight": (kv, D), "wo.weight": (D, q)}
    if config.qkv_bias:
        shapes.update({"wq.bias": (q,), "wk.bias": (kv,), "wv.bias": (kv,)})
    return shapes


def _mla_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    m, D, H = config.mla, config.dim, config.n_heads
    shapes: dict[str, tuple[int, ...]] = {}
    if m.q_lora_rank is None:
        shapes["wq.weight"] = (H * m.qk_head_dim, D)
    else:
        shapes.update(
            {
                "wq_a.weight": (m.q_lora_rank, D),
                "q_norm.weight": (m.q_lora_rank,),
                "wq_b.weight": (H * m.qk_head_dim, m.q_lora_rank),
            }
        )
    shapes.update(
        {
            "wkv_a.weight": (m.kv_lora_rank + m.qk_rope_head_dim, D),
            "kv_norm.weight": (m.kv_lora_rank,),
            "wkv_b.weight": (H * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank),
            "wo.weight": (D, H * m.v_head_dim),
        }
    )
    return shapes


def _swiglu_shapes(dim: int, hidden: int, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {
        prefix + "w1.weight": (hidden, dim),
        prefix + "w3.weight": (hidden, dim),
        prefix + "w2.weight": (dim, hidden),
    }


def _moe_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    moe, D = config.moe, config.dim
    shapes: dict[str, tuple[int, ...]] = {"router.weight": (moe.n_experts, D)}
    if moe.scoring == "sigmoid":
        shapes["router.score_bias"] = (moe.n_experts,)
    for e in range(moe.n_experts):
        shapes.update(_swiglu_shapes(D, moe.expert_ffn_dim, f"experts.{e}."))
    if moe.n_shared_experts:
        shapes.update(_swiglu_shapes(D, moe.expert_ffn_dim * moe.n_shared_experts, "shared."))
    return shapes


def rope_rows(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """Checkpoint tensors (name past "layers.N.") whose rows hold rope pairs -> (rows per head, rope rows ending
    each head): what a reader reorders when the checkpoint stores the pairs interleaved (`config.rope_interleaved`)."""
    if config.mla is not None:
        m = config.mla
        per_head = (m.qk_head_dim, m.qk_rope_head_dim)  # each query head: nope rows, then rope rows
        return {
            "attention.wq.weight": per_head,
            "attention.wq_b.weight": per_head,
            "attention.wkv_a.weight": (m.kv_lora_rank + m.qk_rope_head_dim, m.qk_rope_head_dim),
        }  # latent, shared key
    whole = (config.head_dim, config.head_dim)
    return {f"attention.{w}.{kind}": whole for w in ("wq", "wk") for kind in ("weight", "bias")}


def checked(
    config: ModelConfig, tensors: Iterable[tuple[str, torch.Tensor]], source: object
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass `tensors` through, raising ModelLoadError naming the first unexpected, repeated or mis-shaped tensor
    as it arrives, and the first missing one at the end."""
    want = expected_shapes(config)
    seen: set[str] = set()
    for name, tensor in tensors:
        shape = want.get(name)
        if shape is None:
            raise ModelLoadError(f"{source}: unexpected tensor {name!r} for a {config.arch} config")
        if name in seen:
            raise ModelLoadError(f"{source}: tensor {name!r} appears more than once")
        if tuple(tensor.shape) != shape:
            raise ModelLoadError(
                f"{source}: tensor {name!r} has shape {list(tensor.shape)}, config implies {list(shape)}"
            )
        seen.add(name)
        yield name, tensor
    missing = [n for n in want if n not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{source}: missing tensor {missing[0]!r}{more}")


def validate_tensors(config: ModelConfig, tensors: Mapping[str, torch.Tensor], source: object) -> None:
    """Raise ModelLoadError naming the first missing, unexpected or mis-shaped tensor of a complete set."""
    for _ in checked(config, tensors.items(), source):
        pass
