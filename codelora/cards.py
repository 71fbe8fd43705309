"""Hub cards: the README.md of a pushed dataset, adapter or merged model, built from what a run did.

Cards follow the Hub's standard format: YAML metadata between `---` lines (license, base_model,
tags, library_name, datasets, pipeline_tag ...), then markdown. `hub.py` pushes them.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
LIBRARY_TAG = "codelora"


def is_hub_id(name: str | None) -> bool:
    """True when `name` reads as a Hub repo id rather than a local path (which card metadata
    must not name: the Hub links `base_model`/`datasets` entries to repos)."""
    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    return bool(REPO_ID.match(name)) and ".." not in name


def _hub_ids(names: Iterable[str | None]) -> list[str]:
    return [n for n in names if is_hub_id(n)]  # type: ignore[misc]


def render_card(metadata: dict[str, Any], body: str) -> str:
    """A card in the standard format: YAML metadata between `---` lines, then markdown."""
    metadata = {k: v for k, v in metadata.items() if v not in (None, [], {}, "")}
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n{body.strip()}\n"


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """Inverse of `render_card`: (metadata, markdown body). A card without metadata gives {}."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
    if not match:
        return {}, text
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict):
        raise ValueError("card metadata must be a YAML mapping")
    return meta, text[match.end() :]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return (
            f"{value:.4g}"
            if abs(value) < 1e-3 or abs(value) >= 1e5
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "—"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Collection[int] = ()) -> str:
    """A markdown table; cells formatted by `_fmt` (strings as they are), `right`: column indices
    aligned right (numbers)."""
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _kv_table(mapping: Mapping[str, Any], key: str = "setting", value: str = "value") -> str:
    return markdown_table([key, value], [(f"`{k}`", v) for k, v in mapping.items()])


def _versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


# The Hub's `size_categories` values (its dataset-card metadata accepts only these).
_SIZE_BUCKETS = ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                 (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                 (10**11, "10B<n<100B"), (10**12, "100B<n<1T"))


def _size_category(n: int) -> str:
    return next((name for limit, name in _SIZE_BUCKETS if n < limit), "n>1T")


def dataset_card(stats: Mapping[str, Any], cfg: Any, *, repo_id: str | None = None,
                 license: str = "other") -> str:
    """The card preprocess_data.py publishes with a DatasetDict, from its stats.json and config.

    license: SPDX id of the *source code's* licence when known; "other" otherwise.
    """
    split_rows = [(s, stats["files_per_split"][s], stats["examples"][s]) for s in stats["examples"]]
    total = ("**total**", sum(stats["files_per_split"].values()), sum(stats["examples"].values()))
    sections = [
        "# Code completion dataset",
        "Prompt/completion pairs cut from the source files of the repositories below by codelora's "
        "`preprocess_data.py`, for finetuning a causal code model: the model sees `prompt` and learns to "
        "continue it with `completion`. Splits are made by *file*, so no file contributes to more than "
        "one split and the test split measures generalisation to unseen files.",
        "## Source",
        markdown_table(["repository", "commit", "files"],
                       [(s["repo"], f"`{s['commit']}`" if s.get("commit") else None, s.get("files"))
                        for s in stats["sources"]]),
        "## Filters", _filters(stats),
        "## Splits (by file)",
        markdown_table(["split", "files", "examples"], [*split_rows, total], right=(1, 2)),
        _grouping(stats["grouping"]),
        "## Benchmark contamination", _contamination(stats.get("contamination") or {"checked": False}),
        "## Leakage",
        "Held-out completions found verbatim in a train window (prompt + completion); completions "
        "of at most 3 non-space characters are not counted.",
        markdown_table(["split", "counted", "found in train", "share"],
                       [(s, r["counted"], r["leaked"], f"{100 * r['fraction']:.2f}%")
                        for s, r in stats["leakage"].items()]),
        "## Windows",
        _kv_table({"tokenizer": cfg.tokenizer, "mode": cfg.mode, "prompt_tokens": cfg.prompt_tokens,
                   "completion_tokens": cfg.completion_tokens, "stride": cfg.stride, "seed": cfg.seed}),
        "`prompt + completion` is an exact slice of the cleaned file; no EOS text is included.",
        "## Usage",
        f'```python\nfrom datasets import load_dataset\n\nds = load_dataset("{repo_id or "USER/NAME"}")\n'
        'print(ds["train"][0]["prompt"])\n```',
        "## Licence",
        f"The examples are excerpts of the source repositories and keep their licence (`{license}`).",
    ]
    meta = {"license": license, "pretty_name": "Code completion dataset",
            "tags": ["code", LIBRARY_TAG], "task_categories": ["text-generation"],
            "size_categories": [_size_category(sum(stats["examples"].values()))]}
    return render_card(meta, "\n\n".join(sections))


def _filters(stats: Mapping[str, Any]) -> str:
    files = stats["files"]
    lines = [f"- input files: {files['input']}, kept: {files['kept']}",
             f"- licence headers stripped: {files['license_stripped']}"]
    lines += [f"- dropped `{reason}`: {n}" for reason, n in files["dropped"].items()]
    parse = stats.get("parse")
    if not parse:
        return "\n".join(lines)
    dropped = ", ".join(f"{k} {v}" for k, v in parse.get("dropped", {}).items()) or "none"
    lines.append(f"- parse_data.py: {parse.get('seen')} files seen, {parse.get('kept')} kept; dropped: {dropped}")
    settings = {k: v for k, v in (parse.get("config") or {}).items()
                if k in ("extensions", "min_bytes", "max_bytes", "exclude_dirs")}
    return "\n".join(lines) + ("\n\n" + _kv_table(settings) if settings else "")


def _grouping(grouping: Mapping[str, Any]) -> str:
    text = ("Files are grouped before the split: near-duplicates (MinHash Jaccard >= "
            f"{grouping['near_dup_threshold']}) and files sharing a passage found in at most "
            f"{grouping['passage_max_files']} files stay in one split ({grouping['files_in_shared_groups']} "
            f"files in shared groups, the largest {grouping['largest_group']}).")
    return "\n".join([text, *(f"- dropped inside train (`--dedup near`) as `{k}`: {v}"
                               for k, v in grouping["dedup_dropped"].items())])


def _contamination(report: Mapping[str, Any]) -> str:
    if not report["checked"]:
        return "Not checked (no --contamination-data given)."
    hit = ", ".join(f"{k} {v}" for k, v in report["tasks_hit"].items()) or "none"
    return (f"{report['files_checked']} files checked against {report['benchmark_tasks']} benchmark tasks "
            f"({report['ngram']}-gram overlap): {report['files_hit']} files hit, {report['dropped']} dropped; "
            f"tasks hit: {hit}.")


def adapter_card(
    *,
    base_model: str,
    dataset: str,
    hyperparameters: Mapping[str, Any],
    eval_loss: float | None = None,
    train_loss: float | None = None,
    metrics: Mapping[str, Any] | None = None,
    title: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    repo_id: str | None = None,
) -> str:
    """Card for a LoRA/QLoRA adapter (library_name: peft)."""
    quantized = bool(hyperparameters.get("load_in_4bit"))
    metadata = {
        "base_model": base_model if is_hub_id(base_model) else None,
        "library_name": "peft",
        "license": license,
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys(["lora", "qlora" if quantized else "peft", LIBRARY_TAG, "code", *tags])),
        "datasets": _hub_ids([dataset]),
    }
    results = {"eval_loss": eval_loss, "train_loss": train_loss, **(metrics or {})}
    results = {k: v for k, v in results.items() if v is not None}
    if (
        "eval_loss" in results
        and isinstance(results["eval_loss"], (int, float))
        and results["eval_loss"] < 50
    ):
        results["eval_perplexity"] = math.exp(results["eval_loss"])
    sections = [
        f"# {title or 'LoRA adapter for ' + base_model}",
        f"A {'QLoRA (4-bit NF4 base)' if quantized else 'LoRA'} adapter for `{base_model}`, trained on "
        f"`{dataset}` with loss on the completion tokens only. Load it on top of its base model, or use "
        "the merged model if one was published.",
        "## Usage",
        "```python\nfrom peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")\n'
        f'model = PeftModel.from_pretrained(base, "{repo_id or "USER/NAME"}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id or "USER/NAME"}")\n```',
        "## Training data",
        f"`{dataset}`"
        + (f" ([dataset card](https://huggingface.co/datasets/{dataset}))" if is_hub_id(dataset) else ""),
        "## Hyperparameters",
        _kv_table(hyperparameters, "hyperparameter"),
    ]
    if results:
        sections += ["## Results", _kv_table(results, "metric")]
    sections += [
        "## Framework versions",
        _kv_table(
            _versions("peft", "transformers", "torch", "datasets", "bitsandbytes"), "package", "version"
        ),
    ]
    return render_card(metadata, "\n\n".join(sections))


def merged_card(
    *,
    base_model: str,
    adapter: str,
    dataset: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    repo_id: str | None = None,
) -> str:
    """Card for the merged (base + LoRA) model. The merge stage runs before the benchmark, so the
    card has no scores: the benchmark's results.md/report.html are where they are."""
    name = model_name or "merged model"
    metadata: dict[str, Any] = {
        "base_model": base_model if is_hub_id(base_model) else None,
        "base_model_relation": "finetune" if is_hub_id(base_model) else None,
        "library_name": "transformers",
        "license": license,
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys([LIBRARY_TAG, "code", "lora-merged", *tags])),
        "datasets": _hub_ids([dataset]),
    }
    sections = [
        f"# {name}",
        f"`{base_model}` with the LoRA adapter `{adapter}` merged into its weights (an ordinary "
        "transformers model: no peft needed at inference).",
        "## Usage",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id or "USER/NAME"}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id or "USER/NAME"}")\n```',
    ]
    if dataset:
        sections += ["## Training data", f"`{dataset}`"]
    if hyperparameters:
        sections += ["## Training hyperparameters", _kv_table(hyperparameters, "hyperparameter")]
    sections += [
        "## Framework versions",
        _kv_table(_versions("transformers", "peft", "torch"), "package", "version"),
    ]
    return render_card(metadata, "\n\n".join(sections))
