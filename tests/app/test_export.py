"""`r1 export --format safetensors`: a model written as an HF float directory loads back to the same logits and
tokenizer, and `r1 quantize` takes it (the default model's path from a fresh clone, on the real model: slow)."""

from __future__ import annotations

import pytest
import torch

import model
from app.export import export_checkpoint
from tests.model.tiny import save_word_tokenizer, tiny_model

PROMPT = [0, 5, 17, 42, 99, 3]


def load(source, tmp_path, quant="fp32"):
    return model.load(source, quant=quant, cache_dir=tmp_path / "cache", compiled_step=False, threads=1)


def test_export_round_trips_an_hf_checkpoint(tmp_path):
    source = tmp_path / "source"
    tiny_model("llama").save_pretrained(source)
    save_word_tokenizer(source)
    out = export_checkpoint(source, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    original, exported = load(source, tmp_path), load(out, tmp_path)
    assert exported.tokenizer.to_dict() == original.tokenizer.to_dict()
    torch.testing.assert_close(exported.logits(PROMPT), original.logits(PROMPT), atol=1e-5, rtol=0)


def test_export_refuses_a_non_empty_output_and_unknown_formats(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty directory"):
        export_checkpoint("default", tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="unknown export format 'gguf'"):
        export_checkpoint("default", tmp_path / "out", fmt="gguf")


@pytest.mark.slow
def test_default_model_exports_and_quantizes(tmp_path):
    """The default Q4_1 GGUF as float32 safetensors: same tokenizer, same fp32 logits; then `r1 quantize` (RTN,
    no calibration pass) makes a GPTQ directory the engine runs on the int4 kernel."""
    from ui.cli import main

    out = tmp_path / "float"
    assert main(["export", "--format", "safetensors", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    default, exported = load("default", tmp_path), load(out, tmp_path)
    ids = default.tokenizer.encode("Sherlock Holmes took his bottle from the corner of the mantelpiece")
    assert exported.tokenizer.to_dict() == default.tokenizer.to_dict()
    want = default.logits(ids)
    assert (exported.logits(ids) - want).abs().max() <= 1e-5 * want.abs().max()
    del default, exported

    gptq_dir = tmp_path / "rtn"
    assert (
        main(
            [
                "quantize",
                str(out),
                "--method",
                "rtn",
                "--bits",
                "4",
                "--group-size",
                "128",
                "--out",
                str(gptq_dir),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    engine = load(gptq_dir, tmp_path, quant="auto")
    assert engine.model.layers[0].feed_forward.w2.weight.dtype == torch.uint8
    agreement = (engine.logits(ids).argmax(-1) == want.argmax(-1)).float().mean().item()
    assert agreement >= 0.75  # the same model, 4-bit: most next-token choices unchanged
