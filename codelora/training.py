"""train.py: LoRA/QLoRA finetuning on prompt/completion pairs, loss on the completion (+ EOS) only.

Each example becomes `prompt ids + completion ids + [EOS]`; prompt and completion are tokenized
separately, exactly as the model will see a prompt at inference and continue it. Labels are built
from those explicit lengths (prompt and padding -> -100), never by matching token ids, so the EOS
that ends every completion is trained even though EOS doubles as the pad token. Batches are padded
to their own longest example and a length-grouped sampler keeps similar lengths together, so
almost no compute goes to padding (the fraction is logged and saved).

Run layout (OUTPUT_DIR):
    adapter/             adapter_config.json, adapter_model.safetensors, tokenizer (written atomically)
    checkpoints/         checkpoint-N/ every --save-steps (what --resume continues from)
    logs/                tensorboard event files
    config.yaml          the configuration that ran
    train_metrics.json   losses, eval loss, throughput, non-padding fraction, parameter counts
    loss_curve.png       train and eval loss against steps
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from codelora.cli import run_stage
from codelora.config import TrainConfig, save_config
from codelora.utils import UserError, atomic_dir, check_writable_parent, seed_everything, write_json

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value torch's cross-entropy skips
REQUIRED_COLUMNS = ("prompt", "completion")

EXAMPLES = """\
  python train.py --base-model microsoft/phi-1_5 --dataset data/kotlin_prepared_dataset \\
      --output-dir runs/phi15-kotlin
  python train.py --config configs/kotlin-phi-1_5.yaml --max-steps 500 --push-to-hub USER/phi15-kotlin-lora
  python train.py --output-dir runs/phi15-kotlin --resume          # continue after an interruption
  accelerate launch --num_processes 2 train.py --output-dir runs/ddp   # data parallel
"""


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the run stops and keeps its last good checkpoint."""


# ------------------------------------------------------------------------------------------ data


def load_prepared_dataset(name: str):
    """A DatasetDict from a save_to_disk directory or a Hub dataset id, with the columns we need."""
    import datasets

    path = Path(name)
    try:
        if path.exists():
            dsd = datasets.load_from_disk(str(path))
        else:
            dsd = datasets.load_dataset(name)
    except FileNotFoundError as err:
        raise UserError(f"--dataset {name}: not a saved dataset ({err})") from None
    except Exception as err:  # noqa: BLE001 - Hub/offline/format errors all mean "cannot load"
        raise UserError(f"--dataset {name}: cannot load ({type(err).__name__}: {err})") from None
    if not isinstance(dsd, datasets.DatasetDict):
        raise UserError(f"--dataset {name}: expected a DatasetDict with train/validation/test splits")
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise UserError(f"--dataset {name}: no (or an empty) 'train' split")
    for split, ds in dsd.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise UserError(f"--dataset {name}: split '{split}' lacks column(s) {', '.join(missing)}")
    return dsd


def encode_example(tokenizer, prompt: str, completion: str, max_length: int) -> dict[str, Any]:
    """`prompt + completion + EOS` as ids, with the prompt length (where the loss starts).

    Too long: the prompt is cut from the LEFT (its end is the context that matters) so completion
    and EOS survive; a completion that alone does not fit is cut from the right and then gets no
    EOS — the text does not end there, and teaching the model to stop there would be wrong.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(c_ids) > max_length:
        c_ids = c_ids[: max_length]  # drops the EOS (and the completion's tail)
        p_ids = []
    else:
        p_ids = p_ids[len(p_ids) - min(len(p_ids), max_length - len(c_ids)):]
    ids = p_ids + c_ids
    return {"input_ids": ids, "prompt_len": len(p_ids), "length": len(ids)}


def tokenize_split(ds, tokenizer, max_length: int, desc: str):
    ds = ds.map(
        lambda row: encode_example(tokenizer, row["prompt"], row["completion"], max_length),
        remove_columns=ds.column_names,
        desc=f"tokenizing {desc}",
    )
    # An example whose completion was empty and prompt cut to nothing carries no signal.
    return ds.filter(lambda row: row["length"] > row["prompt_len"], desc=f"filtering {desc}")


class CompletionCollator:
    """Right-pads a batch to its longest example; labels only on completion + EOS positions."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
            length, start = len(ids), int(f["prompt_len"])
            input_ids[i, :length] = ids
            attention_mask[i, :length] = 1
            # Positions, not ids: the EOS at the end is a target even though pad id == EOS id.
            labels[i, start:length] = ids[start:]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Random order, but each run of `batch_size` indices has similar lengths.

    Shuffle, cut into megabatches of `mega` batches, sort each megabatch by length (longest first)
    and shuffle the resulting batches; the globally longest batch goes first so an out-of-memory
    shows at step 1, not hours in. The order depends only on (seed, epoch) — not on the global
    RNG — so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        span = self.batch_size * self.mega
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in perm]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths)


def non_padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]],
                         pad_to: int | None = None, multiple_of: int | None = None) -> float:
    """Real tokens / token slots computed, for batches padded to their longest (or to `pad_to`)."""
    real = slots = 0
    for batch in batches:
        width = pad_to or max(lengths[i] for i in batch)
        if multiple_of:
            width = math.ceil(width / multiple_of) * multiple_of
        real += sum(lengths[i] for i in batch)
        slots += width * len(batch)
    return real / slots if slots else 1.0


# --------------------------------------------------------------------------------------- trainer


def _trainer_class():
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        """Trainer with a deterministic length-grouped sampler, a non-finite-loss guard and a
        count of the real (non-padding) tokens trained on."""

        def __init__(self, *args, length_sampler: LengthGroupedSampler | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.length_sampler = length_sampler
            self.tokens_trained = 0

        def _get_train_sampler(self, train_dataset=None):
            if self.length_sampler is not None:
                return self.length_sampler
            # Seeded by (seed, epoch) through set_epoch, so resume reproduces the order too.
            return super()._get_train_sampler(train_dataset)

        def training_step(self, model, inputs, num_items_in_batch=None):
            tokens = inputs["attention_mask"].sum()
            loss = super().training_step(model, inputs, num_items_in_batch)
            # The Trainer's logs filter NaN/inf away (logging_nan_inf_filter) and the optimizer
            # would happily step on NaN gradients, so check each micro-batch ourselves. All ranks
            # must agree, or one would raise while the others hang in the next all-reduce.
            bad = (~torch.isfinite(loss)).to(torch.float32).reshape(1)
            if self.accelerator.num_processes > 1:
                bad = self.accelerator.reduce(bad, reduction="sum")
            if bad.item() > 0:
                step = self.state.global_step + 1
                last = _latest_checkpoint(Path(self.args.output_dir))
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at step {step}; training stopped without writing "
                    f"an adapter. Last good checkpoint: {last or 'none yet'} (lower --learning-rate, "
                    f"then --resume or restart)"
                )
            self.tokens_trained += int(tokens)
            return loss

    return CompletionTrainer


def _latest_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


def _device_settings() -> dict[str, Any]:
    """Mixed-precision flags for TrainingArguments: fp32 on CPU, bf16 (or fp16) autocast on GPU."""
    from codelora.modeling import compute_dtype

    dtype = compute_dtype()
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "use_cpu": not torch.cuda.is_available()}


# ------------------------------------------------------------------------------------------- run


def train(cfg: TrainConfig) -> dict[str, Any]:
    from transformers import TrainingArguments

    from codelora import hub
    from codelora.modeling import (
        add_lora,
        compute_dtype,
        count_parameters,
        load_base_model,
        load_tokenizer,
        resolve_load_in_4bit,
    )

    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger("codelora").setLevel(logging.WARNING)  # one copy of each log line under DDP
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    check_writable_parent(out / "adapter")
    # Credentials first: a rejected token must fail now, not after hours of training.
    token = hub.check_push_access(cfg.push_to_hub) if cfg.push_to_hub else None
    resume_from = None
    existing = _latest_checkpoint(ckpt_dir)
    if cfg.resume:
        resume_from = existing
        if resume_from is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        else:
            log.info("resuming from %s", resume_from)
    elif existing is not None:
        raise UserError(f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                        f"or choose another --output-dir")

    seed_everything(cfg.seed)
    dsd = load_prepared_dataset(cfg.dataset)
    tokenizer = load_tokenizer(cfg.base_model, cfg.trust_remote_code)
    tokenizer.padding_side = "right"  # training pads on the right; generation code pads left itself
    train_raw = dsd["train"]
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_raw):
        train_raw = train_raw.shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    train_ds = tokenize_split(train_raw, tokenizer, cfg.max_length, "train")
    if len(train_ds) == 0:
        raise UserError("no usable training examples after tokenization")
    eval_ds = None
    if "validation" in dsd and len(dsd["validation"]) > 0:
        val = dsd["validation"]
        if cfg.max_eval_samples is not None and cfg.max_eval_samples < len(val):
            val = val.shuffle(seed=cfg.seed).select(range(cfg.max_eval_samples))
        eval_ds = tokenize_split(val, tokenizer, cfg.max_length, "validation")
        # Eval order is irrelevant to the loss: sorting by length makes its padding nearly free.
        eval_ds = eval_ds.sort("length", reverse=True)
    else:
        log.warning("no validation split: eval loss will not be computed")

    on_gpu = torch.cuda.is_available()
    quantized = resolve_load_in_4bit(cfg.load_in_4bit)
    dtype = compute_dtype()
    device_map = None
    if on_gpu:
        # Each DDP process loads its own copy onto its own GPU (4-bit weights cannot be moved later).
        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = load_base_model(cfg.base_model, load_in_4bit=quantized, dtype=dtype,
                            trust_remote_code=cfg.trust_remote_code, device_map=device_map)
    model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                     targets=cfg.target_modules, quantized=quantized,
                     gradient_checkpointing=cfg.gradient_checkpointing)
    trainable, total = count_parameters(model)

    lengths = train_ds["length"]
    multiple_of = 8 if on_gpu else None  # tensor-core friendly shapes on GPU; no gain on CPU
    sampler = LengthGroupedSampler(lengths, cfg.batch_size, cfg.seed) if cfg.group_by_length else None
    first_batches = sampler.batches() if sampler else [
        list(range(i, min(i + cfg.batch_size, len(lengths)))) for i in range(0, len(lengths), cfg.batch_size)
    ]
    fill = non_padding_fraction(lengths, first_batches, multiple_of=multiple_of)
    log.info("%d train examples, %s tokens; non-padding fraction %.3f (batch %d%s)", len(lengths),
             f"{sum(lengths):,}", fill, cfg.batch_size, ", length-grouped" if sampler else "")

    # transformers 5 takes the tensorboard directory from this variable only. Set it for this
    # run and put the caller's value back afterwards: a second run in the same process (tests,
    # the pipeline) must not log into the first run's directory.
    saved_tb_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "logs")
    has_eval = eval_ds is not None and len(eval_ds) > 0
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        # Non-reentrant checkpointing works with frozen inputs and DDP; for 4-bit, peft's kbit
        # preparation has already enabled it.
        activation_checkpointing=cfg.gradient_checkpointing and not quantized,
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=["tensorboard"],
        disable_tqdm=False,
        remove_unused_columns=False,  # the collator needs prompt_len, which the model does not take
        ddp_find_unused_parameters=False,
        dataloader_drop_last=False,
        **_device_settings(),
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if has_eval else None,
        data_collator=CompletionCollator(tokenizer.pad_token_id, multiple_of),
        processing_class=tokenizer,
        length_sampler=sampler,
    )
    start = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if saved_tb_dir is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved_tb_dir
    runtime = time.perf_counter() - start
    # The Trainer evaluates at the last step itself; evaluate again only if that did not happen.
    evals = [row for row in trainer.state.log_history if "eval_loss" in row]
    eval_loss = None
    if has_eval:
        last = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else None
        eval_loss = float(last["eval_loss"] if last else trainer.evaluate()["eval_loss"])

    # Everything below is the main process's job; the others just wait for it.
    tokens = trainer.tokens_trained
    if trainer.accelerator.num_processes > 1:
        tokens = int(trainer.accelerator.reduce(torch.tensor([tokens], device=trainer.args.device), "sum").item())
    metrics = {
        "train_loss": float(result.training_loss),
        "eval_loss": eval_loss,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": runtime,
        "train_tokens": tokens,
        "train_tokens_per_second": tokens / runtime if runtime > 0 else None,
        "non_padding_fraction": fill,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "load_in_4bit": quantized,
        "num_processes": trainer.accelerator.num_processes,
        "resumed_from": str(resume_from) if resume_from else None,
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        _write_outputs(cfg, out, trainer.model, tokenizer, metrics, quantized)
        if cfg.push_to_hub:
            _push(cfg, out / "adapter", metrics, quantized, token)
    trainer.accelerator.wait_for_everyone()
    return metrics


def _write_outputs(cfg: TrainConfig, out: Path, model, tokenizer, metrics: dict[str, Any], quantized: bool) -> None:
    from codelora.plots import plot_loss_curve

    with atomic_dir(out / "adapter") as tmp:
        model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors only
        tokenizer.save_pretrained(tmp)
    save_config(cfg, out / "config.yaml", resolved={"load_in_4bit": quantized})
    write_json(out / "train_metrics.json", metrics)
    plot_loss_curve(metrics["log_history"], out / "loss_curve.png", title=f"{cfg.base_model} on {cfg.dataset}")
    log.info("adapter written to %s (train loss %.4f, eval loss %s)", out / "adapter", metrics["train_loss"],
             f"{metrics['eval_loss']:.4f}" if metrics["eval_loss"] is not None else "n/a")


def _push(cfg: TrainConfig, adapter_dir: Path, metrics: dict[str, Any], quantized: bool, token: str | None) -> None:
    from codelora import hub

    hyper = {
        "load_in_4bit": quantized, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout, "target_modules": cfg.target_modules, "max_length": cfg.max_length,
        "learning_rate": cfg.learning_rate, "lr_scheduler": cfg.lr_scheduler, "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
        "num_processes": metrics["num_processes"], "steps": metrics["global_step"], "seed": cfg.seed,
    }
    card = hub.adapter_card(base_model=cfg.base_model, dataset=cfg.dataset, hyperparameters=hyper,
                            eval_loss=metrics["eval_loss"], train_loss=metrics["train_loss"],
                            repo_id=cfg.push_to_hub)
    hub.push_folder(adapter_dir, cfg.push_to_hub, token=token, card=card, private=cfg.private)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(
        TrainConfig,
        train,
        argv,
        prog="train.py",
        description=__doc__.split("\n", 1)[0],
        examples=EXAMPLES,
        section="train",
    )
