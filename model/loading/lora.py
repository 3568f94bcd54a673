"""LoRA adapters in PEFT's on-disk format, applied to the engine's fused Linears.

An adapter directory holds `adapter_config.json` (peft_type "LORA", r, lora_alpha, target_modules) and
`adapter_model.safetensors` (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in] and
`...lora_B.weight` [out, r]), as `peft`'s `save_pretrained` writes it (`r1 train sft` saves through peft).

The engine fuses q/k/v (and gate/up) into one Linear, so every target of one fused Linear becomes one low-rank
pair: the A matrices stacked ([sum r, in]) and the B matrices placed at their rows of the fused output
([out, sum r], zero elsewhere), scaled by alpha / r. How a pair reaches the weights (model/layers/linear.py):
- float32 weights: merged, W += B A (exact, no cost per token, the native decode step still applies);
- int8 / int4 weights: kept unmerged beside the quantized weight, y = x W^T + (x A^T) B^T. Merged into int4
  and rounded again, the delta is mostly lost in the rounding (docs/BENCHMARKS.md, "LoRA at int4").
Both apply to every request. `attach_adapter` instead loads one under a name for the requests that ask for it
(model/layers/adapters.py): unmerged at any precision, beside base weights that other requests use as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.config import ModelConfig
from model.layers.linear import Linear
from model.loading.tensor_names import ModelLoadError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# The projections of a Llama-family layer an adapter may target (HF names), and where each sits in the HF tree.
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MODULE_PATH = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$"
)


class AdapterError(ModelLoadError):
    """An adapter directory is missing, corrupt, or does not fit the model it is loaded on."""


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    lora_alpha: float = 32.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    base_model: str = ""

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.r


@dataclass
class Adapter:
    config: LoraConfig
    # (layer, HF module name) -> (A [r, in], B [out, r]), fp32
    pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    path: Path | None = None


def module_shape(config: ModelConfig, module: str) -> tuple[int, int]:
    """(out, in) of one HF projection of a Llama-family layer."""
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return {
        "q_proj": (q, config.dim),
        "k_proj": (kv, config.dim),
        "v_proj": (kv, config.dim),
        "o_proj": (config.dim, q),
        "gate_proj": (config.ffn_dim, config.dim),
        "up_proj": (config.ffn_dim, config.dim),
        "down_proj": (config.dim, config.ffn_dim),
    }[module]


def _fused_place(config: ModelConfig, module: str) -> tuple[str, int]:
    """Our Linear (relative to layers.{i}) holding `module`, and the first row it occupies there: the fused layouts
    of model/layers/attention.py (wq, wk, wv rows of wqkv) and model/layers/mlp.py (w1, w3 rows of w13)."""
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return {
        "q_proj": ("attention.wqkv", 0),
        "k_proj": ("attention.wqkv", q),
        "v_proj": ("attention.wqkv", q + kv),
        "o_proj": ("attention.wo", 0),
        "gate_proj": ("feed_forward.w13", 0),
        "up_proj": ("feed_forward.w13", config.ffn_dim),
        "down_proj": ("feed_forward.w2", 0),
    }[module]


def read_adapter(path: str | Path) -> Adapter:
    """Read a PEFT LoRA directory. Raises AdapterError naming the file, key or tensor that is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise AdapterError(f"adapter not found: {path} is not a directory (expected {CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise AdapterError(f"cannot read {config_path}: {e}") from e
    if not isinstance(raw, dict):
        raise AdapterError(f"{config_path}: expected a JSON object")
    if raw.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{config_path}: peft_type {raw.get('peft_type')!r} is not LORA")
    for key, unsupported in (("use_dora", True), ("use_rslora", True), ("fan_in_fan_out", True)):
        if raw.get(key) == unsupported:
            raise AdapterError(f"{config_path}: {key}=true is not supported")
    if raw.get("bias", "none") != "none" or raw.get("modules_to_save"):
        raise AdapterError(f"{config_path}: only LoRA matrices are supported (bias 'none', no modules_to_save)")
    if raw.get("rank_pattern") or raw.get("alpha_pattern"):
        raise AdapterError(f"{config_path}: per-module rank_pattern/alpha_pattern is not supported")
    targets = raw.get("target_modules")
    if isinstance(targets, str) or not targets:
        raise AdapterError(f"{config_path}: target_modules must be a list of module names, got {targets!r}")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise AdapterError(f"{config_path}: unknown target module {unknown[0]!r}; supported: {', '.join(TARGETS)}")
    try:
        r, alpha = int(raw["r"]), float(raw["lora_alpha"])
    except (KeyError, TypeError, ValueError) as e:
        raise AdapterError(f"{config_path}: r and lora_alpha must be numbers ({e})") from e
    if r < 1:
        raise AdapterError(f"{config_path}: r must be at least 1, got {r}")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=tuple(sorted(targets)),
        base_model=str(raw.get("base_model_name_or_path") or ""),
    )
    try:
        tensors = load_file(str(weights_path))
    except (OSError, SafetensorError) as e:
        raise AdapterError(f"cannot read {weights_path}: {e}") from e
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None or match.group(3) not in TARGETS or _MODULE_PATH[match.group(3)] != match.group(2):
            raise AdapterError(
                f"{weights_path}: unexpected tensor {key!r} (expected LoRA A/B weights of {', '.join(TARGETS)})"
            )
        layer, module, half = int(match.group(1)), match.group(3), match.group(4)
        if module not in config.target_modules:
            raise AdapterError(f"{weights_path}: tensor {key!r} is for {module}, not among target_modules")
        halves.setdefault((layer, module), {})[half] = tensor.float()
    adapter = Adapter(config, path=path)
    for (layer, module), pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise AdapterError(f"{weights_path}: layer {layer} {module} has no {missing} weight")
        adapter.pairs[layer, module] = (pair["A"], pair["B"])
    if not adapter.pairs:
        raise AdapterError(f"{weights_path}: no LoRA weights")
    return adapter


def check_fits(adapter: Adapter, config: ModelConfig) -> None:
    """Every pair's shapes against the model's. Raises AdapterError naming the tensor."""
    if config.arch not in ("llama", "qwen2") or any(
        spec.attention != "gqa" or spec.mlp != "dense" for spec in config.layer_specs()
    ):
        raise AdapterError(f"{adapter.path}: LoRA adapters are supported on llama/qwen2 models, not {config.arch}")
    r = adapter.config.r
    for (layer, module), (a, b) in adapter.pairs.items():
        name = f"layers.{layer}.{_MODULE_PATH[module]}.{module}"
        if layer >= config.n_layers:
            raise AdapterError(f"{adapter.path}: {name}: the model has {config.n_layers} layers")
        out_features, in_features = module_shape(config, module)
        if tuple(a.shape) != (r, in_features):
            raise AdapterError(
                f"{adapter.path}: {name}.lora_A has shape {list(a.shape)}, expected [{r}, {in_features}]"
            )
        if tuple(b.shape) != (out_features, r):
            raise AdapterError(
                f"{adapter.path}: {name}.lora_B has shape {list(b.shape)}, expected [{out_features}, {r}]"
            )


def fused_pairs(adapter: Adapter, config: ModelConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Our Linear's module name -> (down [sum r, in], up [out, sum r]) with alpha / r folded into `up`."""
    grouped: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for (layer, module), (a, b) in sorted(adapter.pairs.items()):
        linear, row = _fused_place(config, module)
        grouped.setdefault(f"layers.{layer}.{linear}", []).append((row, a, b))
    fused = {}
    for name, parts in grouped.items():
        linear = name.split(".", 2)[2]
        out_features = {
            "attention.wqkv": (config.n_heads + 2 * config.n_kv_heads) * config.head_dim,
            "attention.wo": config.dim,
            "feed_forward.w13": 2 * config.ffn_dim,
            "feed_forward.w2": config.dim,
        }[linear]
        down = torch.cat([a for _, a, _ in parts])
        up = torch.zeros(out_features, down.shape[0])
        rank = 0
        for row, a, b in parts:
            up[row : row + b.shape[0], rank : rank + a.shape[0]] = b * adapter.config.scale
            rank += a.shape[0]
        fused[name] = (down.contiguous(), up)
    return fused


def apply_adapter(model: torch.nn.Module, adapter: Adapter) -> dict[str, int]:
    """Put `adapter` into `model` (a model.layers.transformer.Transformer): merged into float32 weights, unmerged beside
    quantized ones (see the module doc). Returns how many Linears were merged and kept unmerged."""
    check_fits(adapter, model.config)
    counts = {"merged": 0, "unmerged": 0}
    modules = dict(model.named_modules())
    for name, (down, up) in fused_pairs(adapter, model.config).items():
        linear = modules[name]
        assert isinstance(linear, Linear), name
        if linear.weight.dtype == torch.float32:
            linear.merge_(up @ down)
            counts["merged"] += 1
        else:
            linear.set_low_rank(down, up)
            counts["unmerged"] += 1
    return counts


def attach_adapter(model: torch.nn.Module, adapter: Adapter, name: str) -> int:
    """Load `adapter` into `model` as per-request adapter `name`, applied only to the token rows of requests that
    name it (`Engine.submit(..., adapter=name)`); the weights stay as they are. Returns its slot."""
    check_fits(adapter, model.config)
    routing = model.adapter_routing
    if name in routing.names:
        raise AdapterError(f"{adapter.path}: an adapter named {name!r} is already loaded")
    slot = len(routing.names)
    modules = dict(model.named_modules())
    for module_name, (down, up) in fused_pairs(adapter, model.config).items():
        linear = modules[module_name]
        assert isinstance(linear, Linear), module_name
        linear.add_request_pair(routing, slot, down, up)
    routing.names.append(name)
    return slot
