"""train.py: LoRA/QLoRA finetuning on prompt/completion pairs, loss on the completion (+ EOS) by default.

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

import contextlib
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from codelora.batching import (
    IGNORE_INDEX,
    CompletionCollator,
    LengthGroupedSampler,
    TrainData,
    pad_multiple,
    prepare_data,
)
from codelora.checkpoints import (
    PROGRESS_FILE,
    ResumePlan,
    checkpoint_step,
    incomplete_checkpoints,
    last_good_checkpoint,
    latest_checkpoint,
    non_finite_tensors,
    plan_resume,
    settings_of,
)
from codelora.config import TrainConfig, guard_stage_output, save_config
from codelora.contracts import RUN_CONFIG, adapter_dir, checkpoints_dir, write_output_marker
from codelora.fim import fit_embeddings, name_embeddings, trainable_token_indices
from codelora.modeling import takes_logits_to_keep
from codelora.utils import (
    Interrupted,
    UserError,
    apply_umask,
    atomic_dir,
    check_local_or_hub,
    seed_everything,
    write_json,
)

log = logging.getLogger(__name__)

EXAMPLES = """\
  python train.py --base-model microsoft/phi-1_5 --dataset data/kotlin_prepared_dataset \\
      --output-dir runs/phi15-kotlin
  python train.py --config configs/kotlin-phi-1_5.yaml --max-steps 500 --push-to-hub USER/phi15-kotlin-lora
  python train.py --config configs/kotlin-phi-1_5.yaml --resume    # continue after an interruption
  python train.py --config configs/kotlin-phi-1_5.yaml --num-processes 2   # data parallel, CPU or GPUs
"""


# --------------------------------------------------------------------------------------- trainer

class NonFiniteError(UserError):
    """A gradient, loss or weight became NaN/inf; the run stops before writing anything from it."""



class CompletionTrainer(Trainer):
    """Trainer with a deterministic length-grouped sampler, a non-finite guard before every
    optimizer step and every save, and whole-run totals (loss, real tokens, seconds) that survive
    a resume."""

    def __init__(self, *args, length_sampler: LengthGroupedSampler | None = None,
                 previous: dict[str, Any] | None = None, run_settings: dict[str, Any] | None = None,
                 schedule_changes: dict[str, list[Any]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.length_sampler = length_sampler
        self.previous = previous or {}  # totals of the run up to the resumed checkpoint
        self.run_settings = run_settings or {}
        self.schedule_changes = schedule_changes or {}
        self.fresh_groups: list[dict[str, float]] = []
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._tokens = torch.zeros((), dtype=torch.int64)
        self._step_loss = torch.zeros((), dtype=torch.float64)
        self._segment_start = time.perf_counter()
        self.add_callback(_RunBookkeeping(self))

    def _get_train_sampler(self, train_dataset=None):
        if self.length_sampler is not None:
            return self.length_sampler
        # Seeded by (seed, epoch) through set_epoch, so resume reproduces the order too.
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        # This run's own lr / weight decay per group, before a resume loads the checkpoint's.
        self.fresh_groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        device = inputs["attention_mask"].device
        if self._loss_sum.device != device:
            self._loss_sum, self._tokens, self._step_loss = (
                t.to(device) for t in (self._loss_sum, self._tokens, self._step_loss))
        loss = super().training_step(model, inputs, num_items_in_batch)
        # On-device sums: no host sync per micro-batch; read at saves, at the end, or on failure.
        self._tokens += inputs["attention_mask"].sum()
        self._step_loss += loss.detach().to(torch.float64)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = target_logits_only(self.accelerator.unwrap_model(model), inputs)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _get_grad_norm(self, model, grad_norm=None):
        # The Trainer computes this norm (over all processes) just before optimizer.step(); a NaN
        # or inf here means the step would poison every LoRA weight, so stop now. Every process
        # sees the same norm, so all stop together instead of one hanging in a collective.
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if not math.isfinite(float(norm)):
            step_loss = float(self._step_loss)
            what = (f"non-finite loss ({step_loss})" if not math.isfinite(step_loss)
                    else f"non-finite gradient norm ({float(norm)}; the loss, {step_loss:.4f}, is finite)")
            raise NonFiniteError(f"{what} at step {self.state.global_step + 1}; training stopped before the "
                                 f"optimizer step, nothing written from it. {self._advice()}")
        self._loss_sum += self._step_loss
        self._step_loss.zero_()
        return norm

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        # Every process calls this (FSDP gathers the full state dict here), so the check is collective.
        bad = non_finite_tensors({n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad})
        count = torch.tensor([float(len(bad))], device=self.args.device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        if count.item() > 0:
            raise NonFiniteError(f"{int(count.item())} LoRA weight tensor(s) are non-finite after step "
                                 f"{self.state.global_step} (e.g. {bad[:1] or 'on another process'}); "
                                 f"{output_dir} not written. {self._advice()}")
        return super().save_model(output_dir, _internal_call)

    def _advice(self) -> str:
        last = last_good_checkpoint(Path(self.args.output_dir))
        return (f"Last good checkpoint: {last or 'none yet'} (lower --learning-rate, then "
                f"{'--resume' if last else 'restart'})")

    def totals(self) -> dict[str, float]:
        """Loss sum, real tokens and training seconds of the whole run (all processes, all segments)."""
        sums = torch.stack([self._loss_sum.to(torch.float64), self._tokens.to(torch.float64)])
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
            sums[0] /= self.accelerator.num_processes  # each process's loss is a mean over its own batch
        return {
            "loss_sum": float(sums[0]) + self.previous.get("loss_sum", 0.0),
            "tokens": int(sums[1]) + self.previous.get("tokens", 0),
            "seconds": time.perf_counter() - self._segment_start + self.previous.get("seconds", 0.0),
        }


class _RunBookkeeping(TrainerCallback):
    """Applies a resumed run's new schedule; marks each checkpoint complete with the run's totals."""

    def __init__(self, trainer: CompletionTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        # Runs after the Trainer loaded the checkpoint's optimizer and scheduler, whose state holds
        # the old learning rate and weight decay: put this run's values back.
        if self.trainer.schedule_changes and optimizer is not None and self.trainer.fresh_groups:
            apply_schedule(optimizer, lr_scheduler, self.trainer.fresh_groups)
        self.trainer._segment_start = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        totals = self.trainer.totals()  # collective: every process takes part
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            apply_umask(folder)  # safetensors and torch.save leave some of the Trainer's files 0600
            write_json(folder / PROGRESS_FILE, {"global_step": state.global_step, **totals,
                                                "settings": self.trainer.run_settings})


def target_logits_only(model, inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch with the model asked for logits only at the positions that predict a target
    (`logits_to_keep`: those positions; `shift_labels`: their targets). The loss is the same
    cross-entropy over the same targets, but with the loss on the completion, a 49k-token
    vocabulary's projection and softmax skip the prompt, most of each window (bench/RESULTS.md).
    A model whose forward takes no `logits_to_keep` gets the batch as it is."""
    labels = inputs.get("labels")
    if labels is None or not takes_logits_to_keep(model):
        return inputs
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    if len(keep) == labels.shape[1] - 1:
        return inputs  # every position predicts a target: nothing to skip
    targets = labels[:, keep + 1]
    return {**inputs, "labels": targets, "shift_labels": targets, "logits_to_keep": keep}


def apply_schedule(optimizer, scheduler, groups: Sequence[dict[str, float]]) -> None:
    """Give a resumed optimizer this run's peak lr and weight decay, at the checkpoint's step of
    this run's schedule (the schedule's shape already comes from this run's arguments)."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise UserError(f"--resume: cannot apply a changed schedule to {type(scheduler).__name__}; "
                        "keep the checkpoint's settings or start a new --output-dir")
    scheduler.base_lrs = [g["lr"] for g in groups]
    for group, fresh, fn in zip(optimizer.param_groups, groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = fresh["lr"]
        group["weight_decay"] = fresh["weight_decay"]
        group["lr"] = fresh["lr"] * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports


def _device_settings() -> dict[str, Any]:
    """Mixed-precision flags for TrainingArguments: fp32 on CPU, bf16 (or fp16) autocast on GPU."""
    from codelora.modeling import compute_dtype

    dtype = compute_dtype()
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "use_cpu": not torch.cuda.is_available()}


# ------------------------------------------------------------------------------------------- run


def world_size() -> int:
    """Processes of this run: torchrun/accelerate set WORLD_SIZE in each."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def parallelism() -> str:
    from codelora.modeling import uses_fsdp

    if world_size() == 1:
        return "single process"
    return "FSDP" if uses_fsdp() else "DDP"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_model(cfg: TrainConfig, quantized: bool, tokenizer=None, fim_tokens=None):
    """The base (4-bit or not) wrapped with fresh LoRA adapters; with FIM, embedding rows for the
    sentinels (reused where the matrix has spare rows) trained too when they are new."""
    from codelora.modeling import add_lora, compute_dtype, load_base_model, uses_fsdp

    device_map = None
    if torch.cuda.is_available() and not uses_fsdp():
        # Each DDP process loads its own copy onto its own GPU (4-bit weights cannot be moved
        # later); under FSDP the wrapper places and shards the weights itself.
        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = load_base_model(cfg.base_model, load_in_4bit=quantized, dtype=compute_dtype(),
                            trust_remote_code=cfg.trust_remote_code, device_map=device_map)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        # The tokenizer's pad token (load_tokenizer falls back to EOS) in the model's configs: the
        # Trainer would set the same and print a "new PAD/BOS/EOS tokens" notice on every run.
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    token_rows: list[int] = []
    if fim_tokens is not None:
        fit_embeddings(model, tokenizer)
        token_rows = trainable_token_indices(fim_tokens)
        if token_rows and not cfg.train_token_rows:
            name_embeddings(model, tokenizer, fim_tokens)
        how = ("trained" if cfg.train_token_rows else "frozen, started at their names' embeddings")
        log.info("FIM: sentinels %s, ids %s (%s)", " ".join(fim_tokens.strings), list(fim_tokens.ids),
                 f"added, their rows {how}" if fim_tokens.added else f"the tokenizer's own, {fim_tokens.family}")
    # Frozen rows still go through peft's trainable tokens, so the adapter stores them as it
    # stores trained ones and the merge restores them the same way.
    return add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                    targets=cfg.target_modules, quantized=quantized, layers=cfg.lora_layers,
                    gradient_checkpointing=cfg.gradient_checkpointing, trainable_token_rows=token_rows,
                    train_token_rows=cfg.train_token_rows)


def training_arguments(cfg: TrainConfig, ckpt_dir: Path, quantized: bool, has_eval: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
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


@contextlib.contextmanager
def tensorboard_dir(path: Path) -> Iterator[None]:
    """transformers 5 takes the tensorboard directory from this variable only. Set it for this run
    and put the caller's value back: a second run in the same process (tests, the pipeline) must
    not log into the first run's directory."""
    saved = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved


def final_eval_loss(trainer: CompletionTrainer) -> float | None:
    """The Trainer evaluates at the last step itself; evaluate again only if that did not happen."""
    if trainer.eval_dataset is None:
        return None
    evals = [row for row in trainer.state.log_history if "eval_loss" in row]
    last = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else None
    return float(last["eval_loss"] if last else trainer.evaluate()["eval_loss"])


def run_metrics(trainer: CompletionTrainer, data: TrainData, quantized: bool, plan: ResumePlan) -> dict[str, Any]:
    """train_metrics.json: the whole run, across resumes (loss, tokens and throughput included)."""
    from codelora.modeling import count_parameters

    trainable, total = count_parameters(trainer.model)
    totals = trainer.totals()
    steps = trainer.state.global_step
    eval_loss = final_eval_loss(trainer)
    return {
        "train_loss": totals["loss_sum"] / steps if steps else None,
        "eval_loss": eval_loss,
        "global_step": steps,
        "epochs": trainer.state.epoch,
        "train_runtime_s": totals["seconds"],
        "train_tokens": totals["tokens"],
        "train_tokens_per_second": totals["tokens"] / totals["seconds"] if totals["seconds"] > 0 else None,
        "non_padding_fraction": data.non_padding_fraction,
        "eval_examples": len(data.eval) if data.eval is not None else 0,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "load_in_4bit": quantized,
        "num_processes": trainer.accelerator.num_processes,
        "parallelism": "FSDP" if trainer.is_fsdp_enabled else parallelism(),
        "resumed_from": str(plan.checkpoint) if plan.checkpoint else None,
        "changed_on_resume": plan.changes or None,
        "log_history": trainer.state.log_history,
    }


def train(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, write OUTPUT_DIR (see the module docstring) and return train_metrics.json's content.
    `callbacks`: extra transformers TrainerCallbacks (progress hooks, tests). Ctrl-C says which
    checkpoint is complete and how to continue from it."""
    try:
        return _train(cfg, callbacks)
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        raise Interrupted(interrupt_advice(cfg, checkpoints_dir(cfg.output_dir))) from None


def _train(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    from codelora import hub
    from codelora.modeling import load_tokenizer, model_source, resolve_load_in_4bit

    if is_main_process():  # one check (rank 0 under a launcher), before anything is written
        guard_stage_output("train", cfg)
    check_local_or_hub("--dataset", cfg.dataset)
    check_local_or_hub("--base-model", cfg.base_model)
    if cfg.num_processes > 1 and world_size() == 1:
        model_source(cfg.base_model)  # a GGUF base is converted here once, not by every process at once
        return launch(cfg)
    if not is_main_process():
        logging.getLogger("codelora").setLevel(logging.WARNING)  # one copy of each log line under DDP
    log.info("training on %d process%s%s", world_size(), "es" if world_size() > 1 else "",
             f" ({parallelism()}, {'GPUs' if torch.cuda.is_available() else 'CPU over gloo'})"
             if world_size() > 1 else "")
    out = Path(cfg.output_dir)
    ckpt_dir = checkpoints_dir(out)
    # Credentials first: a rejected token must fail now, not after hours of training.
    token = hub.check_push_access(cfg.push_to_hub) if cfg.push_to_hub else None
    plan = plan_resume(cfg, ckpt_dir, num_processes=world_size(), main=is_main_process())

    seed_everything(cfg.seed)
    on_gpu = torch.cuda.is_available()
    tokenizer = load_tokenizer(cfg.base_model, cfg.trust_remote_code)
    tokenizer.padding_side = "right"  # training pads on the right; generation code pads left itself
    check_dataset_tokenizer(cfg, tokenizer)  # before FIM adds its sentinels to the tokenizer
    data = prepare_data(cfg, tokenizer, on_gpu)
    quantized = resolve_load_in_4bit(cfg.load_in_4bit)
    model = build_model(cfg, quantized, tokenizer, data.fim_tokens)
    if is_main_process():
        write_output_marker(out, "train")  # before the first file: a later run may continue in it
    with tensorboard_dir(out / "logs"):  # read when the TrainingArguments are built
        trainer = CompletionTrainer(
            model=model,
            args=training_arguments(cfg, ckpt_dir, quantized, data.eval is not None),
            train_dataset=data.train,
            eval_dataset=data.eval,
            data_collator=CompletionCollator(tokenizer.pad_token_id, pad_multiple(on_gpu)),
            processing_class=tokenizer,
            callbacks=list(callbacks),
            length_sampler=data.sampler,
            previous=plan.previous,
            run_settings=settings_of(cfg, world_size()),
            schedule_changes=plan.changes,
        )
        trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
    metrics = run_metrics(trainer, data, quantized, plan)
    save_adapter(trainer, adapter_dir(out), cfg.base_model)
    if trainer.is_world_process_zero():
        _write_outputs(cfg, out, metrics, quantized)
        if cfg.push_to_hub:
            _push(cfg, adapter_dir(out), metrics, quantized, token)
    trainer.accelerator.wait_for_everyone()
    return metrics


def check_dataset_tokenizer(cfg: TrainConfig, tokenizer) -> None:
    """Refuse a dataset windowed with another tokenizer than the base model's (its stats.json says
    which): its token budgets (prompt, completion, max_length) and EOS are that tokenizer's."""
    from codelora.contracts import read_dataset_stats, tokenizer_fingerprint
    from codelora.utils import local_path

    stats = read_dataset_stats(Path(cfg.dataset)) if Path(cfg.dataset).is_dir() else None
    name = (stats or {}).get("tokenizer")
    if not name:
        return  # a Hub dataset, or one that records no tokenizer: nothing to compare
    recorded = stats.get("tokenizer_fingerprint")
    if recorded:
        same = recorded == tokenizer_fingerprint(tokenizer)
    else:  # written before fingerprints were recorded: compare the names
        same = name == cfg.base_model or (local_path(name) is not None
                                          and local_path(name) == local_path(cfg.base_model))
    if same:
        return
    how = "" if recorded else " (by name; this dataset records no tokenizer fingerprint)"
    message = (f"--dataset {cfg.dataset} was windowed with the tokenizer of {name} (its stats.json), which "
               f"is not {cfg.base_model}'s{how}: token counts and EOS differ")
    if cfg.allow_tokenizer_mismatch:
        log.warning("--allow-tokenizer-mismatch: %s", message)
        return
    raise UserError(f"{message}. Preprocess again with --tokenizer {cfg.base_model}, or pass "
                    "--allow-tokenizer-mismatch if they are the same tokenizer")


def interrupt_advice(cfg: TrainConfig, ckpt_dir: Path) -> str:
    """What an interrupted training leaves and how to continue it."""
    last = latest_checkpoint(ckpt_dir)
    every = f"one is saved every --save-steps {cfg.save_steps} steps"
    if last is not None:
        return (f"{last} (step {checkpoint_step(last)}) is the newest complete checkpoint: rerun the same "
                "command with --resume to continue from it (codelora pipeline: rerun it as it was)")
    if incomplete_checkpoints(ckpt_dir):
        return (f"no complete checkpoint in {ckpt_dir} ({every}; the one being written is incomplete): rerun "
                "with --resume auto to start over")
    return f"no checkpoint yet ({every}): rerunning the same command starts over"


def save_adapter(trainer: CompletionTrainer, dest: Path, base_model: str) -> None:
    """adapter_config.json + adapter_model.safetensors + tokenizer into `dest`, atomically, with
    the base's weights fingerprint (merge_lora.py refuses another base).

    Every process calls this: under FSDP, save_model gathers the full adapter from all of them
    (and refuses non-finite weights); the main process writes and moves the result into place.
    """
    from codelora.modeling import BASE_IDENTITY_FILE, weights_fingerprint

    staging = dest.with_name(f".{dest.name}.partial")
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml says the same
        write_json(staging / BASE_IDENTITY_FILE, {"base_model": base_model,
                                                  "weights_fingerprint": weights_fingerprint(base_model)})
        with atomic_dir(dest) as tmp:
            for item in staging.iterdir():
                os.replace(item, tmp / item.name)
        staging.rmdir()
    trainer.accelerator.wait_for_everyone()


def _write_outputs(cfg: TrainConfig, out: Path, metrics: dict[str, Any], quantized: bool) -> None:
    from codelora.plots import plot_loss_curve

    resolved = {"load_in_4bit": quantized, "eval_examples": metrics["eval_examples"]}  # the device defaults
    if metrics["resumed_from"]:
        resolved.update(resumed_from=metrics["resumed_from"], changed_on_resume=metrics["changed_on_resume"])
    save_config(cfg, out / RUN_CONFIG, resolved=resolved)
    write_json(out / "train_metrics.json", metrics)
    plot_loss_curve(metrics["log_history"], out / "loss_curve.png", title=f"{cfg.base_model} on {cfg.dataset}")
    eval_loss = f"{metrics['eval_loss']:.4f}" if metrics["eval_loss"] is not None else "n/a"
    tps = metrics["train_tokens_per_second"]
    log.info("adapter written to %s: %d steps, train loss %.4f, eval loss %s, %s tokens in %.0f s "
             "(%s tokens/s)%s", adapter_dir(out), metrics["global_step"], metrics["train_loss"], eval_loss,
             f"{metrics['train_tokens']:,}", metrics["train_runtime_s"], f"{tps:,.0f}" if tps else "n/a",
             f", whole run (resumed from {Path(metrics['resumed_from']).name})" if metrics["resumed_from"] else "")


# ---------------------------------------------------------------------------------- multi-process


def launch(cfg: TrainConfig) -> int:
    """Rerun this training under `accelerate launch` with cfg.num_processes processes.

    `accelerate launch --num_processes N` alone starts ONE process on a CPU machine (its simple
    launcher needs MPI); `--multi_gpu` goes through torchrun, which works on GPUs (NCCL) and, with
    ACCELERATE_USE_CPU=1, on the CPU (gloo). An --accelerate-config file (FSDP) replaces those flags.
    """
    import subprocess
    import tempfile

    import yaml

    from codelora.config import config_to_dict

    n = cfg.num_processes
    env = dict(os.environ)
    if cfg.accelerate_config:
        if not Path(cfg.accelerate_config).is_file():
            raise UserError(f"--accelerate-config {cfg.accelerate_config}: no such file")
        flags = ["--config_file", cfg.accelerate_config]
    else:
        flags = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
        # N processes share the cores: without this each starts one thread per core and they thrash.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    elif torch.cuda.device_count() < n:
        raise UserError(f"--num-processes {n}: only {torch.cuda.device_count()} GPU(s) visible")
    with tempfile.TemporaryDirectory(prefix="codelora-launch-") as tmp:
        config_file = Path(tmp) / "train.yaml"
        config_file.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", str(n),
               "-m", "codelora.cli", "train", "--config", str(config_file)]
        log.info("launching %d processes: %s", n, " ".join(cmd))
        code = subprocess.run(cmd, env=env).returncode
    if code:
        raise UserError(f"the {n}-process run failed (exit {code}); its errors are above")
    return 0


def _push(cfg: TrainConfig, adapter: Path, metrics: dict[str, Any], quantized: bool, token: str | None) -> None:
    from codelora import cards, hub

    hyper = {
        "load_in_4bit": quantized, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout, "target_modules": cfg.target_modules, "max_length": cfg.max_length,
        "learning_rate": cfg.learning_rate, "lr_scheduler": cfg.lr_scheduler, "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
        "num_processes": metrics["num_processes"], "steps": metrics["global_step"], "seed": cfg.seed,
    }
    card = cards.adapter_card(base_model=cfg.base_model, dataset=cfg.dataset, hyperparameters=hyper,
                              eval_loss=metrics["eval_loss"], train_loss=metrics["train_loss"],
                              repo_id=cfg.push_to_hub)
    hub.push_folder(adapter, cfg.push_to_hub, token=token, card=card, private=cfg.private)


DESCRIPTION = __doc__.split("\n", 1)[0]


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("train", argv)
