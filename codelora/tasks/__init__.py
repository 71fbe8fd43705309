"""Benchmark tasks: one module per task, registered by name.

A task turns its data into `Example`s (an id, the prompt the model completes, the reference the
completion is scored against), says how generation stops for it and how many tokens it may take,
and scores predictions: per example (for the JSONL and the HTML report) and for the corpus (for
the table). What a task may read of the benchmark's settings is `TaskOptions`, given to its
constructor; what else it can do is a method of `Task` with a default (work before scoring,
files for an official evaluator, state worth caching between runs). Adding a task = one module
with a `Task` subclass + one line in `_MODULES`.
"""

from __future__ import annotations

import importlib
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from codelora.stops import StopRule
from codelora.metrics import corpus_bleu, edit_similarity, exact_match
from codelora.utils import UserError

@dataclass
class Example:
    id: str
    prompt: str
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOptions:
    """The benchmark settings tasks read, by the names of BenchmarkConfig's fields (documented there
    and in `benchmarking.py --help`); the defaults are BenchmarkConfig's (a test keeps them equal)."""

    dataset: str = "data/kotlin_prepared_dataset"
    heldout_split: str = "test"
    sample: int | None = None
    seed: int = 42
    codexglue_data: str | None = None
    codexglue_prompt: str = "natural"
    codexglue_literals: str | None = None
    codexglue_line_data: str | None = None
    codexglue_line_language: str = "auto"
    codexglue_line_literals: str | None = None
    mceval_data: str | None = None
    mbkp_data: str | None = None
    humaneval_kt_data: str | None = None
    loss_data: str | None = None
    loss_tokens: int = 256
    loss_files: int = 64
    allow_code_execution: bool = False
    exec_timeout: float = 30.0
    kotlinc: str | None = None
    unsafe_no_sandbox: bool = False
    n_samples: int = 1
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 0.2
    top_p: float = 0.95

    @classmethod
    def from_config(cls, cfg: Any) -> TaskOptions:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


class Task(ABC):
    name: str = ""
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # > 0 where a reference is never empty: EOS may not come first
    per_model_prompts: bool = False  # prompt_for depends on the model's tokenizer
    metrics: tuple[str, ...] = ("es", "em", "bleu")
    n_samples: int = 1  # completions generated per example (pass@k)
    generates: bool = True  # False: scored from the model itself (its loss), nothing is generated

    def __init__(self, options: TaskOptions):
        self.options = options

    @abstractmethod
    def load(self) -> list[Example]:
        """Read the task's data; a missing or malformed input is a UserError."""

    @abstractmethod
    def stop_rule(self, example: Example) -> StopRule:
        """How generation for `example` ends (EOS is always an end too)."""

    @abstractmethod
    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        """(per-example scores, corpus scores) for `predictions` aligned with `examples`."""

    def describe(self) -> dict[str, Any]:
        """Facts about how the task was run, for summary.json."""
        return {}

    def prepare(self, examples: Sequence[Example], predictions: dict[str, Sequence[str]]) -> None:
        """Work for every model's predictions at once, before `score` asks model by model (the
        Kotlin tasks compile all programs in one batch); none by default."""

    def evaluator_files(self, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, str]:
        """{file name: text} an official evaluator reads ("answers.*" once per task, the others
        per model); none by default."""
        return {}

    def cached_state(self) -> dict[str, Any]:
        """What the task computed that the next run over the same output may reuse (JSON-able)."""
        return {}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Take back what `cached_state` returned in an earlier run."""

    def compared(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[str], list[str]]:
        """(predictions, references) as this task's scores compare them; the model-dependent
        metrics (embedding cosine, computed by the benchmark while the model is loaded) use these."""
        return [p.rstrip() for p in predictions], [e.reference.rstrip() for e in examples]

    def prompt_for(self, example: Example, tokenizer) -> str:
        """The text a model with this tokenizer continues; the same for every model unless the
        task sets `per_model_prompts` (FIM: sentinels where the tokenizer has them)."""
        return example.prompt

    def prompt_format(self, tokenizer) -> str:
        """How `prompt_for` phrases prompts for this tokenizer (recorded per model)."""
        return "plain"


def text_scores(refs: Sequence[str], preds: Sequence[str]) -> tuple[list[dict], dict]:
    """ES (fuzz.ratio), EM (whitespace tokens) per example; their means and corpus BLEU-4.

    Strings arrive already normalised by the task, so the scores are those the task's evaluator
    would print for these lines. ES and EM are reported on 0..100 like CodeXGLUE.
    """
    rows = [{"es": edit_similarity(p, r), "em": int(exact_match(p, r))} for p, r in zip(preds, refs)]
    if not rows:
        return rows, {"es": None, "em": None, "bleu": None, "n": 0}
    corpus = {
        "es": round(statistics.fmean(row["es"] for row in rows), 2),
        "em": round(100 * statistics.fmean(row["em"] for row in rows), 2),
        "bleu": corpus_bleu(list(refs), list(preds)).score,
        "n": len(rows),
    }
    return rows, corpus


_MODULES = {
    "heldout": "codelora.tasks.heldout",
    "heldout-fim": "codelora.tasks.heldout_fim",
    "codexglue": "codelora.tasks.codexglue",
    "codexglue-line": "codelora.tasks.codexglue_line",
    "mceval-kotlin": "codelora.tasks.kotlin",
    "mceval-kotlin-fim": "codelora.tasks.kotlin_fim",
    "mbkp": "codelora.tasks.kotlin",
    "humaneval-kt": "codelora.tasks.kotlin",
    "general-loss": "codelora.tasks.general_loss",
}


def task_names() -> list[str]:
    return list(_MODULES)


def get_task(name: str, options: TaskOptions) -> Task:
    if name not in _MODULES:
        raise UserError(f"unknown task '{name}' (known: {', '.join(_MODULES)})")
    module = importlib.import_module(_MODULES[name])
    return module.make_task(name, options)
