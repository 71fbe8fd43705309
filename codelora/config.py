"""One documented dataclass per stage, filled from defaults, then a YAML file, then CLI flags.

Every field becomes a flag: `max_bytes` is `--max-bytes` (and `--max_bytes`, for the reference
project's spelling). A YAML file may be flat (`max_bytes: 1000`) or hold one section per stage
(`parse: {max_bytes: 1000}`), so one file can configure the whole pipeline. Unknown keys are an
error, not silently ignored. `__post_init__` validates combinations before any heavy work.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from codelora.contracts import adapter_dir
from codelora.tasks import TaskOptions, task_names
from codelora.utils import UserError, atomic_file, opt


def fingerprinted(f: dataclasses.Field) -> bool:
    return f.metadata.get("fingerprint", True)


# --------------------------------------------------------------------------------------- stages

# Module names LoRA adapts on Phi: attention projections, attention output (`dense`), and the MLP.
PHI_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")


@dataclass
class ParseConfig:
    """parse_data.py: git repository → one JSON line per kept source file."""

    repo: list[str] = opt(
        factory=lambda: ["https://github.com/JetBrains/kotlin"],
        help="git URL, file:// URL or local path (repeatable); a plain directory also works",
    )
    revision: str | None = opt(None, "branch, tag or commit to read (default: the remote's HEAD)")
    extensions: list[str] = opt(factory=lambda: [".kt"], help="file extensions to keep, e.g. .kt .kts")
    output: str = opt("data/kotlin_code_raw.jsonl", "output JSON Lines file")
    min_bytes: int = opt(32, "drop files smaller than this many bytes")
    max_bytes: int = opt(1_000_000, "drop files larger than this many bytes")
    exclude_dirs: list[str] = opt(
        factory=lambda: [
            "build", "out", "dist", "target", "vendor", "vendored", "third_party", "thirdparty",
            "node_modules", "generated", "gen", ".gradle", ".idea",
        ],
        help="directory names whose files are dropped as vendored/generated/build output",
    )
    depth: int = opt(1, "clone depth for remote URLs (0 = full history)")

    def __post_init__(self) -> None:
        if not self.repo:
            raise UserError("--repo: give at least one repository")
        if not self.extensions:
            raise UserError("--extensions: give at least one extension")
        self.extensions = [e if e.startswith(".") else f".{e}" for e in self.extensions]
        if self.min_bytes < 0 or self.max_bytes <= self.min_bytes:
            raise UserError("--min-bytes/--max-bytes: need 0 <= min-bytes < max-bytes")
        if self.depth < 0:
            raise UserError("--depth must be >= 0")


@dataclass
class PreprocessConfig:
    """preprocess_data.py: raw JSON Lines → cleaned, windowed, file-split DatasetDict."""

    input: str = opt("data/kotlin_code_raw.jsonl", "parse_data.py output")
    tokenizer: str = opt("microsoft/phi-1_5", "tokenizer: Hub id, local directory, .gguf file or "
                                              "smollm2-135m")
    output: str = opt("data/kotlin_prepared_dataset", "output directory (datasets.save_to_disk)")
    mode: Literal["lines", "line", "next-line", "chunk"] = opt(
        "lines",
        "completion shape: 'lines' (default) = whole lines up to --completion-tokens; "
        "'line' = rest of the current line; 'next-line' = the following line; "
        "'chunk' = fixed token chunks like the reference's ~100-token chunks",
    )
    prompt_tokens: int = opt(256, "maximum prompt (context) length in tokens")
    completion_tokens: int = opt(64, "maximum completion length in tokens")
    stride: int = opt(64, "tokens between the starts of consecutive windows in a file")
    min_lines: int = opt(5, "drop cleaned files with fewer non-blank lines")
    max_digit_run: int = opt(200, "drop files containing a run of more digits than this")
    max_token_chars: int = opt(500, "drop files containing a non-space token longer than this")
    strip_license: bool = opt(True, "strip a licence/copyright comment at the top of each file")
    near_dup_threshold: float = opt(
        0.5,
        "files whose estimated Jaccard similarity (MinHash of word 5-grams) is at least this share a "
        "split, closed transitively; 1 = only whitespace-equal copies. 0.5 (not BigCode's 0.85 for "
        "dedup): half the shingles shared means whole blocks of lines shared, i.e. leaked completions",
    )
    passage_max_files: int = opt(
        5,
        "also keep in one split the files that share a passage (3 consecutive non-blank lines, >= 40 "
        "non-space characters) found in at most this many files (expect/actual twins, copied KDoc); "
        "0 = off. Commoner passages are boilerplate and would chain the corpus into one group",
    )
    contamination_data: list[str] = opt(
        factory=list,
        help="benchmark JSON Lines files in use (HumanEval-Kotlin, McEval, CodeXGLUE): files sharing a "
        "--contamination-ngram with any of their tasks are reported and dropped",
    )
    contamination_ngram: int = opt(20, "word tokens in a shared run that counts as contamination")
    drop_contaminated: bool = opt(True, "drop contaminated files (--no-drop-contaminated: only report them)")
    dedup: Literal["none", "near"] = opt(
        "none", "'near': also drop near-duplicate files inside train (one kept per cluster), counted per reason")
    train_ratio: float = opt(0.98, "fraction of files in train")
    validation_ratio: float = opt(0.01, "fraction of files in validation (test gets the rest)")
    seed: int = opt(42, "seed for the split and sampling")
    max_train_samples: int | None = opt(None, "keep a seeded random sample of this many train examples")
    fim_rate: float = opt(0.0, "fraction of train examples made fill-in-the-middle (Bavarian et al. 2022 use 0.5)")
    fim_spm_rate: float = opt(0.5, "fraction of the FIM examples in SPM order (the rest PSM)")
    fim_shapes: list[str] = opt(
        factory=lambda: ["span", "line", "block"],
        help="FIM middle shapes to draw from: span (random characters), line (one whole line), block (2-8 lines)",
    )
    # 1: the tokenizer already uses every core, and 2 processes measured slower (bench/RESULTS.md, --num-proc)
    num_proc: int = opt(1, "processes for the cleaning and windowing maps; the tokenizer already uses every "
                           "core inside one process, so more pay off only on many cores, where one process's Python "
                           "work (cleaning, windowing) becomes the bottleneck (on 2 cores, 2 processes measured "
                           "0.82-1.02x of 1 as medians, slower on the whole: keep 1 there; bench/preprocess.py "
                           "measures yours)", fingerprint=False)
    overwrite: bool = opt(False, "replace an earlier preprocess_data.py output at --output (any other "
                                 "non-empty directory is always refused)", fingerprint=False)
    push_to_hub: str | None = opt(None, "push the DatasetDict to this Hub dataset repo (USER/NAME)",
                                  fingerprint=False)
    private: bool = opt(False, "make the pushed dataset private", fingerprint=False)

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "stride", "num_proc"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        if not (0 < self.train_ratio <= 1 and 0 <= self.validation_ratio < 1):
            raise UserError("--train-ratio must be in (0, 1] and --validation-ratio in [0, 1)")
        if self.train_ratio + self.validation_ratio > 1 + 1e-9:
            raise UserError("--train-ratio + --validation-ratio must not exceed 1")
        if self.contamination_ngram < 5:
            raise UserError("--contamination-ngram must be >= 5 (shorter runs match ordinary code)")
        if not 0 < self.near_dup_threshold <= 1:
            raise UserError("--near-dup-threshold must be in (0, 1]")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise UserError("--max-train-samples must be >= 1")
        if not (0 <= self.fim_rate <= 1 and 0 <= self.fim_spm_rate <= 1):
            raise UserError("--fim-rate and --fim-spm-rate must be in [0, 1]")
        unknown = sorted(set(self.fim_shapes) - {"span", "line", "block"})
        if unknown or not self.fim_shapes:
            raise UserError(f"--fim-shapes: choose from span line block (got {' '.join(self.fim_shapes)})")


@dataclass
class TrainConfig:
    """train.py: QLoRA finetuning of a causal LM on prompt/completion pairs (loss on completions)."""

    base_model: str = opt("microsoft/phi-1_5", "base model: Hub id, local directory, .gguf file, or "
                          "smollm2-135m (the packaged SmolLM2-135M-Instruct GGUF)")
    dataset: str = opt("data/kotlin_prepared_dataset", "save_to_disk directory or Hub dataset id")
    output_dir: str = opt("runs/phi15-kotlin", "run directory (adapter/, checkpoints/, logs)")
    load_in_4bit: bool | None = opt(None, "4-bit NF4 QLoRA (default: on with CUDA, off on CPU)")
    trust_remote_code: bool = opt(False, "allow custom model code from the Hub")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    target_modules: list[str] | None = opt(
        None, "module names to adapt, each must match a module, or all-linear (default: by the base's "
        "architecture: phi q/k/v_proj dense fc1 fc2; llama q/k/v/o_proj gate/up/down_proj; others "
        "all-linear)")
    lora_layers: int | None = opt(
        None, "LoRA on the top N transformer layers only (default: all): the backward pass then stops at the "
        "lowest adapted layer, so training is faster")
    train_token_rows: bool = opt(
        True, "train the embedding rows of the FIM sentinels codelora adds to a tokenizer without them; "
        "--no-train-token-rows: keep them frozen, started at the mean embedding of their names' words, so "
        "with --lora-layers the backward pass stops at the lowest adapted layer (~30%% faster a step for "
        "SmolLM2 with 10 of 30 layers)")
    max_length: int = opt(512, "truncate prompt+completion+EOS to this many tokens (prompt cut from the left)")
    completion_only_loss: bool = opt(
        True, "loss on completion (+ EOS, see --eos-after) tokens only (TRL's completion_only_loss); "
        "--no-completion-only-loss: on "
        "every token, prompt included (axolotl's train_on_inputs): ~10x more targets per window for next-line "
        "windows, whose completion is one line. The eval loss stays on completions")
    eos_after: Literal["every", "fim"] = opt(
        "every", "where the loss teaches EOS: after 'every' completion (TRL's prompt/completion default), or "
        "only after FIM middles ('fim'), where the text does end: a window cut from a file goes on, and an EOS "
        "after every next-line window teaches the model to stop after one line")
    learning_rate: float = opt(2e-4, "peak learning rate")
    lr_scheduler: str = opt("cosine", "transformers scheduler name")
    warmup_ratio: float = opt(0.03, "fraction of steps for linear warmup")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    epochs: float = opt(1.0, "training epochs (ignored when --max-steps > 0)")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1: use --epochs)")
    batch_size: int = opt(8, "examples per device per step")
    grad_accum: int = opt(1, "gradient accumulation steps")
    max_train_samples: int | None = opt(None, "use at most this many train examples")
    max_eval_samples: int | None = opt(
        None, "validation examples per eval loss (default: 200 with CUDA, 40 on CPU, where one eval of 200 "
        "takes ~30 min for Phi-1.5; 0 = the whole split)")
    group_by_length: bool = opt(True, "batch examples of similar length (less padding)")
    gradient_checkpointing: bool = opt(False, "trade compute for memory (non-reentrant on GPU)")
    eval_steps: int = opt(200, "eval loss on validation every N steps")
    save_steps: int = opt(200, "checkpoint every N steps")
    logging_steps: int = opt(10, "log the train loss every N steps")
    save_total_limit: int = opt(3, "keep at most this many checkpoints")
    seed: int = opt(42, "random seed")
    resume: Literal["no", "yes", "auto"] = opt(
        "no", "--resume: continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints (an error "
        "if there is none); --resume auto: continue if there is one, else start", const="yes", fingerprint=False)
    num_processes: int = opt(1, "data-parallel processes (launches accelerate itself; CPU or one per GPU)")
    accelerate_config: str | None = opt(
        None, "accelerate config file for --num-processes, e.g. configs/accelerate/fsdp-phi.yaml (FSDP)")
    push_to_hub: str | None = opt(None, "push the adapter to this Hub model repo (USER/NAME)", fingerprint=False)
    private: bool = opt(False, "make the pushed repo private", fingerprint=False)
    allow_tokenizer_mismatch: bool = opt(
        False, "train on a dataset windowed with another tokenizer than the base model's (stats.json says "
        "which); refused by default: its token counts and EOS are the other tokenizer's", fingerprint=False)

    def __post_init__(self) -> None:
        if self.lora_r < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise UserError("--lora-r, --batch-size and --grad-accum must be >= 1")
        if self.target_modules is not None and not self.target_modules:
            raise UserError("--target-modules: give at least one module name")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise UserError("--lora-layers must be >= 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise UserError("give --epochs > 0 or --max-steps > 0")
        if isinstance(self.resume, bool):  # YAML `resume: true`
            self.resume = "yes" if self.resume else "no"
        if self.resume not in ("no", "yes", "auto"):
            raise UserError(f"--resume: expected no flag, 'auto', or true/false, got {self.resume!r}")
        if self.num_processes < 1:
            raise UserError("--num-processes must be >= 1")
        if self.max_eval_samples is not None and self.max_eval_samples < 0:
            raise UserError("--max-eval-samples must be >= 0 (0 = the whole validation split)")


@dataclass
class MergeConfig:
    """merge_lora.py: LoRA adapter + unquantized base → one full model."""

    adapter: str = opt("runs/phi15-kotlin/adapter", "adapter directory or Hub repo")
    output: str = opt("runs/phi15-kotlin/merged", "output directory for the merged model")
    base_model: str | None = opt(None, "override the base model named in adapter_config.json (a Hub id, "
                                 "directory, .gguf file or smollm2-135m)")
    dtype: Literal["float16", "bfloat16", "float32"] = opt("float32", "dtype of the merged weights")
    overwrite: bool = opt(False, "replace an existing output directory", fingerprint=False)
    force: bool = opt(False, "merge into a base whose weights differ from those the adapter was trained on")
    push_to_hub: str | None = opt(None, "push the merged model to this Hub repo (not the adapter's)", fingerprint=False)
    hf_repository: str | None = opt(None, "alias of --push-to-hub (reference workflow)", fingerprint=False)
    private: bool = opt(False, "make the pushed repo private", fingerprint=False)
    trust_remote_code: bool = opt(False, "allow custom model code from the Hub")

    def __post_init__(self) -> None:
        if self.push_to_hub and self.hf_repository and self.push_to_hub != self.hf_repository:
            raise UserError("--push-to-hub and --hf_repository name different repos; give one")
        self.push_to_hub = self.push_to_hub or self.hf_repository


@dataclass
class BenchmarkConfig(TaskOptions):
    """benchmarking.py: base vs finetuned on each task; the first model is the baseline. The settings
    tasks read are TaskOptions' (codelora.tasks), inherited; the benchmark's own are below."""

    models: list[str] = opt(factory=lambda: ["microsoft/phi-1_5"],
                            help="Hub ids, local dirs, .gguf files or smollm2-135m; first = baseline")
    hf_repository: str | None = opt(None, "reference workflow: compare microsoft/phi-1_5 with this repo",
                                    fingerprint=False)
    tasks: list[str] = opt(factory=lambda: ["heldout"], help=f"tasks to run: {' '.join(task_names())}")
    output: str = opt("results/phi15-kotlin", "output directory")
    task_sample: list[str] = opt(factory=list, help="TASK=N: a seeded sample of N for that task instead of "
                                 "--sample (repeatable), e.g. heldout-fim=128 mceval-kotlin=24")
    batch_size: int = opt(32, "generation batch size (prompts are length-sorted and left-padded)")
    max_new_tokens: int | None = opt(None, "override each task's max_new_tokens")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "model dtype (auto: fp32 on CPU; on a GPU bf16 where it is supported, else fp16)")

    def __post_init__(self) -> None:
        if self.hf_repository:
            self.models = ["microsoft/phi-1_5", self.hf_repository]
        if not self.models:
            raise UserError("--models: give at least one model")
        known = task_names()
        for name in self.tasks:
            if name not in known:
                raise UserError(f"--tasks: unknown task '{name}' (known: {', '.join(known)})")
        if self.batch_size < 1 or self.num_beams < 1:
            raise UserError("--batch-size and --num-beams must be >= 1")
        if self.sample is not None and self.sample < 1:
            raise UserError("--sample must be >= 1")
        self.sample_for(None)  # --task-sample entries are checked before anything loads
        if self.n_samples < 1:
            raise UserError("--n-samples must be >= 1")
        if self.n_samples > 1:
            if self.num_beams > 1:
                raise UserError("--n-samples > 1 samples; it cannot be combined with --num-beams")
            self.do_sample = True

    def sample_for(self, task: str | None) -> int | None:
        """The sample size for `task`: its --task-sample entry, else --sample."""
        sizes = {}
        for entry in self.task_sample:
            name, _, size = entry.partition("=")
            if not name or not size.isdigit() or int(size) < 1:
                raise UserError(f"--task-sample: expected TASK=N with N >= 1, got {entry!r}")
            if name not in self.tasks:
                raise UserError(f"--task-sample {entry}: {name} is not in --tasks ({' '.join(self.tasks)})")
            sizes[name] = int(size)
        return sizes.get(task, self.sample) if task else None


@dataclass
class ExportConfig:
    """export_gguf.py: merged model (or adapter + base) → GGUF for llama.cpp, Ollama and editors,
    checked against the merged model through a real llama.cpp (the parity gate)."""

    model: str | None = opt(None, "merged model directory (merge_lora.py output); or give --adapter")
    adapter: str | None = opt(None, "LoRA adapter directory: merged into its base (merge_lora.py's checks) "
                              "before the export, instead of --model")
    base_model: str | None = opt(None, "with --adapter: override the base named in adapter_config.json")
    output: str = opt("runs/phi15-kotlin/gguf", "output directory: one .gguf per --types, Modelfile, editor "
                      "snippets, parity table")
    types: list[str] = opt(factory=lambda: ["f16", "q8_0", "q4_0"],
                           help="GGUF tensor types to write, one file each: f16 q8_0 q4_0")
    pre_tokenizer: str | None = opt(None, "llama.cpp pre-tokenizer name (tokenizer.ggml.pre); default: read "
                                    "from the tokenizer's own pre-tokenizer (gpt-2/phi-2, smollm)")
    name: str | None = opt(None, "model name in the GGUF and the file names (default: the model directory's)")
    parity: bool = opt(True, "score held-out sets on the merged model and each GGUF (llama.cpp) and refuse "
                       "an export worse beyond the bound of its type (--no-parity: write without checking)")
    dataset: str = opt("data/kotlin_prepared_dataset", "prepared dataset whose held-out split the gate scores")
    heldout_split: Literal["test", "validation"] = opt("test", "split the parity gate scores")
    tasks: list[str] = opt(factory=lambda: ["heldout", "heldout-fim"], help="parity tasks (left-to-right, FIM)")
    sample: int | None = opt(64, "examples per task the gate scores (a seeded sample; null = all)")
    seed: int = opt(42, "seed for the sample")
    threads: int = opt(1, "CPU threads for both runtimes in the gate (1: llama.cpp's spinning threads lose "
                       "badly on a shared machine)", fingerprint=False)
    overwrite: bool = opt(False, "replace an existing output directory", fingerprint=False)

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.adapter):
            raise UserError("give exactly one of --model (a merged model) and --adapter (merged on the fly)")
        unknown = sorted(set(self.types) - {"f16", "q8_0", "q4_0"})
        if unknown or not self.types:
            raise UserError(f"--types: choose from f16 q8_0 q4_0 (got {' '.join(self.types) or 'nothing'})")
        self.types = list(dict.fromkeys(self.types))
        if self.sample is not None and self.sample < 2:
            raise UserError("--sample must be >= 2 (the gate's interval needs pairs)")
        if self.threads < 1:
            raise UserError("--threads must be >= 1")
        unknown = sorted(set(self.tasks) - {"heldout", "heldout-fim"})
        if unknown or not self.tasks:
            raise UserError("--tasks: choose from heldout heldout-fim")


@dataclass
class BleuConfig:
    """bleu.py: smoothed corpus BLEU-4 as CodeXGLUE's method-generation evaluator computes it."""

    references: str = opt("refs.txt", "file with one reference per line")
    predictions: str = opt("preds.txt", "file with one prediction per line")


@dataclass
class BootstrapConfig:
    """bootstrap: a tiny base model for offline runs: a BPE tokenizer trained on text files, then a
    short fp32 pretraining of a small PhiForCausalLM on the same files (keep them disjoint from
    the files you will finetune on, so the finetune has something new to learn)."""

    inputs: list[str] = opt(factory=list, help="text files and/or directories to pretrain on (required)")
    extensions: list[str] = opt(factory=lambda: [".py"], help="file extensions taken from directories")
    exclude: list[str] = opt(factory=list, help="glob patterns (on paths relative to each input) to leave out")
    output: str = opt("runs/bootstrap/base", "output directory: model + tokenizer, from_pretrained-loadable")
    max_files: int | None = opt(None, "use at most this many files (a seeded sample)")
    max_file_bytes: int = opt(200_000, "skip files larger than this many bytes")
    vocab_size: int = opt(2048, "BPE vocabulary size")
    hidden_size: int = opt(128, "model width")
    layers: int = opt(4, "transformer layers")
    heads: int = opt(4, "attention heads (must divide --hidden-size)")
    max_positions: int = opt(1024, "longest sequence the model will be used with (prompt + completion)")
    seq_length: int = opt(256, "tokens per pretraining sequence")
    batch_size: int = opt(16, "sequences per step")
    steps: int = opt(400, "optimizer steps")
    max_seconds: float | None = opt(None, "stop pretraining after this many seconds (time budget)")
    learning_rate: float = opt(2e-3, "peak AdamW learning rate (cosine decay, linear warmup)")
    warmup_steps: int = opt(20, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices")
    eval_fraction: float = opt(0.05, "fraction of the token stream held out to report eval loss")
    seed: int = opt(0, "seed for the sample, initialisation and batches")
    overwrite: bool = opt(True, "replace an existing output directory", fingerprint=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UserError("--inputs: give at least one text file or directory to pretrain on")
        self.extensions = [e if e.startswith(".") else f".{e}" for e in self.extensions]
        for name in ("vocab_size", "hidden_size", "layers", "heads", "seq_length", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        if self.hidden_size % self.heads:
            raise UserError("--hidden-size must be a multiple of --heads")
        if self.vocab_size < 260:
            raise UserError("--vocab-size must be >= 260 (256 byte tokens + specials)")
        if self.max_positions < self.seq_length:
            raise UserError("--max-positions must be >= --seq-length")
        if not 0 < self.eval_fraction < 0.5:
            raise UserError("--eval-fraction must be in (0, 0.5)")


# ------------------------------------------------------------------------------ the stages


@dataclass(frozen=True)
class Stage:
    """One stage, defined once: the CLI, the config sections and the pipeline all read this."""

    name: str  # the command (`codelora NAME`), its YAML section, and the pipeline's name for it
    config: type  # its documented config dataclass
    module: str  # where it is implemented (imported only when it runs: torch is slow to import)
    run: str  # that module's function, run(config) -> result (an int result is the exit code)
    prog: str  # the name its usage and errors show: the entry script
    output: str | None = None  # pipeline stages: the config field naming what it writes
    artifact: Callable[[Any], Path] | None = None  # the output the pipeline's marker vouches for
    is_dir: bool = True  # the artifact is a directory (else a file)
    resumable: bool = False  # has checkpoints in output_dir/checkpoints and a `resume` flag
    inputs: tuple[str, ...] = ()  # config fields that name local inputs its output must keep clear of
    continues: bool = False  # fills its own earlier output without --overwrite (checkpoints, caches)

    def run_function(self) -> Callable[[Any], Any]:
        return getattr(importlib.import_module(self.module), self.run)


def _output(field_name: str) -> Callable[[Any], Path]:
    return lambda cfg: Path(getattr(cfg, field_name))


# In pipeline order; adding a stage is one entry here (plus its config class and its module).
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("bootstrap", BootstrapConfig, "codelora.bootstrap", "bootstrap", "codelora bootstrap",
          output="output", artifact=_output("output"), inputs=("inputs",)),
    Stage("parse", ParseConfig, "codelora.parse", "run_parse", "parse_data.py",
          output="output", artifact=_output("output"), is_dir=False),
    Stage("preprocess", PreprocessConfig, "codelora.preprocess", "run_preprocess", "preprocess_data.py",
          output="output", artifact=_output("output"), inputs=("input", "tokenizer", "contamination_data")),
    Stage("train", TrainConfig, "codelora.training", "train", "train.py",
          output="output_dir", artifact=lambda cfg: adapter_dir(cfg.output_dir), resumable=True,
          inputs=("base_model", "dataset", "accelerate_config"), continues=True),
    Stage("merge", MergeConfig, "codelora.merging", "merge", "merge_lora.py",
          output="output", artifact=_output("output"), inputs=("adapter", "base_model")),
    Stage("benchmark", BenchmarkConfig, "codelora.benchmarking", "run", "benchmarking.py",
          output="output", artifact=_output("output"), continues=True,
          inputs=("models", *TaskOptions.local_inputs())),
    Stage("export", ExportConfig, "codelora.export", "export", "export_gguf.py",
          output="output", artifact=_output("output")),
    Stage("bleu", BleuConfig, "codelora.metrics", "run", "bleu.py"),
)}
PIPELINE_STAGES = tuple(name for name, stage in STAGES.items() if stage.output)


def guard_stage_output(name: str, cfg: Any) -> None:
    """utils.guard_output_dir for stage `name`'s output directory as `cfg` names it, against the
    inputs `cfg` names (Stage.inputs); every directory-writing stage calls it before any work, and
    the pipeline calls it for every stage before the first one runs."""
    from codelora.utils import guard_output_dir

    stage = STAGES[name]
    inputs = {}
    for field_name in stage.inputs:
        value = getattr(cfg, field_name)
        inputs[f"--{field_name.replace('_', '-')}"] = value if isinstance(value, list) else [value]
    overwrite = None if stage.continues else bool(getattr(cfg, "overwrite", False))
    guard_output_dir(getattr(cfg, stage.output), stage=name, prog=stage.prog,
                     flag=f"--{stage.output.replace('_', '-')}", inputs=inputs, overwrite=overwrite)


@dataclass
class PipelineConfig:
    """pipeline: run the stages in order from one sectioned YAML file, skipping each stage whose
    output exists and was made from the same configuration and inputs."""

    stages: list[str] = opt(
        factory=lambda: ["parse", "preprocess", "train", "merge", "benchmark"],
        help=f"stages to run, in pipeline order; choose from {', '.join(PIPELINE_STAGES)}",
    )
    force: bool = opt(False, "rerun every selected stage even when its output is up to date")
    force_stages: list[str] = opt(factory=list, help="rerun just these stages (and what depends on them)")
    dry_run: bool = opt(False, "print which stages would run or be skipped, run nothing")
    allow_broken_chain: bool = opt(
        False, "run even where a stage does not read what the stage before it writes (train.dataset is not "
        "preprocess.output, benchmark.dataset not train.dataset, ...): e.g. scoring on another dataset on "
        "purpose")

    def __post_init__(self) -> None:
        unknown = [s for s in [*self.stages, *self.force_stages] if s not in PIPELINE_STAGES]
        if unknown:
            raise UserError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(PIPELINE_STAGES)}")
        if not self.stages:
            raise UserError("--stages: give at least one stage")
        if len(set(self.stages)) != len(self.stages):
            raise UserError("--stages: a stage is listed twice")
        # Always run in pipeline order, whatever order the list was written in.
        self.stages = [s for s in PIPELINE_STAGES if s in self.stages]


# ------------------------------------------------------------------------------------ machinery


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _str2bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; defaults are suppressed so we can tell which flags were given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        dash, under = f"--{f.name.replace('_', '-')}", f"--{f.name}"
        names = [dash] if dash == under else [dash, under]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if "(default:" not in help_text:  # a help that explains its default already says it
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            if optional:
                kwargs.update(type=_str2bool, metavar="{true,false}")
            else:
                kwargs.update(action=argparse.BooleanOptionalAction)
        elif origin is list:
            (inner,) = typing.get_args(tp)
            # extend: `--repo A --repo B C` gives [A, B, C], as users of repeatable flags expect.
            kwargs.update(nargs="+", type=inner, action="extend")
        elif origin is Literal:
            kwargs.update(choices=list(typing.get_args(tp)))
            if "const" in f.metadata:  # `--resume` alone means `--resume yes`
                kwargs.update(nargs="?", const=f.metadata["const"])
        else:
            kwargs.update(type=tp)
        parser.add_argument(*names, **kwargs)


class ConfigFile(dict):
    """A loaded YAML config: its mapping, and the file it came from (named in every error)."""

    def __init__(self, data: dict[str, Any], path: Path):
        super().__init__(data)
        self.path = path


def load_yaml(path: str | Path) -> ConfigFile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return ConfigFile(data, path)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def typed_value(value: Any, declared: Any, where: str) -> Any:
    """`value` as the field's declared type, or a UserError naming `where` (file and key, or the
    flag). YAML 1.1 reads `3e-3` as a string: a string that spells a number is the number; `8.5`
    for an integer, `maybe` for a boolean, `ten` for a number are refused."""
    tp, optional = _unwrap_optional(declared)

    def wrong() -> UserError:
        shown = "null" if value is None else repr(value) if isinstance(value, str) else value
        quote = tp is str and isinstance(value, (int, float))
        hint = " (quote it in YAML to make it a string)" if quote else ""
        null = " (or null)" if optional else ""
        return UserError(f"{where}: expected {_describe(tp)}{null}, got {shown}{hint}")

    if value is None:
        if optional:
            return None
        raise wrong()
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise wrong()
        (inner,) = typing.get_args(tp)
        return [typed_value(item, inner, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and {"yes", "no"} <= set(choices):  # YAML reads yes/no as booleans
            return "yes" if value else "no"
        if value not in choices or isinstance(value, bool):
            raise wrong()
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        try:
            return _str2bool(value) if isinstance(value, str) else _bool_of(value)
        except (argparse.ArgumentTypeError, ValueError):
            raise wrong() from None
    if tp is int:
        number = _number(value)
        if number is None or number != int(number):
            raise wrong()
        return value if isinstance(value, int) else int(number)
    if tp is float:
        number = _number(value)
        if number is None:
            raise wrong()
        # an int stays an int: the pipeline's fingerprint of `epochs: 1` must not change
        return value if isinstance(value, (int, float)) else number
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    return value


def _bool_of(value: Any) -> bool:
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(value)


def _number(value: Any) -> float | None:
    """A finite int or float, or a string that spells one; None for anything else (booleans too)."""
    import math

    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value) if isinstance(value, float) else value
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
    else:
        return None
    return number if math.isfinite(number) else None


SECTIONS = ("pipeline", *STAGES)


def build_config(cls: type, yaml_values: dict[str, Any] | None, cli_values: dict[str, Any], section: str | None = None):
    """defaults < YAML < CLI flags.

    A YAML file with stage sections (`parse:`, `train:` ...) contributes its `section`; a flat
    file contributes all its keys. Either way an unknown key is an error.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    source = yaml_values or {}
    path = getattr(yaml_values, "path", None)
    where = f"{path}: " if path else ""
    prefix = ""
    if any(key in SECTIONS for key in source):
        # A sectioned file: any other top-level key is a typo (`trian:`) or a flat key that would
        # otherwise be silently ignored by every stage.
        stray = [str(key) for key in source if key not in SECTIONS]
        if stray:
            raise UserError(f"unknown top-level key '{stray[0]}' in a sectioned config; "
                            f"sections are {', '.join(SECTIONS)}")
        source = source.get(section, {}) if section else {}
        if source is None:  # `train:` with nothing under it
            source = {}
        if not isinstance(source, dict):
            raise UserError(f"{where}config section '{section}' must be a mapping")
        prefix = f"{section}."
    for key, value in source.items():
        key = str(key).replace("-", "_")
        if key not in names:
            raise UserError(f"{where}unknown config key '{key}' for {section or cls.__name__}")
        values[key] = _typed_field(value, hints[key], f"{where}{prefix}{key}")
    for key, value in cli_values.items():
        values[key] = _typed_field(value, hints[key], f"--{key.replace('_', '-')}")
    try:
        return cls(**values)
    except TypeError as err:
        raise UserError(f"invalid configuration: {err}") from None


def _typed_field(value: Any, declared: Any, where: str) -> Any:
    tp, _ = _unwrap_optional(declared)
    if typing.get_origin(tp) is list and isinstance(value, str):  # `repo: URL` means `repo: [URL]`
        value = [value]
    return typed_value(value, declared, where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path, **extra: Any) -> None:
    """Write the config a run used (plus `extra` facts such as versions) as YAML, atomically."""
    data = config_to_dict(cfg)
    data.update(extra)
    with atomic_file(path) as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
