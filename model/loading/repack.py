"""Per-architecture repacking, streamed: checkpoint-named tensors in, the Transformer's state out.

Two things happen to a checkpoint on its way to the engine: tensors the engine runs as one matrix are fused
(q/k/v, gate/up, MLA's query and kv down-projections), and the weights of `Linear` layers are quantized
when asked. Which tensors fuse into which parameter is declared by the layer classes themselves
(`checkpoint_sources`), so a new architecture adds classes, not cases here. A fused group is held until its
last member arrives; everything else passes straight through, so memory stays near one tensor group.

A GPTQ/AWQ weight arrives group-quantized (model/loading/gptq.py) and goes onto the int4 kernel as it is, with its
own scales and groups, when the model runs int4; any other precision dequantizes it first.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from model.config import ModelConfig
from model.layers.linear import Linear, pack_weight
from model.layers.transformer import Transformer
from model.loading.gptq import GroupQuantError, GroupQuantized
from model.loading.tensor_names import ModelLoadError

TensorStream = Iterator[tuple[str, torch.Tensor]]  # a tensor, or a GroupQuantized weight from a GPTQ/AWQ reader


class Repacker:
    """`Repacker(config, quant)(tensors)`: checked checkpoint tensors -> `Transformer.from_state`'s state.

    quant: None (float32), "int8" or "int4" for every Linear weight; the LM head is int8 in both quantized
    modes (at 4 bits it alone costs SmolLM2 +5% perplexity). Routers, norms, embeddings and MLA's wkv_b are
    not Linears and stay float32.
    """

    def __init__(self, config: ModelConfig, quant: str | None = None) -> None:
        with torch.device("meta"):  # module structure only, no memory
            model = Transformer(config)
        self.config, self.quant = config, quant
        self.sources: dict[str, tuple[str, ...]] = {}  # fused parameter -> its checkpoint tensors, in row order
        self.fused_into: dict[str, str] = {}  # checkpoint tensor -> the fused parameter it is part of
        for prefix, module in model.named_modules():
            for ours, parts in getattr(module, "checkpoint_sources", dict)().items():
                fused = f"{prefix}.{ours}"
                self.sources[fused] = tuple(f"{prefix}.{part}" for part in parts)
                self.fused_into.update((f"{prefix}.{part}", fused) for part in parts)
        self.quantized = (
            {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, Linear)}
            if quant
            else set()
        )

    def __call__(self, tensors: TensorStream) -> TensorStream:
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors:
            tensor = tensor if isinstance(tensor, GroupQuantized) else tensor.float()
            fused = self.fused_into.get(name)
            if fused is not None:
                parts = pending.setdefault(fused, {})
                parts[name] = tensor
                if len(parts) < len(self.sources[fused]):
                    continue
                del pending[fused]
                name, tensor = fused, _stack_rows(fused, [parts[part] for part in self.sources[fused]])
            yield from self._pack(name, tensor)
        assert not pending, f"incomplete fused groups: {sorted(pending)}"  # `checked` reports missing tensors first

    def _pack(self, name: str, tensor: torch.Tensor | GroupQuantized) -> TensorStream:
        if isinstance(tensor, GroupQuantized):
            if name in self.quantized and self.quant == "int4" and name != "output.weight":
                try:
                    packed, scales, order = tensor.to_int4_kernel()
                except GroupQuantError as e:
                    raise ModelLoadError(f"{name}: {e}") from e
                yield name, packed
                yield name.removesuffix("weight") + "scales", scales
                if order is not None:
                    yield name.removesuffix("weight") + "input_order", order
                return
            tensor = tensor.dequantize()  # fp32 or int8 asked for, or the head (int8 like any quantized model's)
        if name == "tok_embeddings.weight" and self.config.tie_embeddings and self.quant:
            yield from self._pack("output.weight", tensor)  # the tied head gets its own (8-bit) copy
        if name in self.quantized:
            weight, scales = pack_weight(tensor, "int8" if name == "output.weight" else self.quant)
            yield name, weight
            yield name.removesuffix("weight") + "scales", scales
        else:
            yield name, tensor


def _stack_rows(name: str, parts: list) -> torch.Tensor | GroupQuantized:
    """The parts of one fused Linear, rows stacked: group-quantized ones stay so; a mix is dequantized."""
    if all(isinstance(p, GroupQuantized) for p in parts):
        try:
            return GroupQuantized.cat(parts)
        except GroupQuantError as e:
            raise ModelLoadError(f"{name}: {e}") from e
    return torch.cat([p.dequantize() if isinstance(p, GroupQuantized) else p for p in parts])
