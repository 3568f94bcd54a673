"""`r1 train sft` on a tiny random llama: labels cover only what the model writes, a run killed mid-way resumes
to the adapter an uninterrupted run writes, and the adapter it writes loads in peft with our engine's logits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from app.train.sft import CHECKPOINT, IGNORE, SFTConfig, collate, encode_row, token_loss, train
from tests.model.test_engine_parity import assert_logits_close, random_ids
from tests.model.tiny import save_word_tokenizer, tiny_model

peft = pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base directory, data file): a tiny llama and 120 rows of word-token problems with two steps each."""
    base = tmp_path_factory.mktemp("base")
    tiny_model("llama").save_pretrained(base)
    save_word_tokenizer(base)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(120):
        a, b, c = (torch.randint(2, 200, (3,), generator=generator) + 0).tolist()
        rows.append(
            {
                "question": f"q{i}",
                "prompt": f"t{a} t{b} t{c}",
                "steps": [f"t{a} t{b} => t{(a + b) % 198 + 2}", f"t{c} t{(a + b) % 198 + 2}"],
            }
        )
    data = base / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return base, data


def config(tiny, out: Path, **overrides) -> SFTConfig:
    base, data = tiny
    return SFTConfig(
        **{
            **dict(
                data=str(data),
                out=str(out),
                model=str(base),
                cache_dir=str(base / "cache"),
                rank=4,
                alpha=8.0,
                lr=1e-2,
                batch_size=2,
                eval_rows=8,
                checkpoint_every=1,
                threads=1,
            ),
            **overrides,
        }
    )


def test_labels_cover_the_steps_but_not_the_prompt_or_tool_results(tiny):
    base, _ = tiny
    tokenizer = model.load(base, quant=None, threads=1, cache_dir=base / "cache", compiled_step=False).tokenizer
    example = encode_row(tokenizer, {"prompt": "t5 t6", "steps": ["Calc: t7 t8 => t9", "Answer: t9"]})
    # <s> t5 t6 | Calc: t7 t8 => t9 \n | Answer: t9 \n   ("Calc:", "=>" and "Answer:" are unknown words: <s> = 0)
    assert example.ids == [0, 5, 6, 0, 7, 8, 0, 9, 0, 9]
    assert example.labels == [IGNORE, IGNORE, IGNORE, 0, 7, 8, IGNORE, IGNORE, 0, 9]


def run_cli(cfg: SFTConfig) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "ui.cli",
        "train",
        "sft",
        "--data",
        cfg.data,
        "--out",
        cfg.out,
        "--model",
        cfg.model,
        "--cache-dir",
        cfg.cache_dir,
        "--rank",
        str(cfg.rank),
        "--alpha",
        str(cfg.alpha),
        "--lr",
        str(cfg.lr),
        "--batch-size",
        str(cfg.batch_size),
        "--eval-rows",
        str(cfg.eval_rows),
        "--checkpoint-every",
        str(cfg.checkpoint_every),
        "--epochs",
        str(cfg.epochs),
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_run_resumes_to_the_adapter_of_an_uninterrupted_one(tiny, tmp_path):
    uninterrupted = train(config(tiny, tmp_path / "whole", epochs=2), log=lambda line: None)
    total = uninterrupted["steps"]
    assert total == 2 * 56  # (120 - 8 held out) / 2 per epoch
    cut = config(tiny, tmp_path / "cut", epochs=2)
    process = run_cli(cut)
    checkpoint = Path(cut.out) / CHECKPOINT
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (Path(cut.out) / "adapter_model.safetensors").exists(), "the run ended before it could be killed"
    resumed = run_cli(cut)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    step = int(stderr.split("resuming ")[1].split(" at step ")[1].split()[0])
    assert 0 < step < total
    ours, reference = (load_file(str(Path(d) / "adapter_model.safetensors")) for d in (cut.out, tmp_path / "whole"))
    assert sorted(ours) == sorted(reference) and len(ours) == 3 * 2 * 2  # layers x (q, v) x (A, B)
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name
    card = (Path(cut.out) / "README.md").read_text()
    assert "r1 train sft --data" in card and "--epochs 2" in card and "sha256" in card
    log = json.loads((Path(cut.out) / "training.json").read_text())
    assert [h["epoch"] for h in log["history"]] == [0, 1, 2]
    assert log["history"][2]["eval_loss"] < log["history"][0]["eval_loss"]


def test_the_adapter_it_writes_loads_in_peft_with_our_logits(tiny, tmp_path):
    base, _ = tiny
    out = tmp_path / "adapter"
    train(config(tiny, out, targets=("q_proj", "v_proj", "down_proj")), log=lambda line: None)
    reference = peft.PeftModel.from_pretrained(tiny_model("llama"), out).eval()
    engine = model.load(base, quant=None, threads=1, cache_dir=base / "cache", compiled_step=False, adapter=out)
    try:
        ids = random_ids(25, 5)
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0]
            with reference.disable_adapter():
                plain = reference(torch.tensor([ids])).logits[0]
        assert (expected - plain).abs().max() > 0.01 * expected.abs().max(), "training must move the logits"
        assert_logits_close(engine.logits(ids), expected)
    finally:
        engine.close()


def test_resuming_with_other_settings_is_refused(tiny, tmp_path):
    out = tmp_path / "run"
    train(config(tiny, out), log=lambda line: None)
    with pytest.raises(ValueError, match=r"other settings \(lr, rank\)"):
        train(config(tiny, out, rank=8, lr=1e-3), log=lambda line: None)


def test_the_loss_over_labelled_positions_is_the_loss_of_the_whole_logits(tiny):
    """token_loss runs the LM head only where a label is: the same sum as cross-entropy over every position."""
    from app.train.hf_base import hf_model

    base, data = tiny
    module, tokenizer = hf_model(str(base), cache_dir=str(base / "cache"))
    module = peft.get_peft_model(module, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    rows = [json.loads(line) for line in data.read_text().splitlines()[:3]]
    batch = collate([encode_row(tokenizer, row) for row in rows])
    loss, n = token_loss(module, batch)
    logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    whole = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    assert n == int((targets != IGNORE).sum()) > 0
    torch.testing.assert_close(loss, whole, rtol=1e-5, atol=1e-4)


def test_bad_targets_and_rows_are_named(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown LoRA target 'qproj'; choose from q_proj"):
        train(config(tiny, tmp_path / "a", targets=("qproj",)), log=lambda line: None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "t2", "steps": ["t3"]}\n{"prompt": "t2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a training row"):
        train(config(tiny, tmp_path / "b", data=str(bad)), log=lambda line: None)


def test_a_run_started_from_an_adapter_continues_its_weights(tiny, tmp_path):
    first = tmp_path / "first"
    trained = train(config(tiny, first), log=lambda line: None)
    # lr 0: the second pass changes nothing, so its adapter is the first one's weights, loaded into peft's layers
    again = config(tiny, tmp_path / "again", lr=0.0, seed=1, init_adapter=str(first))
    summary = train(again, log=lambda line: None)
    ours, started = (load_file(str(Path(d) / "adapter_model.safetensors")) for d in (again.out, first))
    assert sorted(ours) == sorted(started)
    for name in started:
        assert torch.equal(ours[name], started[name]), name
    # its evaluation before training already sees the first run's weights: the base model's loss is not there
    assert summary["history"][0]["eval_loss"] < trained["history"][0]["eval_loss"]
    card = (Path(again.out) / "README.md").read_text()
    assert f"--init-adapter {first}" in card and f"started from `{first}`" in card
    with pytest.raises(ValueError, match=r"--init-adapter .* has \{'r': 4.*this run trains \{'r': 8"):
        train(config(tiny, tmp_path / "other", rank=8, init_adapter=str(first)), log=lambda line: None)
    partial = tmp_path / "partial"  # same config, one layer's LoRA pair missing from the weights
    shutil.copytree(first, partial)
    save_file({n: t for n, t in started.items() if ".layers.0." not in n}, str(partial / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="its tensors do not match this model's LoRA layers"):
        train(config(tiny, tmp_path / "third", init_adapter=str(partial)), log=lambda line: None)
