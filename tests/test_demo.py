"""The offline demo corpus: the interpreter's stdlib as a git repository, a local tokenizer, and
parse + preprocess on it end to end (on a 30-file slice, to stay fast)."""

from __future__ import annotations

import json

import yaml

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


def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch, capsys):
    """`make demo`'s code path on a scaled-down copy of configs/demo.yaml: corpus repo, bootstrap,
    parse, preprocess, train, merge, benchmark; then the table and the report are there."""
    config = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    config["bootstrap"].update(inputs=[".demo/stdlib-repo"], vocab_size=300, hidden_size=32, layers=2,
                               heads=2, seq_length=64, batch_size=4, steps=5, max_seconds=None)
    config["parse"]["exclude_dirs"] = ["build"]
    config["preprocess"].update(max_train_samples=64, num_proc=1, prompt_tokens=48, completion_tokens=16,
                                stride=48)
    config["train"].update(max_steps=4, batch_size=4, eval_steps=2, save_steps=2, max_length=96)
    config["benchmark"].update(sample=6, batch_size=6)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(path), "--max-files", "40"]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "demo: done" in out
    results = tmp_path / config["benchmark"]["output"]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["models"] == [".demo/base", ".demo/runs/stdlib/merged"]
    assert (results / "report.html").stat().st_size > 1000
    assert (tmp_path / ".demo/runs/stdlib/merged/model.safetensors").is_file()
    dd = load_from_disk(str(tmp_path / config["preprocess"]["output"]))
    assert set(dd) == {"train", "validation", "test"} and len(dd["train"]) == 64
    # a second run finds every stage up to date and redoes nothing
    stamp = (tmp_path / ".demo/runs/stdlib/merged/model.safetensors").stat().st_mtime_ns
    assert demo.main(["--config", str(path), "--max-files", "40"]) == 0
    assert capsys.readouterr().err.count(": up to date (") == 6  # the pipeline logs to stderr
    assert (tmp_path / ".demo/runs/stdlib/merged/model.safetensors").stat().st_mtime_ns == stamp
