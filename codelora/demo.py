"""`make demo`: the whole pipeline, offline, on real code that every demo machine has.

There is no Hub offline, so no microsoft/phi-1_5 and no JetBrains/kotlin. The demo mirrors the real
run with two corpora that `make demo` guarantees, each committed into a local git repository under
.demo/ with a fixed identity and date:

- the base model's "general code" is the running interpreter's standard library (~10 MB of .py
  files without its tests): the bootstrap stage trains a BPE tokenizer on it and pretrains a tiny
  PhiForCausalLM for a few minutes, a stand-in for a pretrained code model;
- the finetuning target, the stand-in for one project's repository, is a part of the torch package
  that requirements.txt pins (`torch/_dynamo`, `torch/fx`, `torch/distributed`: ~12 MB, ~560
  files). It is cloned by parse_data.py like a remote, split by file, finetuned on with LoRA, and
  the benchmark compares base and finetuned on its held-out files.

The two corpora share no file, and their styles differ the way a project's do from general code
(type annotations, black formatting, torch idioms), which is what finetuning is for. A stdlib-only
demo (pretrain on some packages, finetune on the others) moved held-out ES by only +0.6: more of
the same text teaches a tiny model little in three minutes.

    python -m codelora.demo                        # run (or continue) the demo pipeline
    python -m codelora.demo --force                # redo every stage
    python -m codelora.demo --config my-demo.yaml  # another config with the same corpora

`build_stdlib_repo` and `ensure_demo_tokenizer` are also used by bench/preprocess.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from codelora.utils import UserError, atomic_dir, setup_logging

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
_MARKER = "codelora-corpus-repo.json"  # inside .git/, so it is not part of the corpus
_TOKENIZER_MARKER = "codelora-corpus.json"  # what the saved demo tokenizer was trained on


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


def _build_repo(dest: Path, src: Path, files: list[Path], identity: dict, message: str) -> Path:
    """A git repository at `dest` holding `src`/`files`, committed; reused when `identity` matches."""
    import git

    marker = dest / ".git" / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        log.info("reusing the demo corpus repository %s", dest)
        return dest
    if not files:
        raise UserError(f"no .py files found under {src}")
    with atomic_dir(dest) as tmp:
        for rel in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
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
    return _build_repo(Path(dest), src, stdlib_files(src, max_files), identity,
                       f"Python {sys.version.split()[0]} standard library")


def build_target_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """TARGET_SUBPACKAGES of the installed torch (the finetuning target) as a git repository."""
    from importlib.metadata import version

    pkg = target_package_dir()
    torch_version = version("torch")
    identity = {"torch": torch_version, "package": str(pkg), "subpackages": list(TARGET_SUBPACKAGES),
                "max_files": max_files, "excluded": sorted(EXCLUDED_PARTS)}
    return _build_repo(Path(dest), pkg.parent, target_files(pkg, max_files), identity,
                       f"torch {torch_version}: {', '.join(TARGET_SUBPACKAGES)}")


def ensure_demo_tokenizer(out_dir: str | Path, corpus_dir: str | Path, *, vocab_size: int = 4096,
                          max_chars: int = 4_000_000):
    """Load the tokenizer saved in `out_dir`, or train one on `corpus_dir`'s .py files and save it.

    Training reads at most `max_chars` characters (spread over the corpus): BPE merges settle
    long before that, and it keeps the demo fast.
    """
    from transformers import AutoTokenizer

    from codelora.modeling import train_tokenizer

    out_dir = Path(out_dir)
    identity = {"corpus": _corpus_id(Path(corpus_dir)), "vocab_size": vocab_size, "max_chars": max_chars}
    marker = out_dir / _TOKENIZER_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        return AutoTokenizer.from_pretrained(str(out_dir))
    paths = sorted(p for p in Path(corpus_dir).rglob("*.py") if ".git" not in p.parts)
    texts, total = [], 0
    for p in paths[:: max(1, len(paths) // 400)]:  # spread over the corpus, not its first files
        text = p.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    log.info("training a %d-token BPE tokenizer on %d files (%.1f MB)", vocab_size, len(texts), total / 1e6)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
        (tmp / _TOKENIZER_MARKER).write_text(json.dumps(identity), encoding="utf-8")
    return tokenizer


def _corpus_id(corpus_dir: Path) -> str:
    """The corpus commit (a tokenizer trained on an older corpus is retrained), else its path."""
    import git

    try:
        with git.Repo(corpus_dir) as repo:
            return repo.head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return str(corpus_dir.resolve())


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def corpus_repo_paths(config: dict) -> tuple[Path, Path]:
    """Where the config wants the stdlib repository (its one bootstrap input) and the target
    repository (its one parse repo)."""
    def one_local(section: str, key: str) -> Path:
        items = (config.get(section) or {}).get(key) or []
        items = [items] if isinstance(items, str) else items
        if len(items) != 1 or "://" in items[0]:
            raise UserError(f"the demo config's {section}.{key} must name one local path "
                            f"(the {'stdlib' if section == 'bootstrap' else 'target'} repository)")
        return Path(items[0])

    return one_local("bootstrap", "inputs"), one_local("parse", "repo")


def run_demo(config_path: Path, *, force: bool = False, max_files: int | None = None) -> int:
    """Build the two corpus repositories, run the pipeline, print the benchmark table."""
    from codelora import pipeline
    from codelora.config import load_yaml

    config = load_yaml(config_path)
    t0 = time.perf_counter()
    stdlib_repo, target_repo = corpus_repo_paths(config)
    build_stdlib_repo(stdlib_repo, max_files=max_files)
    build_target_repo(target_repo, max_files=max_files)
    rc = pipeline.main(["--config", str(config_path), *(["--force"] if force else [])])
    if rc != 0:
        return rc
    results = Path((config.get("benchmark") or {}).get("output", "results"))
    table = results / "results.md"
    if table.is_file():
        print(table.read_text(encoding="utf-8"))
    print(f"demo: done in {time.perf_counter() - t0:.0f} s; report: {results / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codelora.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--max-files", type=int, default=None, help="use only this many files of each corpus (quick look)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        return run_demo(args.config, force=args.force, max_files=args.max_files)
    except UserError as err:
        if args.debug:
            raise
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
