"""`make demo`: the whole pipeline, offline, on a real corpus that every machine has.

There is no Hub and no JetBrains/kotlin offline, so the demo corpus is the Python standard library
of the running interpreter (~10 MB of .py files without its tests), committed into a local git
repository under .demo/ that parse_data.py then clones like a remote. configs/demo.yaml cuts it in
two disjoint parts: some packages bootstrap a tiny base model (a BPE tokenizer + a short
pretraining of a small PhiForCausalLM), the rest is the finetuning target, split by file; the
benchmark then compares base and finetuned on held-out files.

    python -m codelora.demo                        # run (or continue) the demo pipeline
    python -m codelora.demo --force                # redo every stage
    python -m codelora.demo --config my-demo.yaml  # another config with the same corpus

`build_stdlib_repo` and `ensure_demo_tokenizer` are also used by bench/preprocess.py.
"""

from __future__ import annotations

import argparse
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

# Left out of the corpus: the test suites (huge, full of deliberately odd files), installed
# third-party packages, IDLE (a GUI application rather than library code) and `encodings`
# (~100 codec modules generated from one template: near-duplicates that a file-level split cannot
# keep apart, so about half the test completions would also occur verbatim in train).
EXCLUDED_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "encodings"}
# A fixed identity and date make the demo commit SHA reproducible for a given interpreter.
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "codelora demo", "GIT_AUTHOR_EMAIL": "demo@codelora.invalid",
    "GIT_COMMITTER_NAME": "codelora demo", "GIT_COMMITTER_EMAIL": "demo@codelora.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}
_MARKER = "codelora-stdlib.json"  # inside .git/, so it is not part of the corpus
_TOKENIZER_MARKER = "codelora-corpus.json"  # what the saved demo tokenizer was trained on


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(src: Path | None = None, max_files: int | None = None) -> list[Path]:
    """The standard library's .py files (relative paths), sorted; `max_files` picks evenly."""
    src = src or stdlib_dir()
    files = []
    for dirpath, dirnames, filenames in os.walk(src):  # prune excluded trees instead of filtering them
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_PARTS]
        base = Path(dirpath)
        files += [(base / f).relative_to(src) for f in filenames
                  if f.endswith(".py") and (base / f).is_file() and not (base / f).is_symlink()]
    files.sort()
    if max_files is not None and len(files) > max_files:
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    return files


def build_stdlib_repo(dest: str | Path, *, max_files: int | None = None) -> Path:
    """A git repository at `dest` holding the interpreter's stdlib, committed; reused when current."""
    import git

    dest = Path(dest)
    src = stdlib_dir()
    identity = {"python": sys.version, "stdlib": str(src), "max_files": max_files,
                "excluded": sorted(EXCLUDED_PARTS)}
    marker = dest / ".git" / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        log.info("reusing the demo corpus repository %s", dest)
        return dest
    files = stdlib_files(src, max_files)
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
            repo.git.commit("-q", "-m", f"Python {sys.version.split()[0]} standard library",
                            env={**os.environ, **_COMMIT_ENV})
        finally:
            repo.close()
        (tmp / ".git" / _MARKER).write_text(json.dumps(identity), encoding="utf-8")
    log.info("built the demo corpus repository %s (%d files)", dest, len(files))
    return dest


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


def corpus_repo_path(config: dict) -> Path:
    """Where the config's parse stage expects the stdlib repository (its first --repo)."""
    repos = (config.get("parse") or {}).get("repo") or []
    repos = [repos] if isinstance(repos, str) else repos
    if len(repos) != 1 or "://" in repos[0]:
        raise UserError("the demo config's parse.repo must name one local path for the stdlib repository")
    return Path(repos[0])


def run_demo(config_path: Path, *, force: bool = False, max_files: int | None = None) -> int:
    """Build the corpus repository, run the pipeline, print the benchmark table."""
    from codelora import pipeline
    from codelora.config import load_yaml

    config = load_yaml(config_path)
    t0 = time.perf_counter()
    build_stdlib_repo(corpus_repo_path(config), max_files=max_files)
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
    parser.add_argument("--max-files", type=int, default=None, help="use only this many stdlib files (quick look)")
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
