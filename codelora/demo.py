"""The offline demo: parse + preprocess on a real corpus that every machine has.

There is no Hub and no JetBrains/kotlin offline, so the demo corpus is the Python standard library
of the running interpreter (~11 MB of .py files without its tests), committed into a local git
repository under .demo/ that parse_data.py then clones through a file:// URL, exactly like a
remote. The tokenizer is a byte-level BPE trained locally on that corpus (same family as Phi-1.5's).

    python -m codelora.demo                 # build .demo/, parse, preprocess, print the stats
    python -m codelora.demo --max-files 50  # a smaller corpus, for a quick look

`build_stdlib_repo` and `ensure_demo_tokenizer` are reused by the later pipeline stages.
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


def demo_paths(root: Path) -> dict[str, Path]:
    return {"repo": root / "stdlib-repo", "tokenizer": root / "tokenizer",
            "raw": root / "data" / "stdlib_code_raw.jsonl", "dataset": root / "data" / "stdlib_prepared_dataset"}


def run_demo(root: Path, *, max_files: int | None = None, vocab_size: int = 4096, num_proc: int = 2) -> dict:
    from codelora.config import ParseConfig, PreprocessConfig
    from codelora.preprocess import run_preprocess
    from codelora.sources import run_parse

    paths = demo_paths(root)
    t0 = time.perf_counter()
    repo = build_stdlib_repo(paths["repo"], max_files=max_files)
    ensure_demo_tokenizer(paths["tokenizer"], repo, vocab_size=vocab_size)
    # Through a file:// URL: the same shallow-fetch path as a GitHub URL.
    run_parse(ParseConfig(repo=[repo.resolve().as_uri()], extensions=[".py"], output=str(paths["raw"])))
    stats = run_preprocess(PreprocessConfig(input=str(paths["raw"]), tokenizer=str(paths["tokenizer"]),
                                            output=str(paths["dataset"]), num_proc=num_proc))
    print(f"demo: done in {time.perf_counter() - t0:.0f} s; dataset in {paths['dataset']} "
          f"(stats: {paths['dataset'] / 'stats.json'})")
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codelora.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".demo", help="working directory (default: .demo)")
    parser.add_argument("--max-files", type=int, default=None, help="use only this many stdlib files")
    parser.add_argument("--vocab-size", type=int, default=4096, help="demo tokenizer vocabulary size")
    parser.add_argument("--num-proc", type=int, default=2, help="processes for preprocessing")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        run_demo(Path(args.root), max_files=args.max_files, vocab_size=args.vocab_size, num_proc=args.num_proc)
    except UserError as err:
        if args.debug:
            raise
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
