"""`r1 train value`: the head's fit lowers its loss and separates a separable set on held-out rows; the whole
command reads rows, takes features from the engine (with the reasoning adapter), splits by problem and saves the
head with its figures where `solve` finds it."""

from __future__ import annotations

import json

import pytest
import torch

from app.train.value import (
    HeadFitConfig,
    ValueTrainConfig,
    auc,
    evaluate,
    fit_head,
    train_value,
)
from reasoning.value_model import ValueHead


def test_auc_counts_ordered_pairs_and_ties():
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auc([0.1, 0.9], [1, 0]) == 0.0
    assert auc([0.5, 0.5, 0.2], [1, 0, 0]) == 0.75
    assert auc([0.3, 0.4], [0, 0]) is None


@pytest.mark.parametrize("hidden", [0, 16])
def test_fit_lowers_the_loss_and_separates_held_out_rows(hidden):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=g) * 3 + 1
    y = (x[:, 2] - 0.5 * x[:, 7] > 1.5).long()  # separable, positives a minority
    head, losses = fit_head(x[:300], y[:300], HeadFitConfig(hidden=hidden, epochs=200, lr=3e-2))
    assert losses[-1] < 0.4 * losses[0]
    held = evaluate(head, x[300:], y[300:])
    assert held["auc"] > 0.97 and held["balanced_accuracy"] > 0.9
    assert 0 < y.float().mean() < 0.5


@pytest.mark.parametrize("label", ["final", "on_track"])
def test_train_value_fits_on_engine_features_and_saves_beside_the_adapter(tmp_path, label):
    """Rows whose label is readable from the last token of every prefix (token 5: reached, 6: not; on track: the
    same, per prefix); features from a tiny llama holding a per-request reasoning adapter; the saved head scores
    held-out problems."""
    pytest.importorskip("peft")
    import model
    from reasoning.search import REASONING_ADAPTER
    from tests.model.loading.test_lora import peft_model

    peft_model("llama", ["q_proj", "v_proj"], tmp_path / "base").save_pretrained(tmp_path / "adapter")
    g = torch.Generator().manual_seed(1)
    rows = []
    for problem in range(40):
        for path in range(3):
            reached = (problem + path) % 3 == 0
            ids = torch.randint(7, 200, (24,), generator=g).tolist()
            ids[11] = ids[23] = 5 if reached else 6
            rows.append(
                {
                    "question": f"problem {problem}",
                    "gold": "1",
                    "answer": "1" if reached else "2",
                    "label": int(reached),
                    "greedy": path == 0,
                    "ids": ids,
                    "ends": [12, 24],
                    "on_track": [int(reached)] * 2,
                }
            )
    (tmp_path / "values.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = model.load(
        tmp_path / "base",
        quant=None,
        threads=1,
        cache_dir=tmp_path / "cache",
        kv_cache_mb=16,
        compiled_step=False,
        request_adapters={REASONING_ADAPTER: tmp_path / "adapter"},
    )
    try:
        report = train_value(
            engine,
            ValueTrainConfig(
                data=str(tmp_path / "values.jsonl"),
                out=str(tmp_path / "adapter"),
                hidden=8,
                epochs=150,
                lr=1e-2,
                heldout=0.25,
                label=label,
            ),
        )
        hidden = engine.hidden_states([rows[0]["ids"][:12]], adapter=REASONING_ADAPTER)
    finally:
        engine.close()
    assert 0 < report["heldout_problems"] < report["problems"] == 40 and report["paths"] == 120
    assert report["heldout"]["auc"] > 0.95 and report["loss_first_last"][1] < report["loss_first_last"][0]
    head = ValueHead.load(tmp_path / "adapter")
    assert head.config.adapter and head.config.info["heldout"] == report["heldout"]
    assert head.config.info["label"] == label
    assert (head.probabilities(hidden).item() > 0.5) == bool(rows[0]["label"])


def test_on_track_labels_need_rows_that_carry_them(tmp_path):
    from app.train.value import path_features

    row = {"question": "q", "label": 0, "ids": [1, 2, 3], "ends": [3]}
    with pytest.raises(ValueError, match="on_track labels need rows built from problems with worked solutions"):
        path_features(None, [row], None, "on_track")
    with pytest.raises(ValueError, match="unknown label 'best'"):
        path_features(None, [row], None, "best")
