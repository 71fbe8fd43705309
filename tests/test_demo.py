"""The offline demo corpus: the interpreter's stdlib as a git repository, a local tokenizer, and
parse + preprocess on it end to end (on a 30-file slice, to stay fast)."""

from __future__ import annotations

import json

from datasets import load_from_disk

from codelora import demo
from tests.conftest import git


def test_build_stdlib_repo_is_committed_reproducible_and_reused(tmp_path):
    repo = demo.build_stdlib_repo(tmp_path / "a", max_files=30)
    tracked = git(repo, "ls-files").splitlines()
    assert len(tracked) == 30 and all(p.endswith(".py") for p in tracked)
    assert not any(part in demo.EXCLUDED_PARTS for p in tracked for part in p.split("/")[:-1])
    assert git(repo, "status", "--porcelain") == ""  # everything committed
    first = (repo / tracked[0]).read_bytes()
    assert first == (demo.stdlib_dir() / tracked[0]).read_bytes()
    sha = git(repo, "rev-parse", "HEAD")
    # fixed identity and dates: a rebuild elsewhere gives the same commit
    assert git(demo.build_stdlib_repo(tmp_path / "b", max_files=30), "rev-parse", "HEAD") == sha
    marker = repo / ".git" / "codelora-stdlib.json"
    stamp = marker.stat().st_mtime_ns
    assert demo.build_stdlib_repo(repo, max_files=30) == repo and marker.stat().st_mtime_ns == stamp
    demo.build_stdlib_repo(repo, max_files=20)  # a different request rebuilds
    assert len(git(repo, "ls-files").splitlines()) == 20


def test_demo_tokenizer_trained_once(tmp_path):
    repo = demo.build_stdlib_repo(tmp_path / "repo", max_files=20)
    tok = demo.ensure_demo_tokenizer(tmp_path / "tok", repo, vocab_size=300)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token is None
    text = "def f(x):\n    return x  # é\n"
    assert tok.decode(tok(text)["input_ids"]) == text
    stamp = (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns
    again = demo.ensure_demo_tokenizer(tmp_path / "tok", repo, vocab_size=300)
    assert (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns == stamp
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_demo_end_to_end(tmp_path, capsys):
    assert demo.main(["--root", str(tmp_path / "d"), "--max-files", "30", "--vocab-size", "300",
                      "--num-proc", "1"]) == 0
    out = capsys.readouterr().out
    assert "parse_data.py: 30 files seen" in out and "demo: done" in out
    paths = demo.demo_paths(tmp_path / "d")
    rows = [json.loads(line) for line in paths["raw"].read_text().splitlines()]
    assert rows and rows[0]["repo"].startswith("file://") and len(rows[0]["commit"]) == 40
    dd = load_from_disk(str(paths["dataset"]))
    assert set(dd) == {"train", "validation", "test"} and len(dd["train"]) > 100
    stats = json.loads((paths["dataset"] / "stats.json").read_text())
    assert stats["examples"]["train"] == len(dd["train"])
