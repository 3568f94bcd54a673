"""`r1 train value`: fit a value head (reasoning/value_model.py) on labelled rollouts (app/train/value_data.py).

Labels: "final" (each prefix carries its path's outcome: reached the gold answer or not) or "on_track" (each prefix
its own process label: every value computed so far is one the worked solution computes; app/train/value_data.py).
Features are the policy's final-normed hidden states at the end of every prefix of every path (one forward per
path: position e - 1 of the whole path is prefix [:e]'s last token), under the reasoning adapter when the engine
holds one, as the search will read them. Problems, not prefixes, are split into train and held-out (by question
hash), so the held-out figures (AUC, accuracy, log-loss) are on rollouts of problems the head never saw. The head is
a full-batch Adam fit of a weighted binary cross-entropy (positives are rare: they are weighed up to balance).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from app.train.value_data import read_value_rows
from reasoning.search import REASONING_ADAPTER, WORD_PROBLEM_ADAPTER
from reasoning.value_model import ValueHead, ValueHeadConfig


@dataclass(frozen=True)
class HeadFitConfig:
    hidden: int = 64  # 0 = linear
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0


@dataclass(frozen=True)
class ValueTrainConfig:
    data: str
    out: str
    hidden: int = 64
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-2
    heldout: float = 0.2  # share of problems held out
    seed: int = 0
    label: str = "final"  # "final" | "on_track" (see the module doc)

    def fit(self) -> HeadFitConfig:
        return HeadFitConfig(self.hidden, self.epochs, self.lr, self.weight_decay, self.seed)


def fit_head(
    features: torch.Tensor, labels: torch.Tensor, config: HeadFitConfig, adapter: bool = False
) -> tuple[ValueHead, list[float]]:
    """A head fitted to (features [N, dim], labels [N] in {0, 1}); returns it and the training loss per epoch."""
    if features.ndim != 2 or len(features) != len(labels) or not len(labels):
        raise ValueError(f"need features [N, dim] and N labels, got {list(features.shape)} and {len(labels)}")
    torch.manual_seed(config.seed)
    head = ValueHead(ValueHeadConfig(dim=features.shape[1], hidden=config.hidden, adapter=adapter))
    head.mean.copy_(features.mean(0))
    head.std.copy_(features.std(0).clamp(min=1e-4) if len(features) > 1 else torch.ones(features.shape[1]))
    y = labels.float()
    positives = y.sum().item()
    pos_weight = torch.tensor((len(y) - positives) / positives if 0 < positives < len(y) else 1.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    head.train()
    for _ in range(config.epochs):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(features), y, pos_weight=pos_weight)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return head.eval(), losses


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """ROC AUC (the chance a positive outscores a negative, ties half); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def evaluate(head: ValueHead, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """AUC, accuracy at 0.5, balanced accuracy and log-loss of `head` on (features, labels)."""
    p = head.probabilities(features)
    y = labels.float()
    predicted = (p >= 0.5).float()
    recall = [((predicted == c) & (y == c)).sum().item() / max((y == c).sum().item(), 1) for c in (0.0, 1.0)]
    return {
        "rows": len(y),
        "positives": int(y.sum().item()),
        "auc": auc(p.tolist(), labels.tolist()),
        "accuracy": (predicted == y).float().mean().item(),
        "balanced_accuracy": sum(recall) / 2,
        "log_loss": F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), y).item(),
    }


def is_heldout(question: str, share: float) -> bool:
    digest = hashlib.sha256(("value-heldout:" + question.strip()).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


LABELS = ("final", "on_track")


def path_features(
    engine,
    rows: Sequence[dict],
    adapter: str | None,
    label: str = "final",
    progress: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features [prefixes, dim], labels, each prefix's question) of every row's prefixes. Raises ValueError for an
    unknown label or rows without it."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; choose one of {', '.join(LABELS)}")
    if label == "on_track" and not all("on_track" in row for row in rows):
        raise ValueError("on_track labels need rows built from problems with worked solutions (GSM8K's)")
    features, labels, questions = [], [], []
    start = time.perf_counter()
    for i, row in enumerate(rows):
        hidden = engine.logits(row["ids"], adapter=adapter, hidden=True)
        features.append(hidden[[e - 1 for e in row["ends"]]])
        labels += row["on_track"] if label == "on_track" else [row["label"]] * len(row["ends"])
        questions += [row["question"]] * len(row["ends"])
        if progress and ((i + 1) % 50 == 0 or i + 1 == len(rows)):
            progress(f"features: {i + 1}/{len(rows)} paths, {time.perf_counter() - start:.0f} s")
    return torch.cat(features), torch.tensor(labels), questions


def train_value(engine, config: ValueTrainConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Fit a head on `config.data` with `engine` (the policy) and save it into `config.out`; returns the figures."""
    rows = read_value_rows(config.data)
    if not rows:
        raise ValueError(f"{config.data}: no rows")
    # the rows are math word problems: their steps ran with whichever per-request adapter the engine holds
    held = getattr(engine, "adapters", ())
    adapter = next((name for name in (REASONING_ADAPTER, WORD_PROBLEM_ADAPTER) if name in held), None)
    features, labels, questions = path_features(engine, rows, adapter, config.label, progress)
    held = torch.tensor([is_heldout(q, config.heldout) for q in questions])
    if held.all() or not held.any():
        raise ValueError(
            f"{len(set(questions))} problems cannot be split {config.heldout:.0%} held out; use more problems"
        )
    head, losses = fit_head(features[~held], labels[~held], config.fit(), adapter=adapter is not None)
    data_hash = hashlib.sha256(Path(config.data).expanduser().read_bytes()).hexdigest()
    figures = {
        "train": evaluate(head, features[~held], labels[~held]),
        "heldout": evaluate(head, features[held], labels[held]),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }
    info = {
        "data": str(config.data),
        "data_sha256": data_hash,
        "paths": len(rows),
        "problems": len(set(questions)),
        "heldout_problems": len({q for q, h in zip(questions, held) if h}),
        "model": getattr(engine, "name", ""),
        "adapter": str(getattr(engine, "adapter_paths", {}).get(adapter, "")),
        "label": config.label,
        "fit": vars(config.fit()) | {"heldout_share": config.heldout},
        **figures,
    }
    saved = ValueHead(dataclasses.replace(head.config, info=info))
    saved.load_state_dict(head.state_dict())
    return {"out": str(saved.save(config.out)), **info}
