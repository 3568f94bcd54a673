"""A value model for the search: a small head on the policy's final hidden state that estimates how likely a partial
path is to reach the right answer, for the correctness layer where no verifier exists (word problems).

The head reads the final-normed hidden state of a path's last token (`Engine.hidden_states`, a prefill without
generation, prefix-cached) under the same adapter the steps ran with, standardizes it, and runs a linear layer or a
2-layer MLP to a logit. It is trained by `r1 train value` (app/train/value.py) on rollouts of training problems
labelled by whether their path reached the gold answer, and saved beside the adapter: `value_head.safetensors`
(tensors) + `value_head.json` (shape, what it was trained on, its held-out figures).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

HEAD_FILE = "value_head.safetensors"
HEAD_CONFIG = "value_head.json"


class ValueModelError(ValueError):
    """A value-head directory is missing, corrupt, or does not fit the model it is used with."""


@dataclass(frozen=True)
class ValueHeadConfig:
    dim: int  # the model's hidden size
    hidden: int = 64  # the MLP's hidden width; 0 = a linear head
    adapter: bool = False  # the features were taken with the reasoning adapter on
    info: dict[str, Any] = field(default_factory=dict)  # provenance and held-out figures (written by training)


class ValueHead(nn.Module):
    """standardized hidden state [B, dim] -> logit [B] of "this path reaches the right answer"."""

    def __init__(self, config: ValueHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.dim))
        self.register_buffer("std", torch.ones(config.dim))
        if config.hidden:
            self.net = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(config.dim, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net((hidden.float() - self.mean) / self.std).squeeze(-1)

    def probabilities(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(self(hidden))

    def save(self, directory: str | Path) -> Path:
        """Write HEAD_FILE and HEAD_CONFIG into `directory` (created), each atomically."""
        from safetensors.torch import save_file

        directory = Path(directory).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{HEAD_FILE}.tmp"
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(directory / HEAD_FILE)
        tmp = directory / f".{HEAD_CONFIG}.tmp"
        tmp.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        tmp.replace(directory / HEAD_CONFIG)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ValueHead:
        """Read a head saved by `save`. Raises ValueModelError naming the file that is missing or wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory).expanduser()
        config_path, weights_path = directory / HEAD_CONFIG, directory / HEAD_FILE
        try:
            raw = json.loads(config_path.read_text())
            config = ValueHeadConfig(
                dim=int(raw["dim"]),
                hidden=int(raw.get("hidden", 64)),
                adapter=bool(raw.get("adapter", False)),
                info=dict(raw.get("info", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueModelError(f"cannot read value head config {config_path}: {e}") from e
        head = cls(config)
        try:
            head.load_state_dict(load_file(str(weights_path)))
        except (OSError, SafetensorError, RuntimeError) as e:
            raise ValueModelError(f"cannot read value head {weights_path}: {e}") from e
        return head.eval()


def has_value_head(directory: str | Path | None) -> bool:
    return directory is not None and (Path(directory).expanduser() / HEAD_FILE).is_file()


class ValueModel:
    """A value head over a backend: `__call__(prompts)` -> the head's probability per path prompt (token ids), the
    hidden states taken in one prefix-cached batch under `adapter`. Scores are memoized per prompt, since the
    search scores its finished paths again each iteration."""

    def __init__(self, head: ValueHead, backend, adapter: str | None = None) -> None:
        if not hasattr(backend, "hidden_states"):
            raise ValueModelError(
                f"{getattr(backend, 'name', backend)} cannot give hidden states (a value head needs the local engine)"
            )
        dim = getattr(getattr(backend, "config", None), "dim", head.config.dim)
        if dim != head.config.dim:
            raise ValueModelError(f"the value head reads {head.config.dim}-wide hidden states; the model's are {dim}")
        if head.config.adapter != (adapter is not None):
            log.warning(
                "value head trained %s the reasoning adapter, used %s it",
                "with" if head.config.adapter else "without",
                "with" if adapter is not None else "without",
            )
        self.head, self.backend, self.adapter = head, backend, adapter
        self._scores: dict[tuple[int, ...], float] = {}

    def __call__(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        keys = [tuple(int(t) for t in p) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._scores))
        if todo:
            hidden = self.backend.hidden_states([list(k) for k in todo], adapter=self.adapter)
            for key, p in zip(todo, self.head.probabilities(hidden).tolist()):
                self._scores[key] = p
        return [self._scores[k] for k in keys]
