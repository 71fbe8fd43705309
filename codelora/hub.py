"""Hub traffic: credential checks before heavy work, pushes with cards, and the cards themselves.

All calls go through huggingface_hub, so HF_ENDPOINT redirects them (the tests point it at a
loopback server). A stage that will push calls `check_push_access` at its *start*, so a missing
or rejected token fails in a second, not after hours of training; it pushes at its end with
`push_folder` (adapter, merged model) or `push_dataset` (prepared DatasetDict).

Cards follow the Hub's standard format: YAML metadata between `---` lines (license, base_model,
tags, library_name, datasets, pipeline_tag, model-index ...), then markdown. `dataset_card`,
`adapter_card` and `merged_card` build them from what a run actually did.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from codelora.utils import UserError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Files in an output directory that are ours (stage markers, temp files) or training leftovers:
# never pushed.
_PRIVATE_FILE = re.compile(r"(^|/)(\.[^/]*|checkpoint-\d+|checkpoints|runs)(/|$)")
LIBRARY_TAG = "codelora"


def validate_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or len(repo_id) > 96:
        raise UserError(f"invalid Hub repo id {repo_id!r}: expected USER/NAME")


def is_hub_id(name: str | None) -> bool:
    """True when `name` reads as a Hub repo id rather than a local path (which card metadata
    must not name: the Hub links `base_model`/`datasets` entries to repos)."""
    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    return bool(_REPO_ID.match(name)) and ".." not in name


# --------------------------------------------------------------------------------- credentials


def check_push_access(repo_id: str) -> str:
    """Return a usable token for pushing to `repo_id`, or raise UserError naming the problem.

    Checks, in order: the id is well formed; the Hub is not disabled (HF_HUB_OFFLINE); a token
    exists; the Hub accepts it (whoami); it may write (not a read token); its user or one of its
    organisations owns the namespace. One round trip, no uploads.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    validate_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (unset it to push)")
    token = get_token()
    if not token:
        raise UserError(f"cannot push to {repo_id}: no Hub credentials (run `hf auth login` or set HF_TOKEN)")
    try:
        info = HfApi(token=token).whoami(cache=False)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise UserError(f"cannot push to {repo_id}: the Hub rejected the token (HTTP {status})") from None
        raise UserError(f"cannot push to {repo_id}: Hub error ({err})") from None
    except OfflineModeIsEnabled:
        raise UserError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (unset it to push)") from None
    except Exception as err:  # noqa: BLE001 - httpx transport errors, DNS, TLS: all "cannot reach"
        raise UserError(
            f"cannot push to {repo_id}: cannot reach the Hub at {constants.ENDPOINT} ({err})"
        ) from None
    _check_write_permission(repo_id, info)
    return token


def _check_write_permission(repo_id: str, whoami: Mapping[str, Any]) -> None:
    namespace = repo_id.split("/", 1)[0]
    user = whoami.get("name")
    orgs = {org.get("name") for org in whoami.get("orgs", []) if isinstance(org, Mapping)}
    if user and namespace != user and namespace not in orgs:
        raise UserError(
            f"cannot push to {repo_id}: the token belongs to {user!r}, who is not a member of {namespace!r}"
        )
    access = whoami.get("auth", {}).get("accessToken", {}) if isinstance(whoami.get("auth"), Mapping) else {}
    role = access.get("role")
    if role == "read":
        raise UserError(f"cannot push to {repo_id}: the token is read-only (create a write token)")
    if role == "fineGrained":
        # Fine-grained tokens list permissions per entity (user, org or repo); repo.write is the
        # one a push needs. Unknown shapes are let through: the upload would then fail with 403.
        scoped = access.get("fineGrained", {}).get("scoped")
        if isinstance(scoped, list):
            allowed = {
                s.get("entity", {}).get("name")
                for s in scoped
                if isinstance(s, Mapping) and "repo.write" in s.get("permissions", [])
            }
            if not ({namespace, repo_id} & allowed):
                raise UserError(
                    f"cannot push to {repo_id}: the fine-grained token has no repo.write "
                    f"permission for {namespace!r}"
                )


# --------------------------------------------------------------------------------------- cards


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


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
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


def _size_category(n: int) -> str:
    """The Hub's size_categories bucket for a row count."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return label
    return "10M<n<100M"


def _hub_ids(names: Iterable[str | None]) -> list[str]:
    return [n for n in names if is_hub_id(n)]  # type: ignore[misc]


def dataset_card(
    *,
    title: str,
    sources: Sequence[Mapping[str, str]],
    split_sizes: Mapping[str, int],
    filters: Mapping[str, Any],
    windowing: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    split_files: Mapping[str, int] | None = None,
    tokenizer: str | None = None,
    license: str = "other",
    tags: Sequence[str] = (),
    repo_id: str | None = None,
) -> str:
    """Card for a prepared prompt/completion DatasetDict.

    sources: one mapping per source repository with "repo" (URL or path) and "commit" (sha).
    split_sizes: examples per split; split_files: source files per split (file-level split).
    filters: the cleaning settings (min/max bytes, excluded dirs, licence stripping ...).
    windowing: how prompts/completions were cut (mode, token lengths, stride).
    stats: any extra numbers worth recording (files kept/dropped, tokens ...).
    license: SPDX id of the *source code's* licence when known; "other" otherwise.
    """
    total = sum(split_sizes.values())
    metadata = {
        "license": license,
        "pretty_name": title,
        "task_categories": ["text-generation"],
        "tags": list(dict.fromkeys(["code", LIBRARY_TAG, *tags])),
        "size_categories": [_size_category(total)],
    }
    source_rows = [(s.get("repo", "?"), f"`{s['commit']}`" if s.get("commit") else "—") for s in sources]
    split_rows = [(name, (split_files or {}).get(name), n) for name, n in split_sizes.items()]
    sections = [
        f"# {title}",
        "Prompt/completion pairs cut from the source files of the repositories below, prepared with "
        "codelora for finetuning a causal code model: the model sees `prompt` "
        "and learns to continue it with `completion`. Splits are made by *file*, so no file "
        "contributes to more than one split and the test split measures generalisation to unseen files.",
        "## Source",
        markdown_table(["repository", "commit"], source_rows),
        "## Splits",
        markdown_table(
            ["split", "files", "examples"],
            split_rows + [("**total**", sum((split_files or {}).values()) if split_files else None, total)],
        ),
        "## Filters and cleaning",
        _kv_table(filters),
    ]
    if windowing:
        sections += [
            "## Windowing",
            _kv_table({**({"tokenizer": tokenizer} if tokenizer else {}), **windowing}),
        ]
    if stats:
        sections += ["## Statistics", _kv_table(stats, "statistic")]
    sections += [
        "## Fields",
        "- `prompt` (string): the code before the cut point (the model's context).\n"
        "- `completion` (string): the code that follows, the training target.",
        "## Usage",
        "```python\nfrom datasets import load_dataset\n\n"
        f'ds = load_dataset("{repo_id or "USER/NAME"}")\n'
        'print(ds["train"][0]["prompt"])\n```',
        "## Licence",
        f"The examples are excerpts of the source repositories and keep their licence (`{license}`).",
    ]
    return render_card(metadata, "\n\n".join(sections))


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
    benchmark: Sequence[Mapping[str, Any]] = (),
    dataset: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    baseline_key: str = "base",
    finetuned_key: str = "finetuned",
    repo_id: str | None = None,
) -> str:
    """Card for the merged (base + LoRA) model, with the benchmark table.

    benchmark: one mapping per (task, metric) with keys "task", "metric", `baseline_key` and
    `finetuned_key` (numbers); any other keys become extra columns. The finetuned scores also go
    into `model-index` metadata, the Hub's structured form of evaluation results.
    """
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
    index = [
        {
            "task": {"type": "text-generation"},
            "dataset": {"name": str(row["task"]), "type": str(row["task"])},
            "metrics": [
                {"type": str(row["metric"]), "value": float(row[finetuned_key]), "name": str(row["metric"])}
            ],
        }
        for row in benchmark
        if isinstance(row.get(finetuned_key), (int, float)) and not isinstance(row.get(finetuned_key), bool)
    ]
    if index:
        metadata["model-index"] = [{"name": name, "results": index}]
    sections = [
        f"# {name}",
        f"`{base_model}` with the LoRA adapter `{adapter}` merged into its weights (an ordinary "
        "transformers model: no peft needed at inference).",
        "## Usage",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id or "USER/NAME"}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id or "USER/NAME"}")\n```',
    ]
    if benchmark:
        extra = [
            k for row in benchmark for k in row if k not in ("task", "metric", baseline_key, finetuned_key)
        ]
        extra = list(dict.fromkeys(extra))
        headers = ["task", "metric", baseline_key, finetuned_key, "Δ", *extra]
        rows = []
        for row in benchmark:
            base, tuned = row.get(baseline_key), row.get(finetuned_key)
            delta = (
                tuned - base if isinstance(base, (int, float)) and isinstance(tuned, (int, float)) else None
            )
            rows.append(
                [
                    row.get("task"),
                    row.get("metric"),
                    base,
                    tuned,
                    f"{delta:+.4g}" if delta is not None else None,
                    *(row.get(k) for k in extra),
                ]
            )
        sections += [
            "## Benchmark",
            f"Base model (`{base_model}`) against this model, same prompts and decoding.",
            markdown_table(headers, rows),
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


# -------------------------------------------------------------------------------------- pushes


def _folder_files(folder: Path) -> list[str]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not _PRIVATE_FILE.search(rel):
            files.append(rel)
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str,
    card: str | None = None,
    repo_type: str = "model",
    private: bool = False,
    message: str = "Upload with codelora",
    delete_stale: bool = True,
) -> str:
    """Create `repo_id` if needed and upload `folder` (plus README.md = card) in ONE commit.

    One commit, so the repo never shows weights without their card or a half-uploaded model.
    Dot-files (stage markers) and checkpoints are not pushed. With `delete_stale`, files the repo
    holds but `folder` does not (e.g. shards of an earlier, differently sharded push) are deleted
    in the same commit, so the repo mirrors the folder. Returns the repo URL.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"cannot push {folder}: not a directory")
    validate_repo_id(repo_id)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    files = [f for f in _folder_files(folder) if card is None or f != "README.md"]
    operations: list[Any] = [
        CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files
    ]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    if delete_stale:
        keep = {op.path_in_repo for op in operations} | {".gitattributes"}
        remote = api.list_repo_files(repo_id, repo_type=repo_type)
        operations += [CommitOperationDelete(path_in_repo=f) for f in remote if f not in keep]
    api.create_commit(repo_id, operations=operations, repo_type=repo_type, commit_message=message)
    log.info("pushed %s (%d files) to %s", folder, len(files), url)
    return str(url)


def push_dataset(dataset_dict, repo_id: str, *, token: str, card: str, private: bool = False) -> str:
    """Push a DatasetDict (parquet shards), then its card.

    `push_to_hub` writes a README.md whose metadata (`dataset_info`: features and split sizes;
    `configs`: which files form which split) the Hub and `load_dataset` use; our card's metadata
    is merged into it rather than replacing it. Returns the dataset's URL.
    """
    from huggingface_hub import HfApi, hf_hub_download

    validate_repo_id(repo_id)
    dataset_dict.push_to_hub(repo_id, private=private, token=token)
    ours, body = parse_card(card)
    generated_path = hf_hub_download(repo_id, "README.md", repo_type="dataset", token=token)
    generated, _ = parse_card(Path(generated_path).read_text(encoding="utf-8"))
    merged = {**ours, **{k: v for k, v in generated.items() if k in ("dataset_info", "configs")}}
    api = HfApi(token=token)
    api.upload_file(
        path_or_fileobj=render_card(merged, body).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Add dataset card",
    )
    url = f"{api.endpoint}/datasets/{repo_id}"
    log.info("pushed dataset (%s) to %s", ", ".join(f"{k}: {len(v)}" for k, v in dataset_dict.items()), url)
    return url
