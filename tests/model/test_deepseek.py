"""DeepSeek-V3/R1 checkpoints as R1 publishes them: FP8 block-scaled weights, multi-token-prediction layers to
skip, quantized loads that keep the router in fp32, and `r1 generate --model DIR` end to end."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from model.layers.linear import Linear
from model.layers.moe import Router
from model.loading import fp8
from tests.model.test_engine_parity import assert_logits_close
from tests.model.tiny import save_word_tokenizer, tiny_model

# Wider than one 128x128 block, with partial edge blocks: 160 = 128 + 32, 288 = 2 * 128 + 32.
FP8_SHAPE = dict(hidden_size=160, intermediate_size=288, moe_intermediate_size=144)


def deepseek_with(**overrides):
    return tiny_model("deepseek_v3", **overrides)


def is_fp8_in_r1(name: str, tensor: torch.Tensor) -> bool:
    """R1 stores every attention and expert matrix in FP8; embeddings, the LM head, norms and the router stay bf16."""
    return tensor.ndim == 2 and not name.endswith(("embed_tokens.weight", "lm_head.weight", "mlp.gate.weight"))


def write_fp8_checkpoint(reference, directory: Path) -> torch.nn.Module:
    """Save `reference` as an FP8 checkpoint (weights, weight_scale_inv per 128x128 block, quantization_config);
    return the transformers model of the dequantized weights it now stands for."""
    from transformers import DeepseekV3ForCausalLM

    reference.save_pretrained(directory)  # checkpoint names (one tensor per expert), as published
    original = {name: t for shard in directory.glob("model*.safetensors") for name, t in load_file(shard).items()}
    for shard in directory.glob("model*.safetensors*"):
        shard.unlink()
    stored, dequantized = {}, {}
    for name, tensor in original.items():
        if is_fp8_in_r1(name, tensor):
            weight, scale_inv = fp8.quantize_blocks(tensor.float())
            stored[name], stored[name + "_scale_inv"] = weight, scale_inv
            dequantized[name] = fp8.dequantize_blocks(weight, scale_inv, (128, 128))
        else:
            stored[name] = tensor.to(torch.bfloat16)
            dequantized[name] = stored[name].float()
    save_file(stored, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    }
    (directory / "config.json").write_text(json.dumps(config))
    with tempfile.TemporaryDirectory() as scratch:
        reference.save_pretrained(scratch)
        save_file(dequantized, Path(scratch) / "model.safetensors", metadata={"format": "pt"})
        return DeepseekV3ForCausalLM.from_pretrained(scratch, dtype=torch.float32).eval()


def reference_logits(reference, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference(torch.tensor([ids])).logits[0].float()


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deepseek-fp8")
    reference = write_fp8_checkpoint(deepseek_with(**FP8_SHAPE), directory)
    save_word_tokenizer(directory)
    return directory, reference


def test_fp8_block_dequantization_handles_partial_edge_blocks():
    weight = torch.randn(300, 200)
    q, scale_inv = fp8.quantize_blocks(weight)
    assert q.dtype == torch.float8_e4m3fn and scale_inv.shape == (3, 2)
    back = fp8.dequantize_blocks(q, scale_inv, (128, 128))
    # e4m3 keeps 3 mantissa bits: within 1/16 of each block's largest value
    for rows in (slice(0, 128), slice(256, 300)):
        for cols in (slice(0, 128), slice(128, 200)):
            assert (back[rows, cols] - weight[rows, cols]).abs().max() <= weight[rows, cols].abs().max() / 16
    with pytest.raises(ValueError, match="tile"):
        fp8.dequantize_blocks(q, scale_inv[:2], (128, 128))


def test_fp8_checkpoint_matches_its_dequantized_reference(fp8_dir, tmp_path):
    directory, reference = fp8_dir
    stored = load_file(directory / "model.safetensors")
    assert stored["model.layers.1.mlp.experts.3.down_proj.weight"].dtype == torch.float8_e4m3fn
    assert stored["model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"].shape == (2, 2)
    engine = model.load(directory, quant=None, threads=1, cache_dir=tmp_path)
    ids = [5, 17, 92, 3, 44, 150, 7, 7, 61, 200, 11]
    assert_logits_close(engine.logits(ids), reference_logits(reference, ids))


def test_fp8_checkpoint_loads_as_int8_by_default_and_stays_close(fp8_dir, tmp_path):
    directory, reference = fp8_dir
    engine = model.load(directory, threads=1, cache_dir=tmp_path)  # quant="auto"
    linears = [m for m in engine.model.modules() if isinstance(m, Linear)]
    assert linears and all(m.weight.dtype == torch.int8 for m in linears)
    ids = list(range(3, 40, 3))
    ours, expected = engine.logits(ids), reference_logits(reference, ids)
    assert (ours - expected).abs().max() < 0.05 * expected.abs().max()
    assert (ours.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_fp8_weight_without_its_scale_is_named(fp8_dir, tmp_path):
    directory, _ = fp8_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in directory.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    stored = load_file(broken / "model.safetensors")
    del stored["model.layers.0.self_attn.kv_b_proj.weight_scale_inv"]
    save_file(stored, broken / "model.safetensors")
    with pytest.raises(model.ModelLoadError, match=r"kv_b_proj\.weight.*weight_scale_inv"):
        model.load(broken, quant=None, cache_dir=tmp_path / "cache")


def test_multi_token_prediction_layers_are_skipped_with_a_log_line(tmp_path, caplog):
    reference = deepseek_with(num_nextn_predict_layers=1)
    reference.save_pretrained(tmp_path)
    save_word_tokenizer(tmp_path)
    # transformers builds no MTP module; R1's checkpoint has one as layer num_hidden_layers, as written here
    stored = load_file(tmp_path / "model.safetensors")
    mtp = {f"model.layers.3.{name}": torch.randn(8, 64) for name in ("eh_proj.weight", "shared_head.head.weight")}
    mtp["model.layers.3.mlp.experts.0.up_proj.weight"] = torch.randn(32, 64)
    save_file({**stored, **mtp}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="model.loading.hf_checkpoint"):
        engine = model.load(tmp_path, quant=None, threads=1, cache_dir=tmp_path / "cache")
    assert any("skipped 3 tensors of 1 multi-token-prediction layer" in r.getMessage() for r in caplog.records)
    ids = [9, 8, 7, 6, 5]
    assert_logits_close(engine.logits(ids), reference_logits(reference, ids))


def test_int4_load_quantizes_experts_but_never_the_router(tmp_path):
    reference = deepseek_with()
    reference.save_pretrained(tmp_path)
    save_word_tokenizer(tmp_path)
    engine = model.load(tmp_path, quant="int4", threads=1, cache_dir=tmp_path / "cache")
    routers = [m for m in engine.model.modules() if isinstance(m, Router)]
    assert len(routers) == 2 and all(r.weight.dtype == torch.float32 for r in routers)
    assert all(r.score_bias.dtype == torch.float32 for r in routers)
    expert = engine.model.layers[1].feed_forward.experts[0]
    assert expert.w13.weight.dtype == torch.uint8  # int4 packed
    ids = list(range(10, 60, 5))
    ours, expected = engine.logits(ids), reference_logits(reference, ids)
    # 4-bit groups of 32 on random weights (and a routing choice or two flipped by it): close, not equal
    similarity = torch.nn.functional.cosine_similarity(ours, expected, dim=-1)
    assert similarity.min() > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["bf16", "fp8"])
def test_cli_generate_runs_a_deepseek_v3_directory(checkpoint, tmp_path, reference_hf_tokenizer):
    """`r1 generate --model DIR` on DeepseekV3 checkpoints with a real tokenizer: the continuation transformers
    greedy-decodes from the same weights (FP8: from the dequantized ones)."""
    reference = deepseek_with(vocab_size=len(reference_hf_tokenizer))
    if checkpoint == "fp8":
        reference = write_fp8_checkpoint(reference, tmp_path)
    else:
        reference.to(torch.bfloat16).save_pretrained(tmp_path)
        reference.float()
    reference_hf_tokenizer.save_pretrained(tmp_path)
    prompt = "The capital of France is"
    ids = reference_hf_tokenizer.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids) :].tolist()
    env = dict(os.environ, R1_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ui.cli",
            "generate",
            "--model",
            str(tmp_path),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "12",
            "--quant",
            "fp32",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == reference_hf_tokenizer.decode(expected) + "\n"


# ---- GGUF deepseek2 (llama.cpp's conversion of DeepSeek-V2/V3/R1) ----------------------------------


def write_deepseek2_gguf(path: Path, reference, expert_type=None) -> None:
    """`reference` as llama.cpp's convert_hf_to_gguf.py writes a DeepseekV3 (its metadata keys, stacked experts,
    kv_b split into a transposed k_b and v_b, the score-correction bias as exp_probs_b)."""
    import gguf
    import numpy as np

    cfg = reference.config
    rope = cfg.rope_parameters
    w = gguf.GGUFWriter(str(path), "deepseek2")
    a = "deepseek2"
    for key, value in {
        "block_count": cfg.num_hidden_layers,
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "feed_forward_length": cfg.intermediate_size,
        "attention.head_count": cfg.num_attention_heads,
        "attention.head_count_kv": 1,
        "vocab_size": cfg.vocab_size,
        "leading_dense_block_count": cfg.first_k_dense_replace,
        "attention.q_lora_rank": cfg.q_lora_rank,
        "attention.kv_lora_rank": cfg.kv_lora_rank,
        "attention.key_length": cfg.kv_lora_rank + cfg.qk_rope_head_dim,
        "attention.value_length": cfg.kv_lora_rank,
        "attention.key_length_mla": cfg.qk_nope_head_dim + cfg.qk_rope_head_dim,
        "attention.value_length_mla": cfg.v_head_dim,
        "expert_feed_forward_length": cfg.moe_intermediate_size,
        "expert_count": cfg.n_routed_experts,
        "expert_shared_count": cfg.n_shared_experts,
        "expert_used_count": cfg.num_experts_per_tok,
        "expert_group_count": cfg.n_group,
        "expert_group_used_count": cfg.topk_group,
        "expert_gating_func": 2,
        "rope.dimension_count": cfg.qk_rope_head_dim,
        "rope.scaling.original_context_length": rope["original_max_position_embeddings"],
    }.items():
        w.add_uint32(f"{a}.{key}", value)
    w.add_float32(f"{a}.rope.freq_base", rope["rope_theta"])
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    w.add_float32(f"{a}.expert_weights_scale", cfg.routed_scaling_factor)
    w.add_bool(f"{a}.expert_weights_norm", cfg.norm_topk_prob)
    w.add_string(f"{a}.rope.scaling.type", "yarn")
    w.add_float32(f"{a}.rope.scaling.factor", rope["factor"])
    w.add_float32(f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * rope["mscale_all_dim"])
    with tempfile.TemporaryDirectory() as scratch:
        reference.save_pretrained(scratch)
        hf = load_file(Path(scratch) / "model.safetensors")
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_a_proj.weight": "attn_q_a.weight",
        "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight": "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "mlp.gate.weight": "ffn_gate_inp.weight",
        "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
        "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
    }
    H, P, V = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    for layer in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in per_layer.items():
            names[f"model.layers.{layer}.{hf_name}"] = f"blk.{layer}.{gguf_name}"
        kv_b = hf.pop(f"model.layers.{layer}.self_attn.kv_b_proj.weight").view(H, P + V, -1)
        w.add_tensor(f"blk.{layer}.attn_k_b.weight", kv_b[:, :P].transpose(1, 2).contiguous().numpy())
        w.add_tensor(f"blk.{layer}.attn_v_b.weight", kv_b[:, P:].contiguous().numpy())
        if layer >= cfg.first_k_dense_replace:
            for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                stacked = torch.stack(
                    [
                        hf.pop(f"model.layers.{layer}.mlp.experts.{e}.{theirs}.weight")
                        for e in range(cfg.n_routed_experts)
                    ]
                ).numpy()
                if expert_type is None:
                    w.add_tensor(f"blk.{layer}.ffn_{ours}_exps.weight", stacked)
                else:
                    w.add_tensor(
                        f"blk.{layer}.ffn_{ours}_exps.weight",
                        gguf.quants.quantize(stacked, expert_type),
                        raw_dtype=expert_type,
                    )
    for hf_name, tensor in hf.items():
        w.add_tensor(names[hf_name], tensor.float().numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_deepseek2_runs_on_the_same_classes_with_parity(tmp_path):
    from model.loading.gguf import GGUFCheckpoint
    from model.loading.tensor_names import checked
    from model.serving.scheduler import forward_step

    yarn = dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=4.0,
        original_max_position_embeddings=64,
        mscale=0.707,
        mscale_all_dim=0.707,
    )  # llama.cpp keeps one mscale; DeepSeek's releases have both equal
    reference = deepseek_with(rope_parameters=yarn)
    write_deepseek2_gguf(tmp_path / "ds.gguf", reference)
    checkpoint = GGUFCheckpoint(tmp_path / "ds.gguf")
    config = checkpoint.config
    assert config.arch == "deepseek_v3" and config.mla.q_lora_rank == 48 and config.moe.n_group == 4
    assert config.rope_scaling.kind == "yarn" and config.rope_interleaved
    transformer = model.build_transformer(config, dict(checked(config, checkpoint.tensors(), "gguf")))
    cache = transformer.new_cache(max_seq_len=128, capacity_bytes=1 << 22)
    ids = [4, 99, 23, 150, 8, 8, 31, 77, 2, 190]
    logits = forward_step(transformer, cache, [cache.new_sequence()], [ids], all_logits=True)
    assert_logits_close(logits, reference_logits(reference, ids))


def test_gguf_stacked_quantized_experts_slice_one_expert_at_a_time(tmp_path):
    from gguf import GGMLQuantizationType as Q

    from model.loading.gguf import dequantize_tensor, open_gguf

    yarn = dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=4.0,
        original_max_position_embeddings=64,
        mscale=1.0,
        mscale_all_dim=1.0,
    )
    write_deepseek2_gguf(tmp_path / "q8.gguf", deepseek_with(rope_parameters=yarn), expert_type=Q.Q8_0)
    (stacked,) = [t for t in open_gguf(tmp_path / "q8.gguf").tensors if t.name == "blk.1.ffn_down_exps.weight"]
    whole = dequantize_tensor(stacked)
    assert whole.shape == (16, 64, 32)
    for expert in (0, 7, 15):
        assert torch.equal(dequantize_tensor(stacked, index=expert), whole[expert])


@pytest.mark.slow
def test_cli_generate_prints_router_statistics(tmp_path):
    from safetensors.torch import save_file as save_tensors

    tiny_model("deepseek_v3").save_pretrained(tmp_path / "model")
    save_word_tokenizer(tmp_path / "model")
    bias = torch.zeros(2, 16)
    bias[:, 5] = 50.0
    save_tensors({"math": bias}, tmp_path / "bias.safetensors")
    env = dict(os.environ, R1_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ui.cli",
            "generate",
            "--model",
            str(tmp_path / "model"),
            "--prompt",
            " ".join(f"t{i}" for i in range(2, 40)),
            "--max-new-tokens",
            "4",
            "--threads",
            "1",
            "--router-stats",
            "--expert-capacity",
            "3",
            "--router-bias",
            str(tmp_path / "bias.safetensors"),
            "--task-type",
            "math",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    table = out.stderr[out.stderr.index("router statistics") :].splitlines()
    assert table[0] == "router statistics: 2 MoE layers, 16 experts each"
    rows = [line.split() for line in table[2:4]]
    assert [row[0] for row in rows] == ["1", "2"], out.stderr
    # 38 prompt tokens (and BOS) + 3 decoded, 2 experts each: what ran plus what was dropped. At most 3 per expert
    # per step, so the prompt's step re-routes (and, 16 * 3 places being too few for 78 assignments, drops).
    for _layer, assignments, _used, _share, _imbalance, rerouted, dropped, *_busiest in rows:
        assert int(assignments) + int(dropped) == (39 + 3) * 2 and int(rerouted) > 0 and int(dropped) > 0


@pytest.fixture(scope="module")
def dense_generation(fp8_dir, tmp_path_factory):
    """A 150-token prompt (three 64-token blocks) and what the dense model greedily generates after it."""
    directory, _ = fp8_dir
    prompt = torch.randint(2, 211, (150,), generator=torch.Generator().manual_seed(3)).tolist()
    with model.load(directory, quant=None, threads=1, cache_dir=tmp_path_factory.mktemp("cache")) as engine:
        return prompt, engine.submit(prompt, max_new_tokens=30, stop_token_ids=()).result().token_ids


@pytest.mark.parametrize("attention", ["local", "topk", "auto"])
def test_latent_attention_model_loads_and_generates_with_sparse_attention(
    fp8_dir, dense_generation, tmp_path, attention
):
    """Within 256 positions the default window (2 blocks + sink + own) covers the context: as dense, but through
    the sparse path for "local" / "topk" ("auto" is dense up to 512 tokens)."""
    directory, _ = fp8_dir
    prompt, expected = dense_generation
    with model.load(directory, quant=None, threads=1, cache_dir=tmp_path, attention=attention) as engine:
        assert engine.attention.mode == attention
        assert (engine.cache.key_summaries is not None) == (attention != "local")
        assert engine.cache.key_summaries is None or engine.cache.key_summaries.key_shape == (1, 32 + 8)
        assert engine.submit(prompt, max_new_tokens=30, stop_token_ids=()).result().token_ids == expected
