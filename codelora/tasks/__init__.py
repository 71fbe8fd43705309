"""Benchmark tasks: one module per task, registered by name.

A task turns its data into `Example`s (an id, the prompt the model completes, the reference the
completion is scored against), says how generation stops for it and how many tokens it may take,
and scores predictions: per example (for the JSONL and the HTML report) and for the corpus (for
the table). What a task may read of the benchmark's settings is `TaskOptions`, given to its
constructor (the benchmark gives its BenchmarkConfig, which extends it); what else it can do is
a method of `Task` with a default (work before scoring, files for an official evaluator, state
worth caching between runs). Adding a task = one module with a `Task` subclass and a
`make_task(name, options)` + one line in `_MODULES` (+ one `TaskOptions` field if it reads a flag
of its own, such as its data file); `--tasks` accepts what `_MODULES` names.
"""

from __future__ import annotations

import importlib
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from codelora.stops import StopRule
from codelora.metrics import corpus_bleu, edit_similarity, exact_match
from codelora.utils import UserError, opt

@dataclass
class Example:
    id: str
    prompt: str
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskOptions:
    """The benchmark settings tasks read: the task-facing part of BenchmarkConfig (codelora.config),
    which extends this class, so every field is a `benchmarking.py` flag and YAML key too. The
    benchmark hands its config itself to each task's constructor. A task with its own data flag
    adds one field here (`local_input=True` when it names a local file or directory)."""

    dataset: str = opt("data/kotlin_prepared_dataset", "prepared dataset for the heldout task", local_input=True)
    heldout_split: Literal["test", "validation"] = opt(
        "test", "split the heldout task scores: validation to tune hyperparameters, test to report once")
    codexglue_data: str | None = opt(None, "CodeXGLUE method-generation JSONL or Hub id", local_input=True)
    codexglue_prompt: Literal["natural", "tokens"] = opt(
        "natural", "codexglue prompt: natural = decoded Python with an indented docstring; tokens = the "
        "dataset's own signature<EOL>\"\"\"docstring\"\"\"<EOL> token format (what published runs used)")
    codexglue_literals: str | None = opt(
        None, "CodeXGLUE literals.json used to normalise predictions' literals (default: the literals the data shows)",
        local_input=True)
    codexglue_line_data: str | None = opt(None, "CodeXGLUE line-completion JSONL ({input, gt})", local_input=True)
    codexglue_line_literals: str | None = opt(
        None, "literals.json of the line-level dataset, to normalise predictions' literals (default: those the data "
        "shows)", local_input=True)
    codexglue_line_language: Literal["auto", "python", "java"] = opt(
        "auto", "codexglue-line language: stop rule and tokenizer (auto: python if inputs hold <EOL>, else java)")
    mceval_data: str | None = opt(None, "McEval Kotlin JSONL (tasks mceval-kotlin, mceval-kotlin-fim); "
                                  "default: the copy codelora ships (data/benchmarks/mceval_kotlin.jsonl)",
                                  local_input=True)
    mbkp_data: str | None = opt(None, "MBXP/mxeval Kotlin JSONL (task mbkp): task_id, prompt, test, entry_point, "
                                "canonical_solution (may be null)", local_input=True)
    humaneval_kt_data: str | None = opt(None, "HumanEval-Kotlin (task humaneval-kt): MultiPL-E's JSONL (name, prompt, "
                                        "tests, stop_tokens), or MXEval records such as the Hub dataset "
                                        "JetBrains/Kotlin_HumanEval; evaluation only, never training data; default: "
                                        "the copy codelora ships (data/benchmarks/humaneval_kt.jsonl)",
                                        local_input=True)
    loss_data: str | None = opt(None, "general-loss: a parse_data.py JSON Lines file of code the finetune never "
                                "trained on (e.g. the language's standard library); each model's loss on it",
                                local_input=True)
    loss_tokens: int = opt(256, "general-loss: tokens scored from the start of each file")
    loss_files: int = opt(64, "general-loss: files scored (a seeded sample when the file has more)")
    sample: int | None = opt(None, "evaluate a seeded random sample of N examples per task")
    seed: int = opt(42, "seed for sampling and generation")
    num_beams: int = opt(1, "beam search width (1 = greedy)")
    do_sample: bool = opt(False, "sample instead of greedy/beam")
    temperature: float = opt(0.2, "sampling temperature (with --do-sample)")
    top_p: float = opt(0.95, "nucleus sampling p (with --do-sample)")
    allow_code_execution: bool = opt(False, "run generated code (sandboxed) for pass@1")
    exec_timeout: float = opt(30.0, "seconds each generated Kotlin program may run (its compilation, batched, is "
                              "bounded separately)")
    kotlinc: str | None = opt(None, "Kotlin compiler to use (default: the project's .tools/kotlinc from "
                              "`make kotlin`, else kotlinc on PATH)", local_input=True)
    n_samples: int = opt(1, "samples per problem for the execution tasks: pass@k for every k <= N (Chen et al. "
                         "2021's unbiased estimator); N > 1 samples with --temperature/--top-p (seeded)")
    unsafe_no_sandbox: bool = opt(
        False, "with --allow-code-execution: run generated programs WITHOUT isolation (no bubblewrap; "
        "limits only), e.g. where the kernel refuses namespaces; only for code you trust")

    @classmethod
    def local_inputs(cls) -> tuple[str, ...]:
        """The fields that name local inputs (the benchmark's output must not be one of them)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("local_input"))


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
    """The registry's task names, in its order (`--tasks` is checked against them)."""
    return list(_MODULES)


def get_task(name: str, options: TaskOptions) -> Task:
    if name not in _MODULES:
        raise UserError(f"unknown task '{name}' (known: {', '.join(_MODULES)})")
    module = importlib.import_module(_MODULES[name])
    return module.make_task(name, options)
