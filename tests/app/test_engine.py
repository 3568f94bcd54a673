"""`load_engine`: settings for MoE routing (expert capacity, per-task router bias) reach the engine."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from app import Settings
from app.engine import load_engine, read_router_bias
from model.moe import Router
from tests.model.tiny import save_word_tokenizer, tiny_model


def test_expert_capacity_and_router_bias_settings_reach_every_router(tmp_path):
    tiny_model("deepseek_v3").save_pretrained(tmp_path / "model")
    save_word_tokenizer(tmp_path / "model")
    bias = torch.randn(2, 16)
    save_file({"code": bias}, tmp_path / "bias.safetensors")
    settings = Settings(model=str(tmp_path / "model"), quant="fp32", threads=1, cache_dir=str(tmp_path / "cache"),
                        expert_capacity=7, router_bias=str(tmp_path / "bias.safetensors"))
    engine = load_engine(settings)
    routers = [m for m in engine.model.modules() if isinstance(m, Router)]
    assert [r.capacity for r in routers] == [7, 7]
    assert torch.equal(routers[1].task_bias[1], bias[1])  # "code" is row 1 of the table
    engine.close()


def test_router_bias_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.safetensors"):
        read_router_bias(tmp_path / "missing.safetensors")
    save_file({"poetry": torch.zeros(2, 16)}, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match="odd.safetensors.*math, code, chat"):
        read_router_bias(tmp_path / "odd.safetensors")
