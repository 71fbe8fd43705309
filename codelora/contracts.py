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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
