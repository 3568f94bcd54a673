"""LoRA adapters in PEFT's format: an adapter `peft` saved loads into our engine with the logits of
transformers + peft (float32: merged), holds its effect unmerged beside int8 weights, and bad adapters fail
with the tensor or key named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from model.loading.lora import AdapterError, read_adapter
from tests.model.test_engine_parity import assert_logits_close, random_ids, reference_logits
from tests.model.tiny import save_word_tokenizer, tiny_model

peft = pytest.importorskip("peft")


def peft_model(family: str, targets: list[str], base_dir, r: int = 4, alpha: float = 8.0):
    """A tiny transformers model, saved with a tokenizer into `base_dir`, wrapped in a peft LoRA whose A and B
    are both random (B is zero at peft's init)."""
    base = tiny_model(family)
    base.save_pretrained(base_dir)  # before wrapping: peft renames the wrapped layers' weights in place
    save_word_tokenizer(base_dir)
    wrapped = peft.get_peft_model(
        base, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    return wrapped.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(peft model, base directory, adapter directory) for a q/v adapter on the tiny llama."""
    base_dir, adapter_dir = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("adapter")
    wrapped = peft_model("llama", ["q_proj", "v_proj"], base_dir)
    wrapped.save_pretrained(adapter_dir)
    return wrapped, base_dir, adapter_dir


def load(base_dir, tmp_path, **kwargs):
    return model.load(base_dir, threads=1, cache_dir=tmp_path / "cache", kv_cache_mb=16, compiled_step=False, **kwargs)


@pytest.mark.parametrize(
    "family,targets",
    [
        ("llama", ["q_proj", "v_proj"]),
        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("qwen2", ["k_proj", "up_proj"]),
    ],
)
def test_peft_adapter_matches_transformers_plus_peft(family, targets, tmp_path):
    wrapped = peft_model(family, targets, tmp_path / "base")
    wrapped.save_pretrained(tmp_path / "adapter")
    ids = random_ids(30, 3)
    engine = load(tmp_path / "base", tmp_path, quant=None, adapter=tmp_path / "adapter")
    try:
        expected = reference_logits(wrapped, ids)
        assert_logits_close(engine.logits(ids), expected)
        with wrapped.disable_adapter():
            base = reference_logits(wrapped, ids)
        assert (expected - base).abs().max() > 0.05 * expected.abs().max(), "the adapter must change the logits"
    finally:
        engine.close()


def test_unmerged_adapter_beside_int8_weights_holds_its_effect(saved, tmp_path):
    wrapped, base_dir, adapter_dir = saved
    ids = random_ids(30, 4)
    expected = reference_logits(wrapped, ids)
    with_adapter = load(base_dir, tmp_path, quant="int8", adapter=adapter_dir)
    without = load(base_dir, tmp_path, quant="int8")
    try:
        linears = [m for m in with_adapter.model.modules() if getattr(m, "lora_down", None) is not None]
        assert len(linears) == 3  # one fused q/k/v Linear per layer carries q's and v's pairs
        error = (with_adapter.logits(ids) - expected).abs().max()
        base_error = (without.logits(ids) - expected).abs().max()
        assert error < 0.2 * base_error, f"int8 + adapter is {error:.3g} off, int8 alone {base_error:.3g}"
    finally:
        with_adapter.close()
        without.close()


def test_native_decode_step_declines_an_unmerged_adapter(saved, tmp_path):
    from model.serving.compiled_step import unsupported_reason

    _, base_dir, adapter_dir = saved
    engine = load(base_dir, tmp_path, quant="int8", adapter=adapter_dir)
    try:
        cache = engine.model.new_cache(max_seq_len=64, capacity_bytes=1 << 20)
        assert "LoRA" in unsupported_reason(engine.model, cache)
    finally:
        engine.close()
    merged = load(base_dir, tmp_path, quant=None, adapter=adapter_dir)
    try:
        assert unsupported_reason(merged.model, merged.model.new_cache(max_seq_len=64, capacity_bytes=1 << 20)) is None
    finally:
        merged.close()


def corrupt(adapter_dir, tmp_path, config=None, tensors=None):
    """A copy of the adapter with its config updated by `config` and its tensors replaced by `tensors(old)`."""
    out = tmp_path / "bad"
    out.mkdir(exist_ok=True)
    raw = json.loads((adapter_dir / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**raw, **(config or {})}))
    old = load_file(str(adapter_dir / "adapter_model.safetensors"))
    save_file(tensors(old) if tensors else old, str(out / "adapter_model.safetensors"))
    return out


Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    "case,message",
    [
        (dict(config={"target_modules": ["q_proj", "rotary"]}), "unknown target module 'rotary'"),
        (dict(config={"target_modules": ["q_proj"]}), "v_proj, not among target_modules"),
        (
            dict(tensors=lambda t: {**t, f"{Q0}.lora_A.weight": t[f"{Q0}.lora_A.weight"][:, :10].contiguous()}),
            "layers.0.self_attn.q_proj.lora_A has shape [4, 10], expected [4, 64]",
        ),
        (
            dict(tensors=lambda t: {k: v for k, v in t.items() if k != f"{Q0}.lora_B.weight"}),
            "layer 0 q_proj has no lora_B",
        ),
        (
            dict(tensors=lambda t: {**t, "base_model.model.lm_head.weight": torch.zeros(2, 2)}),
            "unexpected tensor 'base_model.model.lm_head.weight'",
        ),
        (dict(config={"r": 8}), "lora_A has shape [4, 64], expected [8, 64]"),
        (dict(config={"use_dora": True}), "use_dora=true is not supported"),
    ],
)
def test_bad_adapters_fail_naming_the_problem(saved, tmp_path, case, message):
    _, base_dir, adapter_dir = saved
    bad = corrupt(adapter_dir, tmp_path, **case)
    with pytest.raises(AdapterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(base_dir, tmp_path, quant=None, adapter=bad)


def test_unreadable_adapter_files_are_named(saved, tmp_path):
    _, _, adapter_dir = saved
    with pytest.raises(AdapterError, match="not a directory"):
        read_adapter(tmp_path / "missing")
    bad = corrupt(adapter_dir, tmp_path)
    (bad / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterError, match="cannot read .*adapter_model.safetensors"):
        read_adapter(bad)
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="cannot read .*adapter_config.json"):
        read_adapter(bad)


def test_adapter_for_a_deeper_model_is_refused(saved, tmp_path):
    _, base_dir, adapter_dir = saved
    bad = corrupt(
        adapter_dir,
        tmp_path,
        tensors=lambda t: {
            **t,
            **{k.replace("layers.0.", "layers.7."): v.clone() for k, v in t.items() if "layers.0." in k},
        },
    )
    with pytest.raises(AdapterError, match="layers.7.self_attn.q_proj: the model has 3 layers"):
        load(base_dir, tmp_path, quant=None, adapter=bad)
