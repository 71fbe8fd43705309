"""Checkpoint bookkeeping for train.py's --resume: which checkpoints are complete (the progress
file written last into each one), which one to continue, and which settings may change on resume.
`codelora.training` writes the progress file at each save and asks `plan_resume` before it starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codelora.config import TrainConfig
from codelora.utils import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Written last into each checkpoint, atomically: its presence is what makes a checkpoint complete
# (a `kill -9` during a save leaves a directory without it), and it carries what a resume needs
# besides the Trainer's own state: the settings that ran and the whole run's totals so far.
PROGRESS_FILE = "codelora_progress.json"
# A resume may change these: the new schedule is applied from the checkpoint's step on.
SCHEDULE_SETTINGS = ("learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "max_steps", "epochs")
# These define the model or the data stream; a resume with other values would not continue the run.
FIXED_SETTINGS = ("base_model", "dataset", "load_in_4bit", "lora_r", "lora_alpha", "lora_dropout",
                  "target_modules", "lora_layers", "max_length", "batch_size", "grad_accum",
                  "max_train_samples", "group_by_length", "seed", "num_processes")


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose save finished (PROGRESS_FILE present), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted((p for p in found if (p / PROGRESS_FILE).is_file()), key=checkpoint_step)


def incomplete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    done = set(complete_checkpoints(folder))
    return [p for p in folder.glob("checkpoint-*") if p.is_dir() and p not in done]


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    done = complete_checkpoints(folder)
    return done[-1] if done else None


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    import torch

    return [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def last_good_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint whose adapter weights are all finite."""
    from safetensors.torch import load_file

    for ckpt in reversed(complete_checkpoints(folder)):
        weights = ckpt / "adapter_model.safetensors"
        if weights.is_file() and not non_finite_tensors(load_file(weights)):
            return ckpt
    return None


def read_progress(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / PROGRESS_FILE).read_text(encoding="utf-8"))


def settings_of(cfg: TrainConfig, num_processes: int) -> dict[str, Any]:
    values = dataclasses.asdict(cfg)
    values["num_processes"] = num_processes
    return {k: values[k] for k in (*SCHEDULE_SETTINGS, *FIXED_SETTINGS)}


def resume_changes(saved: dict[str, Any], now: dict[str, Any], checkpoint: Path) -> dict[str, list[Any]]:
    """{setting: [checkpoint's value, this run's value]} for changed schedule settings; a changed
    fixed setting is refused, naming each one."""
    fixed = [k for k in FIXED_SETTINGS if k in saved and saved[k] != now[k]]
    if fixed:
        diffs = ", ".join(f"{k} {saved[k]!r} (now {now[k]!r})" for k in fixed)
        raise UserError(f"--resume: {checkpoint} was trained with {diffs}; these cannot change mid-run. "
                        f"Resume with the checkpoint's values, or start a new --output-dir")
    return {k: [saved[k], now[k]] for k in SCHEDULE_SETTINGS if k in saved and saved[k] != now[k]}


@dataclasses.dataclass
class ResumePlan:
    checkpoint: Path | None = None
    previous: dict[str, Any] = dataclasses.field(default_factory=dict)
    changes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


def plan_resume(cfg: TrainConfig, ckpt_dir: Path, *, num_processes: int, main: bool) -> ResumePlan:
    """Which checkpoint to continue (if any) and what changed; refuses an impossible resume.
    `num_processes`: this run's (a fixed setting); `main`: whether this process may delete files."""
    partial = incomplete_checkpoints(ckpt_dir)
    existing = latest_checkpoint(ckpt_dir)
    if cfg.resume == "no":
        if existing is not None or partial:
            raise UserError(f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                            f"or choose another --output-dir")
        return ResumePlan()
    if partial and main:
        # Left by a crash during a save (no PROGRESS_FILE): unusable, and the Trainer's rotation
        # could otherwise keep them over a good one. Removed before anything else is written.
        for path in partial:
            log.warning("removing %s: its save never finished (interrupted run)", path)
            shutil.rmtree(path, ignore_errors=True)
    if existing is None:
        if cfg.resume == "yes":
            raise UserError(f"--resume: no complete checkpoint in {ckpt_dir} (wrong --output-dir?); "
                            f"use --resume auto to start from scratch when there is none")
        log.info("--resume auto: no checkpoint in %s, starting from scratch", ckpt_dir)
        return ResumePlan()
    previous = read_progress(existing)
    changes = resume_changes(previous.get("settings", {}), settings_of(cfg, num_processes), existing)
    log.info("resuming from %s%s", existing, "".join(
        f"; {k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return ResumePlan(existing, previous, changes)
