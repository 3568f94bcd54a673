"""Checkpoint loading: GGUF parity with transformers, quant round trips, HF dirs, the weight cache, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from model.layers.rope import deinterleave_rows
from model.loading.checkpoint import ModelLoadError, ModelNotFoundError, load_checkpoint
from model.loading.gguf import dequantize_tensor, load_gguf, open_gguf
from model.loading.tensor_names import GGUF_NAMES, HF_NAMES, expected_shapes
from model.loading.weight_cache import WeightCache, cache_key
from tests.model.loading import reference_quants as quants

torch.set_num_threads(1)

OURS_TO_GGUF = GGUF_NAMES.inverse()


# ---- helpers --------------------------------------------------------------------------------
def hf_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        ours = HF_NAMES.map(name)
        assert ours is not None, name
        out[ours] = t
    return out


def ours_to_gguf_name(name: str) -> str:
    got = OURS_TO_GGUF.map(name)
    if got is None:
        raise KeyError(name)
    return got


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """What llama.cpp's convert_hf_to_gguf.LlamaModel.permute does to q/k (copied, not imported)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_hf_model(arch: str, vocab: int = 256, tie: bool = False, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    )
    cfg = transformers.LlamaConfig(**common) if arch == "llama" else transformers.Qwen2Config(**common)
    cls = transformers.LlamaForCausalLM if arch == "llama" else transformers.Qwen2ForCausalLM
    model = cls(cfg).eval()
    with torch.no_grad():  # norms and biases are constant at init; make them informative
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p))
    return model


def write_tiny_gguf(
    path: Path,
    model,
    arch: str,
    *,
    drop: str | None = None,
    arch_override: str | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> dict:
    """Write `model` as a GGUF file the way llama.cpp's converter lays it out (F32 tensors)."""
    cfg = model.config
    ours = hf_to_ours(
        {k: v for k, v in model.state_dict().items() if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    )
    w = gguf.GGUFWriter(str(path), arch_override or arch)
    a = arch_override or arch
    w.add_uint32(f"{a}.block_count", cfg.num_hidden_layers)
    w.add_uint32(f"{a}.context_length", cfg.max_position_embeddings)
    w.add_uint32(f"{a}.embedding_length", cfg.hidden_size)
    w.add_uint32(f"{a}.feed_forward_length", cfg.intermediate_size)
    w.add_uint32(f"{a}.attention.head_count", cfg.num_attention_heads)
    w.add_uint32(f"{a}.attention.head_count_kv", cfg.num_key_value_heads)
    w.add_float32(f"{a}.rope.freq_base", 10000.0)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32(f"{a}.vocab_size", cfg.vocab_size)
    for name, t in ours.items():
        if name == drop:
            continue
        t = t.detach().float()
        if arch == "llama" and ".attention.wq." in name:
            t = llama_cpp_permute(t, cfg.num_attention_heads)
        elif arch == "llama" and ".attention.wk." in name:
            t = llama_cpp_permute(t, cfg.num_key_value_heads)
        w.add_tensor(ours_to_gguf_name(name), t.numpy())
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ours


def write_single_tensor_gguf(path: Path, name: str, data: np.ndarray, raw_dtype=None) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_single_tensor(path: Path) -> torch.Tensor:
    reader = open_gguf(path)
    (t,) = reader.tensors
    return dequantize_tensor(t, path)


def assert_cache_clean(cache_dir: Path) -> None:
    """No temp files and no weight/meta entries (the fingerprint index may exist)."""
    leftovers = [p.name for p in cache_dir.iterdir() if p.name != "fingerprints.json"] if cache_dir.exists() else []
    assert leftovers == [], leftovers


# ---- the default model ---------------------------------------------------------------------
def test_default_gguf_matches_transformers(default_checkpoint, reference_hf_model):
    model = reference_hf_model
    ref = hf_to_ours(model.state_dict())
    cfg = default_checkpoint.config
    assert cfg.tie_embeddings and cfg.arch == "llama"
    ref.pop("output.weight")  # transformers materialises the tied head
    assert set(ref) == set(default_checkpoint.tensors)
    assert len(ref) == 2 + 9 * cfg.n_layers
    for name, t in ref.items():
        ours = default_checkpoint.tensors[name]
        assert ours.dtype == torch.float32 and ours.shape == t.shape, name
        assert torch.equal(ours, t), f"{name}: max diff {(ours - t).abs().max()}"
    assert (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (
        model.config.hidden_size,
        model.config.num_attention_heads,
        model.config.num_key_value_heads,
        model.config.intermediate_size,
    )


def test_second_load_comes_from_cache(default_checkpoint, default_gguf_path, loading_cache_dir, load_times):
    t0 = time.perf_counter()
    again = load_checkpoint(default_gguf_path, cache_dir=loading_cache_dir)
    load_times["second"] = time.perf_counter() - t0
    print(f"\ndefault model load: first {load_times['first']:.2f} s, second (cached) {load_times['second']:.2f} s")
    assert again.fingerprint == default_checkpoint.fingerprint
    assert again.config == default_checkpoint.config
    assert set(again.tensors) == set(default_checkpoint.tensors)
    for name in ("tok_embeddings.weight", "layers.0.attention.wq.weight", "layers.29.feed_forward.w2.weight"):
        assert torch.equal(again.tensors[name], default_checkpoint.tensors[name])
    text = "Hello, wörld! 😀"
    assert again.tokenizer.encode(text) == default_checkpoint.tokenizer.encode(text)
    msgs = [{"role": "user", "content": "hi"}]
    assert again.tokenizer.apply_chat_template(msgs) == default_checkpoint.tokenizer.apply_chat_template(msgs)
    assert again.tokenizer.eos_token_ids == default_checkpoint.tokenizer.eos_token_ids
    # Cached tensors are copy-on-write maps: writing must not touch the file.
    again.tensors["norm.weight"].add_(1.0)
    third = load_checkpoint(default_gguf_path, cache_dir=loading_cache_dir)
    assert torch.equal(third.tensors["norm.weight"], default_checkpoint.tensors["norm.weight"])


def test_resolve_default_missing_package(monkeypatch):
    import importlib.util

    from model.loading import checkpoint

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="run.sh|pip install"):
        checkpoint.resolve_source("default")


# ---- quant types ----------------------------------------------------------------------------
ROUND_TRIP_TOL = {
    Q.F32: 0.0,
    Q.F16: 1e-3,
    Q.BF16: 1e-2,
    Q.Q8_0: 0.02,
    Q.Q5_0: 0.1,
    Q.Q5_1: 0.1,
    Q.Q4_0: 0.2,
    Q.Q4_1: 0.2,
}


@pytest.mark.parametrize("qtype", list(ROUND_TRIP_TOL), ids=lambda q: q.name)
def test_quant_round_trip(tmp_path, qtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64)).astype(np.float32)  # 8 rows, 64 cols (torch order)
    if qtype == Q.F32:
        write_single_tensor_gguf(tmp_path / "t.gguf", "blk.0.ffn_up.weight", x)
    elif qtype == Q.F16:
        write_single_tensor_gguf(tmp_path / "t.gguf", "blk.0.ffn_up.weight", x.astype(np.float16))
    else:
        raw = gguf.quants.quantize(x, qtype)
        write_single_tensor_gguf(tmp_path / "t.gguf", "blk.0.ffn_up.weight", raw, raw_dtype=qtype)
    y = read_single_tensor(tmp_path / "t.gguf")
    assert y.dtype == torch.float32 and tuple(y.shape) == x.shape
    assert np.abs(y.numpy() - x).max() <= ROUND_TRIP_TOL[qtype] * np.abs(x).max() + 1e-7
    if qtype.name in quants.REFERENCE_DEQUANTIZERS:
        _, size, ref = quants.REFERENCE_DEQUANTIZERS[qtype.name]
        blocks = gguf.quants.quantize(x, qtype).reshape(-1, size)
        np.testing.assert_array_equal(ref(blocks).reshape(x.shape), y.numpy())


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1"])
def test_dequantize_matches_reference_on_random_blocks(tmp_path, name):
    """gguf can't quantize K-quants; random block bytes (with sane f16 scales) pin the layout instead."""
    block, size, ref = quants.REFERENCE_DEQUANTIZERS[name]
    rng = np.random.default_rng(1)
    n_rows, blocks_per_row = 3, 2
    raw = rng.integers(0, 256, size=(n_rows * blocks_per_row, size), dtype=np.uint8)
    scale_offsets = {"Q4_K": (0, 2), "Q6_K": (208,), "Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2)}[name]
    for off in scale_offsets:  # random bytes could be inf/nan as f16
        raw[:, off : off + 2] = rng.uniform(-0.1, 0.1, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    qtype = Q[name]
    write_single_tensor_gguf(tmp_path / "k.gguf", "blk.0.ffn_down.weight", raw.reshape(n_rows, -1), raw_dtype=qtype)
    y = read_single_tensor(tmp_path / "k.gguf")
    assert tuple(y.shape) == (n_rows, blocks_per_row * block)
    np.testing.assert_allclose(y.numpy().reshape(-1), ref(raw), rtol=1e-6, atol=1e-7)


def test_unsupported_type_is_named(tmp_path):
    raw = np.zeros((2, 18), dtype=np.uint8)  # IQ4_NL: 32 values in 18 bytes
    write_single_tensor_gguf(tmp_path / "iq.gguf", "blk.0.attn_q.weight", raw, raw_dtype=Q.IQ4_NL)
    with pytest.raises(ModelLoadError, match=r"blk\.0\.attn_q\.weight.*IQ4_NL"):
        read_single_tensor(tmp_path / "iq.gguf")


# ---- tiny GGUF models: names, shape order, llama permutation --------------------------------
@pytest.mark.parametrize("arch,tie", [("llama", False), ("llama", True), ("qwen2", False)])
def test_tiny_gguf_matches_hf_weights(tmp_path, arch, tie):
    model = tiny_hf_model(arch, tie=tie)
    ours = write_tiny_gguf(tmp_path / "m.gguf", model, arch)
    config, tensors = load_gguf(tmp_path / "m.gguf")
    assert config.arch == arch and config.tie_embeddings == tie and config.qkv_bias == (arch == "qwen2")
    assert set(tensors) == set(ours) == set(expected_shapes(config))
    for name, t in ours.items():
        assert torch.equal(tensors[name], t.float()), name


def test_llama3_rope_freqs_tensor_becomes_rope_scaling(tmp_path):
    """llama.cpp stores Llama-3 RoPE scaling only as `rope_freqs.weight`; the config must get it back."""
    import math

    from model.config import RopeScaling

    model = tiny_hf_model("llama")
    head_dim, theta = 16, 10000.0
    # Converter formula (convert_hf_to_gguf.LlamaModel, rope_type llama3), restated here.
    factor, low, high, old = 8.0, 1.0, 4.0, 8192
    divisors = []
    for freq in 1.0 / (theta ** (np.arange(0, head_dim, 2) / head_dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            divisors.append(1.0)
        elif wavelen > old / low:
            divisors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    assert len(set(np.round(divisors, 6))) > 2  # exercises all three regions
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, model, "llama", extra={"rope_freqs.weight": np.array(divisors, dtype=np.float32)})
    config, tensors = load_gguf(path)
    assert config.rope_scaling == RopeScaling(
        kind="llama3", factor=factor, low_freq_factor=low, high_freq_factor=high, original_max_position_embeddings=old
    )
    assert "rope_freqs.weight" not in tensors


def test_deinterleaving_rope_rows_inverts_llama_cpp():
    w = torch.randn(6 * 8, 5)
    assert torch.equal(deinterleave_rows(llama_cpp_permute(w, 6), 8, 8), w)
    b = torch.randn(2 * 16)
    assert torch.equal(deinterleave_rows(llama_cpp_permute(b, 2), 16, 16), b)


# ---- HF directories -------------------------------------------------------------------------
@pytest.mark.parametrize("arch,tie,dtype", [("llama", True, torch.float32), ("qwen2", False, torch.bfloat16)])
def test_hf_dir_sharded_loads_same_tensors(tmp_path, reference_hf_tokenizer, arch, tie, dtype):
    model = tiny_hf_model(arch, vocab=len(reference_hf_tokenizer), tie=tie).to(dtype)
    d = tmp_path / "hf"
    model.save_pretrained(d, max_shard_size="2MB")
    reference_hf_tokenizer.save_pretrained(d)
    assert (d / "model.safetensors.index.json").is_file()
    ck = load_checkpoint(d, cache_dir=tmp_path / "cache")
    ref = hf_to_ours(model.state_dict())
    if tie:
        ref.pop("output.weight")
    assert set(ck.tensors) == set(ref)
    for name, t in ref.items():
        assert ck.tensors[name].dtype == torch.float32
        assert torch.equal(ck.tensors[name], t.float()), name
    assert ck.config.arch == arch and ck.config.tie_embeddings == tie
    assert ck.tokenizer.encode("hello") == reference_hf_tokenizer.encode("hello", add_special_tokens=False)
    msgs = [{"role": "user", "content": "2+2?"}]
    assert ck.tokenizer.apply_chat_template(msgs) == reference_hf_tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    again = load_checkpoint(d, cache_dir=tmp_path / "cache")  # cached
    assert again.fingerprint == ck.fingerprint
    assert all(torch.equal(again.tensors[k], v) for k, v in ck.tensors.items())


def test_hf_dir_missing_tensor_is_named(tmp_path, reference_hf_tokenizer):
    from safetensors.torch import load_file, save_file

    model = tiny_hf_model("llama", vocab=len(reference_hf_tokenizer))
    d = tmp_path / "hf"
    model.save_pretrained(d)
    reference_hf_tokenizer.save_pretrained(d)
    sd = load_file(d / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"layers\.1\.feed_forward\.w3\.weight"):
        load_checkpoint(d, cache_dir=tmp_path / "cache")
    assert_cache_clean(tmp_path / "cache")


def test_hf_dir_unknown_architecture(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(ModelLoadError, match="mamba") as e:
        load_checkpoint(d, cache_dir=tmp_path / "cache")
    assert str(d) in str(e.value)
    assert_cache_clean(tmp_path / "cache")


# ---- weight cache ---------------------------------------------------------------------------
def test_weight_cache_round_trip(tmp_path):
    cache = WeightCache(tmp_path)
    key = cache_key("ab" * 32, "int8")
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randint(-128, 127, (7,), dtype=torch.int8),
        "c": torch.randn(2).half(),
    }
    assert cache.load(key) is None
    assert cache.save(key, tensors, {"note": "x"})
    got, meta = cache.load_with_meta(key)
    assert meta["note"] == "x"
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)
    assert cache.load(cache_key("ab" * 32, "fp32")) is None  # the variant is part of the key


def disk_full(*args):
    raise OSError(28, "No space left on device")


def test_weight_cache_save_failure_leaves_nothing(tmp_path, monkeypatch):
    import model.loading.weight_cache as wc

    monkeypatch.setattr(wc.os, "fsync", disk_full)  # the data written so far never reaches the disk
    cache = WeightCache(tmp_path / "c")
    assert cache.save(cache_key("cd" * 32, "fp32"), {"a": torch.ones(2)}) is False
    assert list((tmp_path / "c").iterdir()) == []


def test_load_survives_cache_write_failure(tmp_path, monkeypatch, reference_hf_tokenizer):
    import model.loading.weight_cache as wc

    monkeypatch.setattr(wc.os, "fsync", disk_full)
    model = tiny_hf_model("qwen2", vocab=len(reference_hf_tokenizer))
    d = tmp_path / "hf"
    model.save_pretrained(d)
    reference_hf_tokenizer.save_pretrained(d)
    ck = load_checkpoint(d, cache_dir=tmp_path / "cache")
    assert torch.equal(ck.tensors["norm.weight"], model.model.norm.weight.float())
    assert_cache_clean(tmp_path / "cache")


# ---- bad input -------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_checkpoint(tmp_path / "nope.gguf", cache_dir=tmp_path / "cache")


def test_corrupt_file_random_bytes(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="junk.gguf"):
        load_checkpoint(p, cache_dir=tmp_path / "cache")
    assert_cache_clean(tmp_path / "cache")


def test_corrupt_file_after_magic(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="bad.gguf"):
        load_checkpoint(p, cache_dir=tmp_path / "cache")
    assert_cache_clean(tmp_path / "cache")


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_gguf(tmp_path, fraction):
    # Same failure as the default model's first half copied out, at a fraction of the parse time.
    model = tiny_hf_model("llama")
    full = tmp_path / "full.gguf"
    write_tiny_gguf(full, model, "llama")
    data = full.read_bytes()
    p = tmp_path / "half.gguf"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError, match="half.gguf"):
        load_checkpoint(p, cache_dir=tmp_path / "cache")
    assert_cache_clean(tmp_path / "cache")


def test_gguf_unknown_architecture(tmp_path):
    model = tiny_hf_model("llama")
    write_tiny_gguf(tmp_path / "m.gguf", model, "llama", arch_override="mamba")
    with pytest.raises(ModelLoadError, match="mamba") as e:
        load_checkpoint(tmp_path / "m.gguf", cache_dir=tmp_path / "cache")
    assert "m.gguf" in str(e.value)
    assert_cache_clean(tmp_path / "cache")


def test_gguf_missing_tensor(tmp_path):
    model = tiny_hf_model("llama")
    write_tiny_gguf(tmp_path / "m.gguf", model, "llama", drop="layers.1.attention.wk.weight")
    with pytest.raises(ModelLoadError, match=r"layers\.1\.attention\.wk\.weight"):
        load_checkpoint(tmp_path / "m.gguf", cache_dir=tmp_path / "cache")
    assert_cache_clean(tmp_path / "cache")


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_checkpoint(tmp_path / "empty", cache_dir=tmp_path / "cache")
