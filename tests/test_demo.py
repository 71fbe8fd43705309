"""The offline demo: its two corpora (the interpreter's stdlib, parts of the installed torch) as git
repositories, a local tokenizer, and the whole pipeline end to end on small slices of both."""

from __future__ import annotations

import json
from pathlib import Path

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
    marker = repo / ".git" / "codelora-corpus-repo.json"
    stamp = marker.stat().st_mtime_ns
    assert demo.build_stdlib_repo(repo, max_files=30) == repo and marker.stat().st_mtime_ns == stamp
    demo.build_stdlib_repo(repo, max_files=20)  # a different request rebuilds
    assert len(git(repo, "ls-files").splitlines()) == 20


def test_build_target_repo_holds_the_torch_subpackages(tmp_path):
    repo = demo.build_target_repo(tmp_path / "t", max_files=25)
    tracked = git(repo, "ls-files").splitlines()
    assert len(tracked) == 25 and all(p.endswith(".py") for p in tracked)
    # every file comes from one of the chosen subpackages, and more than one subpackage is sampled
    subs = {p.split("/")[1] for p in tracked}
    assert all(p.startswith("torch/") for p in tracked) and subs <= set(demo.TARGET_SUBPACKAGES)
    assert len(subs) > 1
    pkg = demo.target_package_dir()
    assert (repo / tracked[-1]).read_bytes() == (pkg.parent / tracked[-1]).read_bytes()
    assert git(repo, "status", "--porcelain") == ""
    # disjoint from the stdlib corpus the base is pretrained on
    stdlib = {p.as_posix() for p in demo.stdlib_files()}
    assert not stdlib & set(tracked)
    sha = git(repo, "rev-parse", "HEAD")
    assert git(demo.build_target_repo(tmp_path / "u", max_files=25), "rev-parse", "HEAD") == sha


def test_demo_config_must_name_one_local_repo_per_corpus(tmp_path, monkeypatch, capsys):
    config = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    assert demo.corpus_repo_paths(config) == (Path(".demo/stdlib-repo"), Path(".demo/pytorch-repo"))
    config["parse"]["repo"] = ["https://github.com/JetBrains/kotlin"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["demo: error: the demo config's parse.repo must name one local path (the target repository)"]
    assert not (tmp_path / ".demo").exists()  # refused before building anything


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
    assert summary["models"] == [".demo/base", ".demo/runs/pytorch/merged"]
    assert (results / "report.html").stat().st_size > 1000
    assert (tmp_path / ".demo/runs/pytorch/merged/model.safetensors").is_file()
    dd = load_from_disk(str(tmp_path / config["preprocess"]["output"]))
    assert set(dd) == {"train", "validation", "test"} and len(dd["train"]) == 64
    # a second run finds every stage up to date and redoes nothing
    stamp = (tmp_path / ".demo/runs/pytorch/merged/model.safetensors").stat().st_mtime_ns
    assert demo.main(["--config", str(path), "--max-files", "40"]) == 0
    assert capsys.readouterr().err.count(": up to date (") == 6  # the pipeline logs to stderr
    assert (tmp_path / ".demo/runs/pytorch/merged/model.safetensors").stat().st_mtime_ns == stamp
