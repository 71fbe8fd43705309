"""What one stage writes and another reads, defined once.

The stages talk only through files, so these names and layouts are their interface: the parse
stats sidecar (parse → preprocess), a prepared dataset's stats.json (preprocess → benchmark,
memorization), a training run's folder (train → merge), and the pipeline's markers (which the
pushes leave out, as dot-files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------ parse → preprocess


def parse_stats_path(output: Path) -> Path:
    """Sidecar of parse_data.py's JSON Lines output: its config and per-reason counts."""
    return output.with_name(output.name + ".stats.json")


def read_parse_stats(raw: Path) -> dict | None:
    """The sidecar of `raw` (parse_data.py output), or None when absent or unreadable."""
    return _read_json(parse_stats_path(raw))


# ------------------------------------------------------------------ preprocess → benchmark

DATASET_STATS = "stats.json"  # in a prepared dataset directory, beside dataset_dict.json


def read_dataset_stats(dataset: Path) -> dict | None:
    """A prepared dataset's stats.json, or None when absent or unreadable."""
    return _read_json(Path(dataset) / DATASET_STATS)


def tokenizer_fingerprint(tokenizer) -> str:
    """What makes two tokenizers the same for a prepared dataset (stats.json records it; train.py
    compares the base model's): the vocabulary, added tokens included, and the EOS token."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items())
    blob = json.dumps({"vocab": vocab, "eos": tokenizer.eos_token}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def dataset_mode(dataset: Path) -> str | None:
    """The completion shape (PreprocessConfig.mode) the dataset was cut with: the heldout task's
    stop rule follows it."""
    return ((read_dataset_stats(dataset) or {}).get("windowing") or {}).get("mode")


# ------------------------------------------------------------------ train → merge: a run folder

ADAPTER = "adapter"  # OUTPUT_DIR/adapter: the finished adapter, what merge reads
CHECKPOINTS = "checkpoints"  # OUTPUT_DIR/checkpoints/checkpoint-N: what --resume continues
RUN_CONFIG = "config.yaml"  # OUTPUT_DIR/config.yaml: the configuration that ran


def adapter_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / ADAPTER


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def run_config_of(adapter: Path) -> Path:
    """The training run's config.yaml for an adapter directory (it sits in the run folder)."""
    return adapter.parent / RUN_CONFIG


# ------------------------------------------------------------------ the pipeline's markers

STAGE_MARKER = ".codelora-stage.json"  # in (or beside) a stage's output: what made it
ATTEMPT = ".codelora-attempt.json"  # in train's output_dir while training runs: what --resume may continue


# ------------------------------------------------------------------ every stage's own output directory

# Written by each stage into the directory it writes (bootstrap, preprocess, train, merge, benchmark,
# the demo's corpora): {"stage": NAME}. `--overwrite` replaces, and train/benchmark continue into, only
# a directory that holds it (utils.guard_output_dir): never an input, the working directory, or
# anything another stage or the user put there.
OUTPUT_MARKER = ".codelora-output.json"

# Outputs written before OUTPUT_MARKER existed, recognised by what the stage always writes at the
# top of its directory (a dataset directory has config.yaml too, so config.yaml alone proves nothing),
# and the demo's corpus repositories, whose markers are their own.
_SIGNATURES: dict[str, tuple[tuple[str, ...], ...]] = {  # stage -> any of these sets of paths
    "preprocess": (("dataset_dict.json", DATASET_STATS),),
    "bootstrap": (("bootstrap.json", "bootstrap_config.yaml"),),
    "merge": (("merge_config.yaml", "config.json"),),
    "train": ((f"{ADAPTER}/adapter_config.json",), (f"{ADAPTER}/{STAGE_MARKER}",), (CHECKPOINTS,), (ATTEMPT,)),
    "benchmark": (("summary.json", "results.md"), ("cache", "config.yaml")),
    "demo-corpus": ((".git/codelora-corpus-repo.json",),),
}


def output_owner(folder: Path) -> str | None:
    """The stage that wrote directory `folder` (its OUTPUT_MARKER, else the pipeline's marker, else
    the files an older version of that stage always wrote), or None."""
    for name in (OUTPUT_MARKER, STAGE_MARKER):
        marker = _read_json(folder / name)
        if isinstance(marker, dict) and isinstance(marker.get("stage"), str):
            return marker["stage"]
    for stage, signatures in _SIGNATURES.items():
        if any(all((folder / rel).exists() for rel in signature) for signature in signatures):
            if stage == "preprocess" and "windowing" not in (read_dataset_stats(folder) or {}):
                continue
            return stage
    return None


def write_output_marker(folder: Path, stage: str) -> None:
    """Mark `folder` as `stage`'s own output (what a later --overwrite or continuation may replace)."""
    import time

    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARKER).write_text(json.dumps({
        "stage": stage, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n",
        encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
