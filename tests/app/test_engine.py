"""`load_engine`: settings for MoE routing (expert capacity, per-task router bias) and the LoRA adapter reach the engine."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from app import Settings
from app.engine import load_engine, read_router_bias
from model.layers.moe import Router
from reasoning.search import REASONING_ADAPTER, WORD_PROBLEM_ADAPTER
from tests.model.tiny import save_word_tokenizer, tiny_model


def test_expert_capacity_and_router_bias_settings_reach_every_router(tmp_path):
    tiny_model("deepseek_v3").save_pretrained(tmp_path / "model")
    save_word_tokenizer(tmp_path / "model")
    bias = torch.randn(2, 16)
    save_file({"code": bias}, tmp_path / "bias.safetensors")
    settings = Settings(
        model=str(tmp_path / "model"),
        quant="fp32",
        threads=1,
        cache_dir=str(tmp_path / "cache"),
        expert_capacity=7,
        router_bias=str(tmp_path / "bias.safetensors"),
    )
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


def test_adapter_setting_from_the_environment_reaches_the_engine(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_model("llama")
    base.save_pretrained(tmp_path / "model")
    save_word_tokenizer(tmp_path / "model")
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["v_proj"]))
    wrapped.save_pretrained(tmp_path / "adapter")
    settings = Settings.from_env(
        {
            "R1_ADAPTER": str(tmp_path / "adapter"),
            "R1_MODEL": str(tmp_path / "model"),
            "R1_QUANT": "int8",
            "R1_THREADS": "1",
            "R1_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    engine = load_engine(settings)  # scope "reasoning" (default): a per-request adapter; base weights untouched
    linears = [m for m in engine.model.modules() if hasattr(m, "lora_down")]
    assert engine.adapters == (REASONING_ADAPTER,)
    assert sum(m.lora_down is not None for m in linears) == 0 and sum(bool(m.request_pairs) for m in linears) == 3
    engine.close()
    engine = load_engine(settings.override(adapter_scope="word-problems"))  # per request, under its own name
    assert engine.adapters == (WORD_PROBLEM_ADAPTER,)
    engine.close()
    engine = load_engine(settings.override(adapter_scope="all"))  # every request: beside the int8 weights
    linears = [m for m in engine.model.modules() if hasattr(m, "lora_down")]
    assert engine.adapters == () and sum(m.lora_down is not None for m in linears) == 3
    engine.close()
    with pytest.raises(ValueError, match="adapter not found: .*nowhere"):
        load_engine(settings.override(adapter=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="unknown adapter scope 'chat'; choose one of reasoning, word-problems, all"):
        load_engine(settings.override(adapter_scope="chat"))


def test_adapter_flags_reach_the_settings(monkeypatch, capsys):
    from ui.cli import _settings, build_parser

    monkeypatch.setenv("R1_ADAPTER", "/some/adapter")
    parse = build_parser().parse_args
    assert _settings(parse(["generate", "--prompt", "hi"])).adapter == "/some/adapter"
    assert _settings(parse(["generate", "--prompt", "hi"])).adapter_scope == "reasoning"
    assert _settings(parse(["generate", "--prompt", "hi", "--adapter-scope", "all"])).adapter_scope == "all"
    scoped = parse(["solve", "x", "--adapter-scope", "word-problems"])
    assert _settings(scoped).adapter_scope == "word-problems"
    assert _settings(parse(["generate", "--prompt", "hi", "--no-adapter"])).adapter is None
    with pytest.raises(SystemExit):
        parse(["generate", "--help"])
    assert "only reasoning requests" in " ".join(capsys.readouterr().out.split())


def test_draft_settings_from_the_environment_reach_the_scheduler(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    save_word_tokenizer(tmp_path / "model")
    settings = Settings.from_env(
        {
            "R1_MODEL": str(tmp_path / "model"),
            "R1_QUANT": "fp32",
            "R1_THREADS": "1",
            "R1_CACHE_DIR": str(tmp_path / "cache"),
            "R1_PROMPT_LOOKUP": "0",
        }
    )
    engine = load_engine(settings)
    drafts = engine._scheduler.config.drafts
    assert (drafts.prompt_lookup, drafts.jump_forward) == (False, True)
    engine.close()
    with pytest.raises(ValueError, match="R1_JUMP_FORWARD='maybe'"):
        Settings.from_env({"R1_JUMP_FORWARD": "maybe"})
